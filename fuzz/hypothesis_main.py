"""The hypothesis engine: structured generation for volume runs (``fuzz/run.py --engine hypothesis``).

``python -m fuzz.hypothesis_main HARNESS --examples N --seconds S [--seed K]`` runs the harness's strategy in
batches (each batch a fresh seed), records crashes without stopping (see :mod:`fuzz.record`) and prints the summary
as one JSON line. No shrinking here: minimise a kept input with ``python -m fuzz.minimize``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as fixed_seed

from fuzz.harnesses import HARNESSES
from fuzz.record import OUT, CrashLog
from fuzz.strategies import STRATEGIES

BATCH = 500


def run(harness: str, examples: int, seconds: float, seed: int, out: Path) -> CrashLog:
    spec = HARNESSES[harness]
    log = CrashLog(harness, out)
    deadline = time.monotonic() + seconds

    def done() -> bool:
        return log.executions >= examples or time.monotonic() >= deadline

    batch = 0
    while not done():

        @fixed_seed(seed + batch)
        @settings(
            max_examples=BATCH,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(STRATEGIES[harness])
        def one(data: bytes) -> None:
            if done():
                return
            log.ran()
            try:
                spec.run(data)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 — every other escape is a crash to record
                log.record(data, exc)

        one()
        batch += 1
    log.flush()
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("harness", choices=sorted(HARNESSES))
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or OUT / "hypothesis" / args.harness
    log = run(args.harness, args.examples, args.seconds, args.seed, out)
    sys.stdout.write(json.dumps(log.summary()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
