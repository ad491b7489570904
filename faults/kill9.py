"""Kill ``lora-lock generate`` with SIGKILL at random moments, N times, and check what it leaves behind.

After every kill the lock must be absent (no previous lock), the previous lock byte for byte, or a complete new
lock that reads, validates and verifies; the probe sidecar a lock names must exist with the recorded digest.
Temporary files may remain (a kill can land between ``mkstemp`` and ``os.replace``): they are counted, must never
be mistaken for the lock, and the next generate must not be confused by them.

    .venv/bin/python faults/kill9.py [--kills 100] [--probe-share 0.2] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "kill9"
PY = sys.executable


def build() -> tuple[Path, Path]:
    """A tiny real base + adapter (built once) and two 128 MiB sparse extra shards so hashing takes a while."""
    base, adapter = WORK / "base", WORK / "adapter"
    if not (adapter / "adapter_model.safetensors").exists():
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
        code = (
            "import sys; from pathlib import Path; from lora_lock.probe import tiny;"
            "w=Path(sys.argv[1]); t=tiny.train_bpe_tokenizer(w/'tok');"
            "b=tiny.build_tiny_llama(w/'base', t, seed=0);"
            "tiny.train_lora(b, w/'adapter', target_modules=['q_proj','v_proj'], seed=0, steps=3)"
        )
        subprocess.run([PY, "-c", code, str(WORK)], check=True, capture_output=True)
    return base, adapter


def run_generate(out: Path, base: Path, adapter: Path, probe: bool, variant: int) -> subprocess.Popen[bytes]:
    args = [PY, "-m", "lora_lock", "generate", "--adapter", str(adapter), "--base", str(base), "-o", str(out)]
    args.append("--probe" if probe else "--no-probe")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LORA_LOCK_KILL9_VARIANT": str(variant)}
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def check_state(out: Path, previous: bytes | None) -> str:
    from lora_lock.errors import InputError
    from lora_lock.lock.io import read
    from lora_lock.probe.sidecar import read_sidecar

    if not out.exists():
        return "absent" if previous is None else "LOST-PREVIOUS"
    data = out.read_bytes()
    try:
        lock = read(out)
    except InputError as exc:
        return f"CORRUPT: {exc.message[:100]}"
    if "probe" in lock:
        try:
            read_sidecar(out.parent / lock["probe"]["sidecar"], lock["probe"]["sidecar-digest"])
        except InputError as exc:
            return f"SIDECAR-BROKEN: {exc.message[:100]}"
    if previous is not None and data == previous:
        return "previous"
    return "new"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--probe-share", type=float, default=0.2, help="share of runs with the effect probe")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    print(f"kill9: seed {seed}, {args.kills} kills", flush=True)
    base, adapter = build()
    repo = WORK / "repo"

    durations: dict[bool, float] = {}
    for probe in (False, True):  # measure a full run of each kind once
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir()
        start = time.monotonic()
        run_generate(repo / "lora.lock", base, adapter, probe, 0).wait()
        durations[probe] = time.monotonic() - start
    print(f"kill9: full run {durations[False]:.2f} s static, {durations[True]:.2f} s with the probe", flush=True)

    outcomes: Counter[str] = Counter()
    residue = 0
    for i in range(args.kills):
        probe = rng.random() < args.probe_share
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir()
        out = repo / "lora.lock"
        previous: bytes | None = None
        if i % 2:  # a previous valid lock with other content: generated without the probe, then with a marker
            run_generate(out, base, adapter, False, 0).wait()
            previous = out.read_bytes()
        proc = run_generate(out, base, adapter, probe, i)
        time.sleep(rng.uniform(0, durations[probe]))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = check_state(out, previous)
        outcomes[state if not state.startswith(("CORRUPT", "SIDECAR", "LOST")) else state.split(":")[0]] += 1
        leftovers = sorted(p.name for p in repo.iterdir() if p.name.endswith(".tmp"))
        residue += len(leftovers)
        if state.startswith(("CORRUPT", "SIDECAR", "LOST")):
            print(f"kill9: run {i}: {state}", flush=True)
        # The next generate must not be confused by leftovers, and must produce a lock that verifies.
        if i % 10 == 9:
            done = subprocess.run(
                [
                    PY,
                    "-m",
                    "lora_lock",
                    "generate",
                    "--adapter",
                    str(adapter),
                    "--base",
                    str(base),
                    "-o",
                    str(out),
                    "--no-probe",
                ],
                capture_output=True,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
                check=False,
            )
            verify = subprocess.run(
                [PY, "-m", "lora_lock", "verify", str(out), "--skip", "effect,golden"], capture_output=True, check=False
            )
            outcomes[
                "regenerate+verify ok" if done.returncode == 0 and verify.returncode == 0 else "REGENERATE-FAILED"
            ] += 1
    summary = {"seed": seed, "kills": args.kills, "outcomes": dict(outcomes), "temp_files_left": residue}
    print(json.dumps(summary, indent=2))
    bad = sum(n for k, n in outcomes.items() if k.isupper() or k.startswith(("CORRUPT", "SIDECAR", "LOST", "REGEN")))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
