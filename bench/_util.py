"""Shared benchmark plumbing: paths, the measured subprocess runner, medians and the result table."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
PY = sys.executable
MIB = 1 << 20
GIB = 1 << 30

# The repo root goes on sys.path so `tests.fixtures.*` imports when run as `python bench/run.py`.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _compile_package() -> None:
    """Byte-compile lora_lock as ``pip install`` does: a checkout with ``PYTHONDONTWRITEBYTECODE`` set would
    otherwise compile every module from source in every measured child (over half of ``check``'s time)."""
    import compileall

    compileall.compile_dir(ROOT / "lora_lock", quiet=1)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every measured child: offline, quiet, no colour, no user site, same interpreter, and
    the package byte-compiled as an install leaves it."""
    _compile_package()
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TOKENIZERS_PARALLELISM="false",
        TRANSFORMERS_VERBOSITY="error",
        NO_COLOR="1",
        PYTHONNOUSERSITE="1",
    )
    env.pop("FORCE_COLOR", None)
    env.update(extra)
    return env


@dataclass(frozen=True)
class Run:
    """One child process: its own wall time (fork → exit), its own peak RSS, exit code and output."""

    wall_s: float
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str


def spawn(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run ``argv`` through the ``_spawn.py`` launcher (see there why) and return what it measured."""
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        result, out, err = Path(tmp, "result"), Path(tmp, "stdout"), Path(tmp, "stderr")
        with out.open("wb") as fo, err.open("wb") as fe:
            subprocess.run(
                [PY, "-S", str(BENCH / "_spawn.py"), str(result), "--", *argv],
                stdout=fo,
                stderr=fe,
                env=env if env is not None else child_env(),
                cwd=cwd,
                check=True,
            )
        wall, rss, code = result.read_text(encoding="ascii").split()
        return Run(
            wall_s=float(wall),
            maxrss_kib=int(rss),
            returncode=int(code),
            stdout=out.read_text(encoding="utf-8", errors="replace"),
            stderr=err.read_text(encoding="utf-8", errors="replace"),
        )


def spawn_many(
    argv: Sequence[str],
    runs: int,
    *,
    warmup: int = 1,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ok: Callable[[Run], bool] = lambda r: r.returncode in (0, 1),
) -> list[Run]:
    """``warmup`` discarded runs (bytecode compile, page cache), then ``runs`` measured ones; fail loudly on error."""
    out: list[Run] = []
    for i in range(warmup + runs):
        run = spawn(argv, env=env, cwd=cwd)
        if not ok(run):
            raise RuntimeError(
                f"benchmark child failed (exit {run.returncode}): {' '.join(argv)}\n{run.stderr[-3000:]}"
            )
        if i >= warmup:
            out.append(run)
    return out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], object], runs: int, *, warmup: int = 0) -> list[float]:
    """In-process wall times of ``fn`` (perf_counter), after ``warmup`` discarded calls."""
    times: list[float] = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    return times


@dataclass(frozen=True)
class Row:
    """One line of the final table."""

    bench: str
    measure: str
    value: float | str
    unit: str = ""
    note: str = ""

    def cells(self) -> list[str]:
        return [self.bench, self.measure, fmt(self.value), self.unit, self.note]


def fmt(value: float | str) -> str:
    if isinstance(value, str):
        return value
    if value == 0:
        return "0"
    mag = abs(value)
    if mag >= 100:
        return f"{value:,.0f}"
    if mag >= 10:
        return f"{value:.1f}"
    if mag >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(rows: Sequence[Row]) -> str:
    """Plain-text table with aligned columns (value right-aligned), a rule under the header."""
    head = ["benchmark", "measure", "value", "unit", "note"]
    grid = [head, *[r.cells() for r in rows]]
    widths = [max(len(line[i]) for line in grid) for i in range(len(head))]
    lines = []
    for n, line in enumerate(grid):
        cells = [c.rjust(widths[i]) if i == 2 else c.ljust(widths[i]) for i, c in enumerate(line)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass
class Section:
    """What one benchmark returns: table rows plus raw figures for results.json."""

    name: str
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, measure: str, value: float | str, unit: str = "", note: str = "") -> None:
        self.rows.append(Row(self.name, measure, value, unit, note))

    def to_json(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "raw": self.raw}


def log(message: str) -> None:
    """Progress goes to stderr so stdout carries only the table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)
