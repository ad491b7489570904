"""The compat engine at scale: 16k adapter LoRA modules and a 100k-entry ``target_modules`` list, in process.

    .venv/bin/python bench/bench_compat_scale.py [--layers 512] [--targets 100000] [--runs 5]

A synthetic Llama-shaped base (``layers`` × 7 projections, headers only, nothing on disk) and an adapter with LoRA
on every projection; ``target_modules`` lists every module by full path plus filler names that match nothing (what
a tool that enumerates modules writes). Prints the median wall time of ``compat.fit`` for the list, for the same
adapter with 7 leaf names, and their ratio: matching must stay linear in modules + entries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_lock.compat import fit
from lora_lock.inspect.adapter import read_adapter_config
from lora_lock.inspect.checkpoint import Checkpoint
from lora_lock.inspect.model_config import ModelFacts
from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.runtime import parse_stack

PROJ = {"q_proj": (64, 64), "k_proj": (16, 64), "v_proj": (16, 64), "o_proj": (64, 64)}
PROJ |= {"gate_proj": (128, 64), "up_proj": (128, 64), "down_proj": (64, 128)}
PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn"}


def _base(layers: int) -> tuple[Checkpoint, ModelFacts, dict[str, object]]:
    tensors = {}
    for i in range(layers):
        for leaf, shape in PROJ.items():
            name = f"model.layers.{i}.{PARENT.get(leaf, 'mlp')}.{leaf}.weight"
            tensors[name] = TensorInfo(name, "BF16", shape, "model.safetensors", 0, 0)
    facts = ModelFacts("LlamaForCausalLM", "llama", 64, 128, layers, 4, 1, 16, 1000, False, "bfloat16", None)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    return Checkpoint(Path("."), ("model.safetensors",), tensors, ()), facts, config


def _adapter(layers: int, r: int = 8) -> list[TensorInfo]:
    out = []
    for i in range(layers):
        for leaf, (rows, cols) in PROJ.items():
            module = f"base_model.model.model.layers.{i}.{PARENT.get(leaf, 'mlp')}.{leaf}"
            out.append(TensorInfo(f"{module}.lora_A.weight", "BF16", (r, cols), "a", 0, 0))
            out.append(TensorInfo(f"{module}.lora_B.weight", "BF16", (rows, r), "a", 0, 0))
    return out


def _config(folder: Path, targets: list[str]) -> object:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": targets}))
    return read_adapter_config(path)


def main() -> None:
    """Measure and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2300)  # 2300 × 7 ≈ 16k LoRA modules
    ap.add_argument("--targets", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    checkpoint, facts, model_config = _base(args.layers)
    tensors = _adapter(args.layers)
    stack = parse_stack("transformers==5.23.0,peft==0.21.2")
    full = [n.removesuffix(".weight") for n in checkpoint.tensors]
    filler = [f"model.unused.{i}.proj" for i in range(max(0, args.targets - len(full)))]
    with tempfile.TemporaryDirectory() as tmp:
        big = _config(Path(tmp), full + filler)
        (Path(tmp) / "leaf").mkdir()
        leaf = _config(Path(tmp) / "leaf", list(PROJ))
        rows = []
        for label, config in (("7 leaf names", leaf), (f"{len(full) + len(filler)} full paths", big)):
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                result = fit(config, tensors, facts, checkpoint, model_config=model_config, stack=stack)  # type: ignore[arg-type]
                times.append(time.perf_counter() - started)
            assert result.prediction is not None and result.prediction.outcome == "applies", result.prediction
            rows.append((label, statistics.median(times)))
    print(f"compat.fit, {len(tensors) // 2} LoRA modules ({args.layers} layers × 7)")
    for label, seconds in rows:
        print(f"  target_modules = {label:>24}: {seconds * 1000:8.1f} ms (median of {args.runs})")
    print(f"  ratio full/leaf: {rows[1][1] / rows[0][1]:.2f}")


if __name__ == "__main__":
    main()
