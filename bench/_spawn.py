"""Run one command and record ITS OWN wall time, peak RSS and exit code (``python -S _spawn.py OUT -- ARGV...``).

Why a launcher: Linux carries the parent's resident set into a child's ``ru_maxrss`` (``exec`` keeps the
high-water mark of the address space it replaces, and ``subprocess`` spawns with ``vfork``, i.e. *inside* the
parent's address space). Measured straight from the benchmark process, a 10 MB ``python -c pass`` reports the
benchmark's own RSS. This launcher is a bare interpreter (``-S``, stdlib ``os``/``sys``/``time`` only, ~8 MB) that
``fork``s and ``exec``s the command, so the child's peak RSS is its own (floored at the launcher's ~8 MB, below any
Python child). The timing covers fork → exec → exit of the child only, not the launcher's start-up.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    out, sep, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    if sep != "--" or not argv:
        raise SystemExit("usage: python -S _spawn.py OUT -- ARGV...")
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: become the command
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    with open(out, "w", encoding="ascii") as fh:
        fh.write(f"{wall!r} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}\n")


if __name__ == "__main__":
    main()
