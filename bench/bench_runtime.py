"""``check`` against PEFT's meta-device load on bases whose runtime names differ from their checkpoints.

Three header-only, size-real bases side by side, in one run: Llama-3-8B (names unchanged at load), a
Qwen3-MoE (128 experts × 48 layers, fused at load by transformers 5) and a Llava-1.5-7B (prefixes moved at
load). For each: the wall time of ``lora-lock check`` (a subprocess, interpreter start-up included) and of the
cheapest PEFT attempt (a subprocess that builds the model from config.json on the meta device and runs
``PeftModel.from_pretrained``), and their ratio. Standalone::

    .venv/bin/python bench/bench_runtime.py [--runs 5] [--peft-runs 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _adapters import ALL_PROJECTIONS, write_adapter  # noqa: E402
from _bases import make_base  # noqa: E402
from _runtime_bases import make_runtime_base, write_runtime_adapter  # noqa: E402
from _util import PY, WORK, Run, Section, child_env, log, median, spawn_many, table  # noqa: E402

BASES = WORK / "runtime-bases"
ADAPTERS = WORK / "runtime-adapters"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")

#: The PEFT path for any architecture: the class config.json names, built on the meta device, then PEFT's load.
PEFT_CHILD = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import torch
import transformers
from transformers import AutoConfig
from transformers.utils import logging
from peft import PeftModel
logging.set_verbosity_error()
t1 = time.perf_counter()
config = AutoConfig.from_pretrained(sys.argv[1])
cls = getattr(transformers, config.architectures[0])
with torch.device("meta"):
    model = cls._from_config(config)
t2 = time.perf_counter()
model = PeftModel.from_pretrained(model, sys.argv[2])
t3 = time.perf_counter()
wrapped = sum(1 for _, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A))
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "load_s": t3 - t2, "lora_modules": wrapped}))
"""


def _ok0(run: Run) -> bool:
    return run.returncode == 0


def _inputs() -> dict[str, tuple[Path, Path, int]]:
    """(base, adapter, adapter tensors) per base key, built once into bench/.work/."""
    out: dict[str, tuple[Path, Path, int]] = {}
    log("runtime: Llama-3-8B header-only base and its all-projection adapter")
    base, name, _ = make_base(WORK / "bases" / "Llama-3-8B", "Llama-3-8B")
    info = write_adapter(ADAPTERS / "Llama-3-8B", base, base_name=name, r=16, targets=ALL_PROJECTIONS)
    out["Llama-3-8B"] = (base, ADAPTERS / "Llama-3-8B", info["tensors"])
    for key in ("Qwen3-MoE", "Llava-1.5-7B"):
        log(f"runtime: {key} header-only base and its attention adapter (runtime names)")
        base, name = make_runtime_base(BASES / key, key)
        info = write_runtime_adapter(ADAPTERS / key, base, base_name=name, targets=ATTENTION)
        out[key] = (base, ADAPTERS / key, info["tensors"])
    return out


def run(runs: int, peft_runs: int) -> Section:
    """Every base's check and PEFT load, measured in this one run; ratios PEFT / check."""
    sec = Section("runtime")
    env = child_env()
    for key, (base, adapter, n_tensors) in _inputs().items():
        tensors = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
        argv = [PY, "-m", "lora_lock", "check", str(adapter), "--base", str(base), "--format", "json"]
        log(f"runtime: lora-lock check x{runs} on {key}")
        checks = spawn_many(argv, runs, env=env)
        report = json.loads(checks[-1].stdout)
        log(f"runtime: PEFT meta-device load x{peft_runs} on {key}")
        pefts = spawn_many([PY, "-c", PEFT_CHILD, str(base), str(adapter)], peft_runs, env=env, ok=_ok0)
        phases = [json.loads(r.stdout.strip().splitlines()[-1]) for r in pefts]
        phase = {k: median([p[k] for p in phases]) for k in ("import_s", "build_s", "load_s")}
        t_check, t_peft = median([r.wall_s for r in checks]), median([r.wall_s for r in pefts])
        codes = sorted({f["code"] for f in report["findings"] if f["severity"] != "info"})
        sec.add(
            f"lora-lock check, {key}",
            t_check,
            "s",
            f"{len(tensors)} base tensors, {n_tensors} adapter tensors; status {report['status']} {','.join(codes)}",
        )
        sec.add(
            f"PEFT meta load, {key}",
            t_peft,
            "s",
            f"import {phase['import_s']:.2f} s, build {phase['build_s']:.2f} s, load {phase['load_s']:.2f} s; "
            f"{phases[-1]['lora_modules']} LoRA modules",
        )
        sec.add(f"RATIO PEFT / check (wall), {key}", t_peft / t_check, "x", "higher = check is faster")
        rss_check = median([r.maxrss_kib for r in checks]) / 1024
        rss_peft = median([r.maxrss_kib for r in pefts]) / 1024
        sec.add(f"RATIO PEFT / check (peak RSS), {key}", rss_peft / rss_check, "x", f"check {rss_check:.0f} MiB")
        sec.raw[key] = {
            "check_wall_s": [r.wall_s for r in checks],
            "peft_wall_s": [r.wall_s for r in pefts],
            "check_rss_kib": [r.maxrss_kib for r in checks],
            "peft_rss_kib": [r.maxrss_kib for r in pefts],
            "peft_phases": phases,
            "status": report["status"],
            "codes": codes,
        }
    return sec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--peft-runs", type=int, default=2)
    args = p.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    sec = run(args.runs, args.peft_runs)
    print(table(sec.rows))
    (WORK / "runtime-results.json").write_text(json.dumps(sec.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
