"""Size-real LoRA adapters for the benchmarks, shaped from a base's own safetensors header.

The adapter's ``adapter_model.safetensors`` is a valid safetensors file: a real header (one ``lora_A`` / ``lora_B``
pair per targeted projection, bf16, PEFT's key names) and a data section of the true length made by ``truncate``,
so it reads as zeros without taking disk space. PEFT loads it like any other adapter; lora-lock reads its header.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lora_lock.inspect.checkpoint import read_checkpoint

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4}
_LAYER_WEIGHT = re.compile(r"^(?P<module>.+\.layers\.\d+\..+\.(?P<leaf>[a-z_0-9]+))\.weight$")


def write_sparse_safetensors(path: Path, tensors: Mapping[str, tuple[str, Sequence[int]]]) -> int:
    """Write a safetensors file with this tensor table and an all-zero (sparse) data section; returns its size."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(tensors):
        dtype, shape = tensors[name]
        n = _DTYPE_BYTES[dtype]
        for dim in shape:
            n *= dim
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.truncate(8 + len(raw) + offset)
    tmp.replace(path)
    return 8 + len(raw) + offset


def lora_tensors(
    base_tensors: Iterable[tuple[str, Sequence[int]]], targets: Sequence[str], r: int
) -> dict[str, tuple[str, Sequence[int]]]:
    """PEFT's saved key names and shapes for every 2-D layer weight whose leaf module is in ``targets``."""
    out: dict[str, tuple[str, Sequence[int]]] = {}
    for name, shape in base_tensors:
        match = _LAYER_WEIGHT.match(name)
        if not match or match["leaf"] not in targets or len(shape) != 2:
            continue
        out_f, in_f = shape
        prefix = f"base_model.model.{match['module']}"
        out[f"{prefix}.lora_A.weight"] = ("BF16", (r, in_f))
        out[f"{prefix}.lora_B.weight"] = ("BF16", (out_f, r))
    return out


def write_adapter(
    adapter_dir: Path,
    base_dir: Path,
    *,
    base_name: str,
    r: int = 16,
    targets: Sequence[str] = ALL_PROJECTIONS,
) -> dict[str, int]:
    """An adapter for the base in ``base_dir`` (shapes from its header); rebuilt only when the recipe changed."""
    checkpoint = read_checkpoint(base_dir)
    tensors = lora_tensors(((n, t.shape) for n, t in checkpoint.tensors.items()), targets, r)
    if not tensors:
        raise RuntimeError(f"{base_dir}: no layer weights named like {targets}; cannot shape an adapter")
    config = {
        "base_model_name_or_path": base_name,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "lora_alpha": 2 * r,
        "lora_dropout": 0.0,
        "peft_type": "LORA",
        "r": r,
        "target_modules": sorted(targets),
        "task_type": "CAUSAL_LM",
    }
    adapter_dir.mkdir(parents=True, exist_ok=True)
    config_path = adapter_dir / "adapter_config.json"
    weights = adapter_dir / "adapter_model.safetensors"
    recipe = json.dumps([config, len(tensors)], sort_keys=True)
    stamp = adapter_dir / ".recipe"
    if not (weights.is_file() and stamp.is_file() and stamp.read_text() == recipe):
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        write_sparse_safetensors(weights, tensors)
        stamp.write_text(recipe)
    return {"tensors": len(tensors), "bytes": weights.stat().st_size}
