"""How long the runtime rule tables take to load, in a fresh interpreter each time (target: <= 10 ms).

Also times ``runtime_view`` on a Qwen3-MoE-shaped header table (128 experts x 48 layers, per-expert layout).
Run: ``.venv/bin/python bench/bench_tables.py``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import time
t = time.perf_counter()
from lora_lock.runtime.tables import transformers_table, peft_table
t1 = time.perf_counter()
transformers_table(); peft_table()
t2 = time.perf_counter()
print((t1 - t) * 1000, (t2 - t1) * 1000)
"""


def load_times(runs: int = 15) -> list[float]:
    out = []
    for _ in range(runs):
        res = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, cwd=ROOT)
        out.append(float(res.stdout.split()[1]))
    return out


def moe_view_time() -> tuple[float, int, int]:
    sys.path.insert(0, str(ROOT))
    from lora_lock.inspect.safetensors_header import TensorInfo
    from lora_lock.runtime import Stack, runtime_view

    tensors = {}
    for layer in range(48):
        for e in range(128):
            for proj, shape in (("gate_proj", (768, 2048)), ("up_proj", (768, 2048)), ("down_proj", (2048, 768))):
                name = f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight"
                tensors[name] = TensorInfo(name, "BF16", shape, "model.safetensors", 0, 0)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            name = f"model.layers.{layer}.self_attn.{proj}.weight"
            tensors[name] = TensorInfo(name, "BF16", (2048, 2048), "model.safetensors", 0, 0)
    config = {"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"]}
    start = time.perf_counter()
    view = runtime_view(config, tensors, Stack("5.23.0", "0.21.2", "explicit"))
    return (time.perf_counter() - start) * 1000, len(tensors), len(view.tensors)


def main() -> None:
    times = load_times()
    print(
        f"table load (fresh process, parse only): median {statistics.median(times):.1f} ms, "
        f"min {min(times):.1f} ms, max {max(times):.1f} ms over {len(times)} runs"
    )
    ms, n_in, n_out = moe_view_time()
    print(f"runtime_view Qwen3-MoE-shaped ({n_in} checkpoint tensors -> {n_out} runtime): {ms:.0f} ms")


if __name__ == "__main__":
    main()
