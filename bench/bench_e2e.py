"""Benchmark 3: ``generate`` and ``verify`` end to end on a tiny real Llama + LoRA, split into their parts."""

from __future__ import annotations

import json
from pathlib import Path

from _util import PY, WORK, Run, Section, child_env, log, median, spawn, spawn_many

TINY = WORK / "tiny"
STAMP = TINY / ".built-v1"
JSON = ("--format", "json")

#: Built once, in a child (torch stays out of the benchmark process): tokenizer, base, trained adapter.
BUILD = """
import sys
from pathlib import Path
from lora_lock.testing import tiny
root = Path(sys.argv[1])
tok = tiny.train_bpe_tokenizer(root / "tokenizer", vocab_size=1000)
base = tiny.build_tiny_llama(root / "base", tok, seed=0, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128)
targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
tiny.train_lora(base, root / "adapter", target_modules=targets, r=8, alpha=16, seed=0, steps=5)
"""

#: The CLI, instrumented: ``lora_lock.hashing.hash_files`` is wrapped BEFORE any other lora_lock module imports it
#: (so every ``from lora_lock.hashing import hash_files`` gets the wrapper), then the CLI runs as usual. Reports the
#: time to import the CLI, the time spent inside hash_files and the time in ``main()``, then exits like the CLI.
INSTRUMENTED = """
import sys, time
t0 = time.perf_counter()
import lora_lock.hashing as hashing
spent = [0.0]
_hash_files = hashing.hash_files
def hash_files(*args, **kwargs):
    start = time.perf_counter()
    try:
        return _hash_files(*args, **kwargs)
    finally:
        spent[0] += time.perf_counter() - start
hashing.hash_files = hash_files
from lora_lock import _cli
t1 = time.perf_counter()
code = _cli.main(sys.argv[1:])
t2 = time.perf_counter()
sys.stderr.write(f"\\nBENCH-PHASES {t1 - t0!r} {spent[0]!r} {t2 - t1!r}\\n")
raise SystemExit(code)
"""


def build_tiny() -> tuple[Path, Path]:
    base, adapter = TINY / "base", TINY / "adapter"
    if not STAMP.is_file():
        log("e2e: building the tiny Llama base and training its LoRA (once)")
        TINY.mkdir(parents=True, exist_ok=True)
        r = spawn([PY, "-c", BUILD, str(TINY)])
        if r.returncode != 0:
            raise RuntimeError(f"building tiny models failed:\n{r.stderr[-3000:]}")
        STAMP.write_text("tokenizer, base, adapter built by bench/bench_e2e.py\n")
    return base, adapter


def _phases(run: Run) -> tuple[float, float, float]:
    line = next(ln for ln in reversed(run.stderr.splitlines()) if ln.startswith("BENCH-PHASES "))
    imp, hashing, main = (float(x) for x in line.split()[1:])
    return imp, hashing, main  # seconds: importing the CLI, inside hash_files, inside main()


def run(runs: int, probe_runs: int) -> Section:
    sec = Section("3 e2e tiny")
    base, adapter = build_tiny()
    env = child_env()
    paths = [p for p in [*base.iterdir(), *adapter.iterdir()] if p.is_file()]
    what = f"tiny Llama + r=8 LoRA: {len(paths)} files, {sum(p.stat().st_size for p in paths) / 1024:.0f} KiB"
    cli = [PY, "-m", "lora_lock"]
    gen = ["generate", "--adapter", str(adapter), "--base", str(base)]
    static_lock, probe_lock = TINY / "static.lock", TINY / "probe.lock"
    commands: dict[str, tuple[list[str], int]] = {
        "python -c pass": ([PY, "-c", "pass"], runs),
        "python -c 'import lora_lock'": ([PY, "-c", "import lora_lock"], runs),
        "lora-lock --version": ([*cli, "--version"], runs),
        "generate --no-probe": ([*cli, *gen, "-o", str(static_lock), "--no-probe"], runs),
        "generate (probe)": ([*cli, *gen, "-o", str(probe_lock), "--probe"], probe_runs),
        "verify --skip effect,golden": ([*cli, "verify", str(probe_lock), "--skip", "effect,golden", *JSON], runs),
        "verify (probe)": ([*cli, "verify", str(probe_lock), *JSON], probe_runs),
    }
    done: dict[str, list[Run]] = {}
    for label, (argv, n) in commands.items():
        log(f"e2e: {label} x{n}")
        done[label] = spawn_many(argv, n, env=env, ok=_ok0)
    wall = {k: median([r.wall_s for r in v]) for k, v in done.items()}
    rss = {k: median([r.maxrss_kib for r in v]) / 1024 for k, v in done.items()}
    status = {k: json.loads(done[k][-1].stdout)["status"] for k in ("verify --skip effect,golden", "verify (probe)")}

    phases: dict[str, tuple[float, float, float, float]] = {}
    for label in ("generate --no-probe", "verify --skip effect,golden"):
        log(f"e2e: {label} x{runs}, instrumented (import / hash_files / main)")
        argv = [PY, "-c", INSTRUMENTED, *commands[label][0][3:]]
        got = spawn_many(argv, runs, warmup=0, env=env, ok=_ok0)
        parts = [_phases(r) for r in got]
        imp, hashing, main = (median([p[i] for p in parts]) for i in range(3))
        phases[label] = (median([r.wall_s for r in got]), imp, hashing, main)

    floor = wall["python -c pass"]
    sec.add("python -c pass (interpreter floor)", floor * 1000, "ms", f"median of {runs}")
    sec.add("python -c 'import lora_lock'", wall["python -c 'import lora_lock'"] * 1000, "ms")
    sec.add("python -m lora_lock --version", wall["lora-lock --version"] * 1000, "ms", "interpreter + CLI import")
    for cmd, static, probe in (
        ("generate", "generate --no-probe", "generate (probe)"),
        ("verify", "verify --skip effect,golden", "verify (probe)"),
    ):
        wall_i, imp, hashing, main = phases[static]
        note = what if cmd == "generate" else f"report status {status[static]}"
        sec.add(f"{cmd} static ({static.split(' ', 1)[1]}) total", wall[static] * 1000, "ms", note)
        sec.add(f"  {cmd} static: import CLI + command modules", imp * 1000, "ms", "instrumented run")
        sec.add(f"  {cmd} static: main()", main * 1000, "ms", "lazy imports, inspect, tokenizer, env, lock I/O")
        sec.add(f"  {cmd} static: of which hash_files", hashing * 1000, "ms")
        sec.add(
            f"RATIO {cmd} static: interpreter+import share",
            (floor + imp) / wall_i,
            "",
            "(python -c pass + CLI import) / wall",
        )
        sec.add(f"RATIO {cmd} static: hashing share", hashing / wall_i, "", "hash_files / wall")
        note = f"median of {len(done[probe])}" + (f"; report status {status[probe]}" if cmd == "verify" else "")
        sec.add(f"{cmd} with the effect probe, total", wall[probe] * 1000, "ms", note)
        sec.add(
            f"RATIO {cmd}: probe share",
            (wall[probe] - wall[static]) / wall[probe],
            "",
            "(with probe - static) / with probe",
        )
        sec.add(f"peak RSS {cmd} static / with probe", f"{rss[static]:.1f} / {rss[probe]:.0f}", "MiB")
        sec.raw[cmd] = {"instrumented_wall_s": wall_i, "cli_import_s": imp, "hashing_s": hashing, "main_s": main}
    _probe_phases(sec, base, adapter, env, probe_runs)
    for label, got in done.items():
        sec.raw[label] = {"wall_s": [r.wall_s for r in got], "peak_rss_kib": [r.maxrss_kib for r in got]}
    sec.raw["files"] = sorted(p.name for p in paths)
    return sec


PROBE_PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, transformers, peft
t1 = time.perf_counter()
from pathlib import Path
from lora_lock.probe.api import lock_probe, verify_probe
from lora_lock.probe.effect import ProbeSession
from lora_lock.probe.prompts import DEFAULT_PROMPTS
base, adapter = Path(sys.argv[1]), Path(sys.argv[2])
session = ProbeSession(base, base, [("adapter", adapter)], device="cpu")
t2 = time.perf_counter()
with torch.inference_mode():
    session.model(input_ids=torch.tensor([session.encode(DEFAULT_PROMPTS[0])]))
t3 = time.perf_counter()
locked = lock_probe(session, [("adapter", adapter)], DEFAULT_PROMPTS)
t4 = time.perf_counter()
verify_probe(session, locked.record("lora.lock.probe.json"), locked.sidecar, [("adapter", adapter)])
t5 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "load": t2 - t1, "first": t3 - t2, "probe": t4 - t3, "verify": t5 - t4}))
"""


def _probe_phases(sec: Section, base: Path, adapter: Path, env: dict[str, str], runs: int) -> None:
    """The probe's own cost against what any use of the model pays anyway (imports, one load, a first forward)."""
    log(f"e2e: probe phases x{runs}")
    got = spawn_many([PY, "-c", PROBE_PHASES, str(base), str(adapter)], runs, warmup=0, env=env, ok=_ok0)
    parts = [json.loads(r.stdout.strip().splitlines()[-1]) for r in got]
    imports, load, first, probe, check = (
        median([p[k] for p in parts]) for k in ("imports", "load", "first", "probe", "verify")
    )
    sec.add("probe phases: import torch + transformers + peft", imports * 1000, "ms", f"median of {runs}")
    sec.add("probe phases: load base + adapter (one load)", load * 1000, "ms")
    sec.add("probe phases: first forward", first * 1000, "ms")
    sec.add("probe phases: lock, 16 batched decoding steps + 8 prompts x 2 passes", probe * 1000, "ms")
    sec.add("probe phases: verify, 8 prompts x 2 teacher-forced passes", check * 1000, "ms")
    sec.add(
        "RATIO lock probe / (load + first forward)",
        probe / (load + first),
        "",
        "on tiny models a forward is mostly Python overhead",
    )
    sec.add("RATIO verify probe / (load + first forward)", check / (load + first), "", "target <= 0.25")
    sec.add(
        "RATIO probe / (imports + load + first forward)",
        probe / (imports + load + first),
        "",
        "what a serving start-up pays anyway",
    )
    sec.raw["probe_phases"] = parts


def _ok0(run: Run) -> bool:
    return run.returncode == 0
