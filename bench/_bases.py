"""Header-only "size-real" Llama-style bases: real configs and safetensors headers, sparse data of the true length.

``tests/fixtures/header_bases.py`` is the project's builder for these; the benchmark uses it when it offers
``write_header_only_base`` and the spec it needs, and otherwise this minimal local equivalent (Llama layout only).
"""

from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _adapters import write_sparse_safetensors
from _util import log

BF16 = 2
#: Marks a finished base directory; bump the suffix when the recipe changes.
STAMP = ".built-v1"


@dataclass(frozen=True)
class LlamaSpec:
    name: str  # Hub repo id it imitates
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    shards: int

    def config(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": False,
            "bos_token_id": 128000,
            "eos_token_id": 128001,
            "head_dim": self.hidden // self.heads,
            "hidden_act": "silu",
            "hidden_size": self.hidden,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate,
            "max_position_embeddings": 8192,
            "model_type": "llama",
            "num_attention_heads": self.heads,
            "num_hidden_layers": self.layers,
            "num_key_value_heads": self.kv_heads,
            "rms_norm_eps": 1e-05,
            "rope_theta": 500000.0,
            "tie_word_embeddings": self.tied,
            "torch_dtype": "bfloat16",
            "vocab_size": self.vocab,
        }

    def tensors(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        h, i, kv = self.hidden, self.intermediate, self.kv_heads * (self.hidden // self.heads)
        out: dict[str, tuple[str, tuple[int, ...]]] = {"model.embed_tokens.weight": ("BF16", (self.vocab, h))}
        for n in range(self.layers):
            p = f"model.layers.{n}."
            out[p + "input_layernorm.weight"] = ("BF16", (h,))
            out[p + "post_attention_layernorm.weight"] = ("BF16", (h,))
            out[p + "self_attn.q_proj.weight"] = ("BF16", (h, h))
            out[p + "self_attn.k_proj.weight"] = ("BF16", (kv, h))
            out[p + "self_attn.v_proj.weight"] = ("BF16", (kv, h))
            out[p + "self_attn.o_proj.weight"] = ("BF16", (h, h))
            out[p + "mlp.gate_proj.weight"] = ("BF16", (i, h))
            out[p + "mlp.up_proj.weight"] = ("BF16", (i, h))
            out[p + "mlp.down_proj.weight"] = ("BF16", (h, i))
        out["model.norm.weight"] = ("BF16", (h,))
        if not self.tied:
            out["lm_head.weight"] = ("BF16", (self.vocab, h))
        return out


SPECS = {
    "Llama-3.2-1B": LlamaSpec("meta-llama/Llama-3.2-1B", 2048, 8192, 16, 32, 8, 128256, True, 1),
    "Llama-3-8B": LlamaSpec("meta-llama/Meta-Llama-3-8B", 4096, 14336, 32, 32, 8, 128256, False, 4),
    "Llama-3-70B": LlamaSpec("meta-llama/Meta-Llama-3-70B", 8192, 28672, 80, 64, 8, 128256, False, 30),
}


def _nbytes(shape: tuple[int, ...]) -> int:
    n = BF16
    for d in shape:
        n *= d
    return n


def write_local_base(root: Path, spec: LlamaSpec) -> Path:
    """config.json plus ``spec.shards`` sparse safetensors shards (with an index when sharded), like the Hub's."""
    root.mkdir(parents=True, exist_ok=True)
    tensors = spec.tensors()
    total = sum(_nbytes(s) for _, s in tensors.values())
    per_shard = total / spec.shards
    groups: list[dict[str, tuple[str, tuple[int, ...]]]] = [{}]
    filled = 0
    for name, (dtype, shape) in tensors.items():  # in model order, like save_pretrained
        if groups[-1] and filled + _nbytes(shape) > per_shard and len(groups) < spec.shards:
            groups.append({})
            filled = 0
        groups[-1][name] = (dtype, shape)
        filled += _nbytes(shape)
    (root / "config.json").write_text(json.dumps(spec.config(), indent=2, sort_keys=True) + "\n")
    if len(groups) == 1:
        write_sparse_safetensors(root / "model.safetensors", groups[0])
        return root
    weight_map: dict[str, str] = {}
    for k, group in enumerate(groups, 1):
        fname = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        write_sparse_safetensors(root / fname, group)
        weight_map.update(dict.fromkeys(group, fname))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return root


def make_base(root: Path, key: str) -> tuple[Path, str, str]:
    """A header-only base for ``key`` under ``root``, built once: (directory, Hub name it imitates, builder)."""
    spec = SPECS[key]
    stamp = root / STAMP
    if stamp.is_file():
        made = json.loads(stamp.read_text())
        return Path(made["dir"]), spec.name, made["made_by"]
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    made_by, where = "tests.fixtures.header_bases", _with_fixture(root / "base", key, spec)
    if where is None:
        made_by, where = "bench/_bases.py", write_local_base(root / "base", spec)
    stamp.write_text(json.dumps({"dir": str(where), "made_by": made_by}))
    return where, spec.name, made_by


def _with_fixture(root: Path, key: str, spec: LlamaSpec) -> Path | None:
    """Build with the project's fixture module when it is there and takes this call; None otherwise."""
    try:
        header_bases = importlib.import_module("tests.fixtures.header_bases")
    except ImportError:
        return None
    write = getattr(header_bases, "write_header_only_base", None)
    if write is None:
        return None
    try:
        made = write(root, key, shards=spec.shards)
    except Exception as exc:  # an API other than the one assumed: the local builder still gives a base
        log(f"tests.fixtures.header_bases did not build {key} ({type(exc).__name__}: {exc}); using bench/_bases.py")
        shutil.rmtree(root, ignore_errors=True)
        return None
    for where in (made, root):
        if isinstance(where, Path) and (where / "config.json").is_file():
            return where
    shutil.rmtree(root, ignore_errors=True)
    return None
