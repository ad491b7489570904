"""lora-lock benchmarks: ``make bench`` (= ``.venv/bin/python bench/run.py``). See bench/README.md.

Every figure and ratio is measured in this run, side by side, on this machine. Progress goes to stderr; stdout
gets one plain-text table. Raw numbers go to ``bench/.work/results.json``. Inputs are built once into
``bench/.work/`` (gitignored) and reused.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import WORK, Row, Section, cores, log, table

BENCHES = ("check", "hashing", "e2e", "hub")


def machine() -> dict[str, Any]:
    cpu = ""
    mem_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in ("lora-lock", "torch", "transformers", "peft", "huggingface_hub", "safetensors", "tokenizers"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": cores(),
        "cpu": cpu or platform.processor(),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="lora-lock benchmarks (see bench/README.md)")
    p.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    p.add_argument("--runs", type=int, default=5, help="measured runs per fast command (median reported)")
    p.add_argument(
        "--peft-runs",
        type=int,
        default=3,
        help="measured runs of the slow torch paths: PEFT load, probe (seconds each)",
    )
    p.add_argument("--hash-runs", type=int, default=3, help="measured runs per hashing method")
    p.add_argument("--quick", action="store_true", help="one measured run of everything (smoke test)")
    p.add_argument(
        "--no-70b", action="store_true", help="skip the 70B-shaped base (141 GB apparent size, sparse: no disk used)"
    )
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(BENCHES)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.quick:
        args.runs = args.peft_runs = args.hash_runs = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    wanted = args.only.split(",")
    started = time.perf_counter()
    sections: list[Section] = []
    if "check" in wanted:
        import bench_check

        sizes = ("Llama-3.2-1B", "Llama-3-8B") if args.no_70b else ("Llama-3.2-1B", "Llama-3-8B", "Llama-3-70B")
        sections.append(bench_check.run(args.runs, args.peft_runs, sizes=sizes))
    if "hashing" in wanted:
        import bench_hashing

        sections.append(bench_hashing.run(args.hash_runs))
    if "e2e" in wanted:
        import bench_e2e

        sections.append(bench_e2e.run(args.runs, args.peft_runs))
    if "hub" in wanted:
        import bench_hub

        sections.append(bench_hub.run(args.hash_runs))
    elapsed = time.perf_counter() - started

    info = machine()
    rows: list[Row] = [r for s in sections for r in s.rows]
    print(
        f"lora-lock benchmarks — {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB RAM, "
        f"Python {info['python']}, torch {info['versions']['torch']}, transformers {info['versions']['transformers']}"
        f", peft {info['versions']['peft']}; all figures measured in this run ({elapsed:.0f} s)"
    )
    print(table(rows))
    results = {
        "machine": info,
        "elapsed_s": elapsed,
        "settings": {k: v for k, v in vars(args).items() if k != "only"} | {"only": wanted},
        "sections": {s.name: s.to_json() for s in sections},
    }
    out = WORK / "results.json"
    tmp = out.with_suffix(".json.part")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    log(f"wrote {out.relative_to(WORK.parent.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
