"""The atheris (libFuzzer) engine: coverage-guided byte mutation, for volume.

    python -m fuzz.atheris_main HARNESS [libFuzzer flags] [OUTPUT_CORPUS_DIR] [SEED_DIRS...]
    python -m fuzz.atheris_main HARNESS --raise CRASH_FILE        # replay one input; crash loudly

By default a contract violation is recorded (:mod:`fuzz.record`, ``fuzz/out/atheris/<harness>/``) and fuzzing
goes on, so one run counts every distinct crash and its executions. ``LORA_LOCK_FUZZ_RUNS`` and
``LORA_LOCK_FUZZ_SECONDS`` end the run after that many executions / seconds with an exact ``summary.json``.
``--raise`` restores libFuzzer's behaviour (stop at the first crash and write ``crash-<sha1>``). Pass
``-timeout=0``: the harness enforces its own per-call time budget with SIGALRM (which libFuzzer's own timeout would
also use); ``fuzz/run.py`` does.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped,unused-ignore]

with atheris.instrument_imports():
    # The lock reader's TOML parser is pure Python: instrument it too (lora_lock.lock.io imports it).
    importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")

    from fuzz.harnesses import HARNESSES

from fuzz.record import OUT, CrashLog


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in HARNESSES:
        sys.stderr.write(f"usage: python -m fuzz.atheris_main {{{','.join(HARNESSES)}}} [libFuzzer args]\n")
        sys.exit(2)
    harness = sys.argv[1]
    strict = "--raise" in sys.argv
    argv = [sys.argv[0], *(a for a in sys.argv[2:] if a != "--raise")]
    run = HARNESSES[harness].run
    log = CrashLog(harness, Path(os.environ.get("LORA_LOCK_FUZZ_OUT", OUT / "atheris" / harness)))

    max_runs = int(os.environ.get("LORA_LOCK_FUZZ_RUNS", "0"))
    max_seconds = float(os.environ.get("LORA_LOCK_FUZZ_SECONDS", "0"))

    def test_one_input(data: bytes) -> None:
        # libFuzzer ends the process with exit(), which skips Python's clean-up; so the run stops itself at its
        # budget, with the summary flushed and exact.
        if (max_runs and log.executions >= max_runs) or (max_seconds and log.elapsed() >= max_seconds):
            log.flush()
            sys.stdout.flush()
            os._exit(0)
        log.ran()
        if strict:
            run(data)
            return
        try:
            run(data)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 — every other escape is a crash to record
            log.record(data, exc)

    atheris.Setup(argv, test_one_input)
    try:
        atheris.Fuzz()
    finally:
        log.flush()


if __name__ == "__main__":
    main()
