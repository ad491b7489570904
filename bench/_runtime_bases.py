"""Header-only, size-real bases whose runtime names differ from their checkpoint names (transformers 5).

* ``Qwen3-MoE`` — shaped like Qwen/Qwen3-30B-A3B (config.json of that repo): 48 layers × 128 experts, 18 867
  tensors, 61 GB in 16 shards. transformers 5 fuses each layer's per-expert ``gate_proj``/``up_proj``/
  ``down_proj`` into ``mlp.experts.gate_up_proj`` / ``mlp.experts.down_proj`` parameters at load.
* ``Llava-1.5-7B`` — shaped like llava-hf/llava-1.5-7b-hf in its original layout (``language_model.model.*``,
  ``vision_tower.vision_model.*``, ``multi_modal_projector.*``): a CLIP ViT-L/14-336 tower and a Llama-2-7B text
  model, 14 GB in 3 shards. transformers 5 moves the prefixes to ``model.language_model.*`` etc. at load.

Data sections are sparse holes (``truncate``), as in ``bench/_bases.py``; adapters are shaped from the runtime
model (:func:`lora_lock.runtime.runtime_view`), i.e. as PEFT on transformers 5 saves them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _adapters import write_sparse_safetensors
from _util import ROOT  # noqa: F401  (puts the repository root on sys.path for tests.fixtures)

from tests.fixtures.runtime_bases import Table, llava_config, llava_tensors, qwen3_moe_config, qwen3_moe_tensors

BF16 = "BF16"
STAMP = ".built-runtime-v1"


SPECS: dict[str, tuple[str, Any, Any, int]] = {
    "Qwen3-MoE": ("Qwen/Qwen3-30B-A3B", qwen3_moe_config, qwen3_moe_tensors, 16),
    "Llava-1.5-7B": ("llava-hf/llava-1.5-7b-hf", llava_config, llava_tensors, 3),
}


def _nbytes(shape: Sequence[int]) -> int:
    n = 2
    for d in shape:
        n *= d
    return n


def write_base(root: Path, config: Mapping[str, Any], tensors: Table, shards: int) -> Path:
    """config.json plus ``shards`` sparse safetensors shards in model order, with an index when sharded."""
    root.mkdir(parents=True, exist_ok=True)
    total = sum(_nbytes(s) for _, s in tensors.values())
    per_shard = total / shards
    groups: list[Table] = [{}]
    filled = 0
    for name, (dtype, shape) in tensors.items():
        if groups[-1] and filled + _nbytes(shape) > per_shard and len(groups) < shards:
            groups.append({})
            filled = 0
        groups[-1][name] = (dtype, shape)
        filled += _nbytes(shape)
    (root / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    weight_map: dict[str, str] = {}
    for k, group in enumerate(groups, 1):
        fname = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        write_sparse_safetensors(root / fname, group)
        weight_map.update(dict.fromkeys(group, fname))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return root


def make_runtime_base(root: Path, key: str) -> tuple[Path, str]:
    """The header-only base ``key`` under ``root``, built once: (directory, Hub name it imitates)."""
    name, config_of, tensors_of, shards = SPECS[key]
    base = root / "base"
    if (root / STAMP).is_file():
        return base, name
    if root.exists():
        shutil.rmtree(root)
    config = config_of()
    write_base(base, config, tensors_of(config), shards)
    (root / STAMP).write_text("ok\n")
    return base, name


def write_runtime_adapter(
    adapter_dir: Path, base_dir: Path, *, base_name: str, targets: Sequence[str], r: int = 16
) -> dict[str, int]:
    """A LoRA adapter as PEFT on transformers 5 saves it: keys under the *runtime* module names of the base."""
    from lora_lock.inspect.checkpoint import read_checkpoint
    from lora_lock.runtime import installed_stack, runtime_view

    config = json.loads((base_dir / "config.json").read_text())
    view = runtime_view(config, read_checkpoint(base_dir).tensors, installed_stack())
    tensors: dict[str, tuple[str, Sequence[int]]] = {}
    for name, info in view.tensors.items():
        module, _, leaf = name.rpartition(".")
        if leaf != "weight" or module.rpartition(".")[2] not in targets or len(info.shape) != 2:
            continue
        out_f, in_f = info.shape
        tensors[f"base_model.model.{module}.lora_A.weight"] = (BF16, (r, in_f))
        tensors[f"base_model.model.{module}.lora_B.weight"] = (BF16, (out_f, r))
    adapter = {
        "base_model_name_or_path": base_name,
        "bias": "none",
        "inference_mode": True,
        "lora_alpha": 2 * r,
        "lora_dropout": 0.0,
        "peft_type": "LORA",
        "r": r,
        "target_modules": sorted(targets),
        "task_type": "CAUSAL_LM",
    }
    adapter_dir.mkdir(parents=True, exist_ok=True)
    (adapter_dir / "adapter_config.json").write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")
    size = write_sparse_safetensors(adapter_dir / "adapter_model.safetensors", tensors)
    return {"tensors": len(tensors), "bytes": size}
