"""Benchmark 1: ``lora-lock check`` against loading the adapter with PEFT, on size-real header-only bases.

Part of ``bench/run.py``; standalone, only the Llama-3-8B base (wall time, the imports / work split, PEFT)::

    .venv/bin/python bench/bench_check.py [--runs 10] [--peft-runs 3]
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from _adapters import ALL_PROJECTIONS, write_adapter
from _bases import make_base
from _util import PY, WORK, Run, Section, child_env, log, median, spawn, spawn_many, table

BASES = WORK / "bases"
ADAPTERS = WORK / "adapters"
RANK = 16
HEAVY = ("torch", "transformers", "peft", "numpy", "safetensors", "accelerate")

#: The PEFT path: build the model on the meta device from config.json, then load the adapter with PEFT.
#: Warnings are silenced (PEFT/torch warn once per tensor that copying into a meta parameter is a no-op).
PEFT_CHILD = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import logging
from peft import PeftModel
logging.set_verbosity_error()
t1 = time.perf_counter()
config = AutoConfig.from_pretrained(sys.argv[1])
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(config)
t2 = time.perf_counter()
model = PeftModel.from_pretrained(model, sys.argv[2])
t3 = time.perf_counter()
wrapped = sum(1 for _, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A))
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "load_s": t3 - t2, "lora_modules": wrapped}))
"""

#: ``check`` in process, as ``python -m lora_lock check ADAPTER --base BASE`` runs it (text report, discarded),
#: its time split into imports and work: every top-level ``import`` statement is timed (nested ones count once,
#: in their outermost import), including the lazy imports the check path makes; work is the rest.
SPLIT_CHILD = """
import builtins, contextlib, io, json, sys, time
real, depth, spent = builtins.__import__, [0], [0.0]
def timed(*args, **kwargs):
    if depth[0]:
        return real(*args, **kwargs)
    depth[0] = 1
    start = time.perf_counter()
    try:
        return real(*args, **kwargs)
    finally:
        spent[0] += time.perf_counter() - start
        depth[0] = 0
builtins.__import__ = timed
t0 = time.perf_counter()
from lora_lock._cli import main
with contextlib.redirect_stdout(io.StringIO()):
    rc = main(["check", *sys.argv[1:]])
total = time.perf_counter() - t0
builtins.__import__ = real
print(json.dumps({"rc": rc, "import_s": spent[0], "work_s": total - spent[0], "modules": len(sys.modules)}))
"""

_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+(?P<cum>\d+) \|(?P<indent> +)(?P<name>\S+)$")


def check_argv(adapter: Path, base: Path) -> list[str]:
    return [PY, "-m", "lora_lock", "check", str(adapter), "--base", str(base), "--format", "json"]


@dataclass(frozen=True)
class ImportProfile:
    modules: int  # every module imported, interpreter start-up included
    heavy: list[str]  # top-level packages from HEAVY that were imported
    import_s: float  # sum of the top-level cumulative import times
    returncode: int


def import_profile(adapter: Path, base: Path) -> ImportProfile:
    """Run check once under ``-X importtime``: how many modules it imported, which heavy ones, import time."""
    r = spawn([PY, "-X", "importtime", *check_argv(adapter, base)[1:]])
    names: list[str] = []
    top_us = 0
    for line in r.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            names.append(m["name"])
            if len(m["indent"]) == 1:
                top_us += int(m["cum"])
    heavy = sorted({n.split(".")[0] for n in names} & set(HEAVY))
    return ImportProfile(len(names), heavy, top_us / 1e6, r.returncode)


def split_profile(adapter: Path, base: Path, runs: int, env: dict[str, str]) -> list[dict[str, float]]:
    """``runs`` in-process splits of check (after one discarded run): import and work seconds of each."""
    got = spawn_many([PY, "-c", SPLIT_CHILD, str(adapter), "--base", str(base)], runs, env=env, ok=_ok0)
    return [json.loads(r.stdout.strip().splitlines()[-1]) for r in got]


def add_split_rows(sec: Section, splits: list[dict[str, float]], phases: list[dict[str, float]], key: str) -> None:
    """Rows for check's imports and work on ``key``, each beside PEFT's matching phase, with their ratios."""
    imports = median([s["import_s"] for s in splits])
    work = median([s["work_s"] for s in splits])
    peft_import = median([p["import_s"] for p in phases])
    peft_work = median([p["build_s"] + p["load_s"] for p in phases])
    n = len(splits)
    sec.add(f"check in process, {key}: imports", imports * 1000, "ms", f"median of {n}; lazy imports included")
    sec.add(f"check in process, {key}: work", work * 1000, "ms", f"median of {n}; read, match, render")
    sec.add(f"check in process, {key}: imports + work", (imports + work) * 1000, "ms", "interpreter start-up excl.")
    sec.add("RATIO PEFT import torch/transformers/peft / check imports", peft_import / imports, "x")
    sec.add("RATIO PEFT build meta model + load / check work", peft_work / work, "x")


def apparent_size(base: Path) -> int:
    return sum(p.stat().st_size for p in base.glob("*.safetensors"))


def run(runs: int, peft_runs: int, *, sizes: tuple[str, ...]) -> Section:
    sec = Section("1 check")
    env = child_env()
    built: dict[str, tuple[Path, Path, str]] = {}
    for key in sizes:
        log(f"check: header-only base {key} and its r={RANK} adapter")
        base, name, made_by = make_base(BASES / key, key)
        info = write_adapter(ADAPTERS / key, base, base_name=name, r=RANK, targets=ALL_PROJECTIONS)
        built[key] = (base, ADAPTERS / key, made_by)
        sec.raw[f"{key} base"] = {
            "dir": str(base),
            "made_by": made_by,
            "shards": len(list(base.glob("*.safetensors"))),
            "apparent_bytes": apparent_size(base),
            "adapter_tensors": info["tensors"],
            "adapter_bytes": info["bytes"],
        }

    main_key = "Llama-3-8B"
    base, adapter, _ = built[main_key]
    shards = sec.raw[f"{main_key} base"]["shards"]
    ad_mib = sec.raw[f"{main_key} base"]["adapter_bytes"] / (1 << 20)

    # Wall time (interpreter start included) of check vs the PEFT meta-device load, same base and adapter.
    log(f"check: lora-lock check x{runs} on {main_key}")
    checks = spawn_many(check_argv(adapter, base), runs, env=env)
    report = json.loads(checks[-1].stdout)
    log(f"check: PEFT meta-device load x{peft_runs} on {main_key} (imports torch, transformers, peft)")
    pefts = spawn_many([PY, "-c", PEFT_CHILD, str(base), str(adapter)], peft_runs, env=env, ok=_ok0)
    phases = [json.loads(r.stdout.strip().splitlines()[-1]) for r in pefts]
    t_check, t_peft = median([r.wall_s for r in checks]), median([r.wall_s for r in pefts])
    codes = sorted({f["code"] for f in report["findings"]})
    sec.add(
        f"lora-lock check, {main_key} ({shards} shards)",
        t_check,
        "s",
        f"median of {runs}, interpreter incl.; status {report['status']} {','.join(codes)}",
    )
    sec.add(
        "PEFT: meta model from config + PeftModel.from_pretrained",
        t_peft,
        "s",
        f"median of {peft_runs}; {phases[-1]['lora_modules']} LoRA modules, adapter {ad_mib:.0f} MiB bf16",
    )
    sec.add(
        "  PEFT phases: import torch/transformers/peft",
        median([p["import_s"] for p in phases]),
        "s",
    )
    sec.add("  PEFT phases: build meta model", median([p["build_s"] for p in phases]), "s")
    sec.add("  PEFT phases: PeftModel.from_pretrained", median([p["load_s"] for p in phases]), "s")
    sec.add("RATIO PEFT load / lora-lock check (wall)", t_peft / t_check, "x", "higher = check is faster")
    log(f"check: imports vs work of check x{runs} on {main_key} (in process)")
    splits = split_profile(adapter, base, runs, env)
    add_split_rows(sec, splits, phases, main_key)
    sec.raw["check_split"] = splits
    rss_check = median([r.maxrss_kib for r in checks]) / 1024
    rss_peft = median([r.maxrss_kib for r in pefts]) / 1024
    sec.add(f"peak RSS lora-lock check, {main_key}", rss_check, "MiB")
    sec.add("peak RSS PEFT meta load", rss_peft, "MiB")
    sec.add("RATIO PEFT / check (peak RSS)", rss_peft / rss_check, "x")

    # Does check import torch (or anything heavy)?
    prof = import_profile(adapter, base)
    sec.add("check: modules imported (-X importtime)", prof.modules, "", "incl. interpreter start-up")
    sec.add("check: import time (-X importtime, top level)", prof.import_s * 1000, "ms", "all imports of the run")
    sec.add("check: heavy modules imported", ",".join(prof.heavy) or "none", "", f"looked for {'/'.join(HEAVY)}")
    sec.raw["import_profile"] = asdict(prof)

    # Peak RSS and wall time of check as the base grows: memory follows the tensor TABLE, not the bytes.
    rss: dict[str, float] = {}
    for key in sizes:
        b, a, _ = built[key]
        facts = sec.raw[f"{key} base"]
        log(f"check: peak RSS on {key}")
        got: list[Run] = checks if key == main_key else spawn_many(check_argv(a, b), runs, env=env)
        rss[key] = median([r.maxrss_kib for r in got]) / 1024
        sec.add(
            f"peak RSS check, {key}",
            rss[key],
            "MiB",
            f"{facts['apparent_bytes'] / 1e9:.1f} GB in {facts['shards']} shard(s); "
            f"{median([r.wall_s for r in got]):.3f} s",
        )
        sec.raw[f"{key} check"] = {"wall_s": [r.wall_s for r in got], "peak_rss_kib": [r.maxrss_kib for r in got]}
    small, large = sizes[0], sizes[-1]
    ratio_bytes = sec.raw[f"{large} base"]["apparent_bytes"] / sec.raw[f"{small} base"]["apparent_bytes"]
    sec.add(
        f"RATIO peak RSS {large} / {small}",
        rss[large] / rss[small],
        "x",
        f"for {ratio_bytes:.0f}x the base bytes",
    )

    sec.raw["check_wall_s"] = [r.wall_s for r in checks]
    sec.raw["peft_wall_s"] = [r.wall_s for r in pefts]
    sec.raw["peft_phases"] = phases
    sec.raw["check_report_status"] = report["status"]
    sec.raw["check_finding_codes"] = codes
    return sec


def _ok0(run: Run) -> bool:
    return run.returncode == 0


def main(argv: list[str] | None = None) -> int:
    """check on the Llama-3-8B base beside PEFT's meta-device load: wall times, check's imports and work."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--peft-runs", type=int, default=3)
    args = p.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    key, sec, env = "Llama-3-8B", Section("1 check"), child_env()
    base, name, _ = make_base(BASES / key, key)
    write_adapter(ADAPTERS / key, base, base_name=name, r=RANK, targets=ALL_PROJECTIONS)
    adapter = ADAPTERS / key
    log(f"check: lora-lock check x{args.runs} on {key}")
    text_argv = check_argv(adapter, base)[:-2]  # the text report, as a user runs it
    checks = spawn_many(text_argv, args.runs, env=env)
    log(f"check: imports vs work x{args.runs} (in process)")
    splits = split_profile(adapter, base, args.runs, env)
    log(f"check: PEFT meta-device load x{args.peft_runs}")
    pefts = spawn_many([PY, "-c", PEFT_CHILD, str(base), str(adapter)], args.peft_runs, env=env, ok=_ok0)
    phases = [json.loads(r.stdout.strip().splitlines()[-1]) for r in pefts]
    t_check, t_peft = median([r.wall_s for r in checks]), median([r.wall_s for r in pefts])
    sec.add(f"lora-lock check, {key} (text)", t_check * 1000, "ms", f"median of {args.runs}, interpreter incl.")
    sec.add("PEFT: meta model from config + PeftModel.from_pretrained", t_peft * 1000, "ms")
    sec.add("RATIO PEFT load / lora-lock check (wall)", t_peft / t_check, "x", "higher = check is faster")
    add_split_rows(sec, splits, phases, key)
    print(table(sec.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
