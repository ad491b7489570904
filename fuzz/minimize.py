"""Shrink a crashing input while it keeps crashing with the same signature (greedy delta debugging).

    python -m fuzz.minimize HARNESS fuzz/out/atheris/HARNESS/<sig-id>.bin [-o OUT] [--max-seconds 60]

Prints the signature and the minimal input (``repr`` of the bytes, ready to paste into a regression test).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fuzz.harnesses import HARNESSES, signature


def crash_signature(harness: str, data: bytes) -> str | None:
    try:
        HARNESSES[harness].run(data)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 — the crash under study
        return signature(exc)
    return None


def minimize(harness: str, data: bytes, max_seconds: float = 60.0) -> tuple[bytes, str]:
    target = crash_signature(harness, data)
    if target is None:
        raise SystemExit(f"the input does not crash the {harness} harness")
    deadline = time.monotonic() + max_seconds
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        shrunk = False
        start = 0
        while start < len(data) and time.monotonic() < deadline:
            candidate = data[:start] + data[start + chunk :]
            if candidate != data and crash_signature(harness, candidate) == target:
                data, shrunk = candidate, True
            else:
                start += chunk
        if not shrunk:
            chunk //= 2
    return data, target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("harness", choices=sorted(HARNESSES))
    parser.add_argument("input", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=None)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    data, target = minimize(args.harness, args.input.read_bytes(), args.max_seconds)
    out = args.out or args.input.with_suffix(".min")
    out.write_bytes(data)
    sys.stdout.write(f"{target}\n{len(data)} bytes -> {out}\n{data!r}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
