"""Run the fuzz harnesses for a bounded number of executions or seconds and print what happened.

    python -m fuzz.run --engine atheris --runs 250000 --seconds 300 --jobs 2
    python -m fuzz.run --engine hypothesis --runs 5000 --seconds 120 --harness adapter_config golden

Each harness runs in its own subprocess (``fuzz.atheris_main`` or ``fuzz.hypothesis_main``) that stops itself at
its budget and leaves ``fuzz/out/<engine>/<harness>/summary.json`` plus one ``<sig-id>.bin`` / ``.txt`` per distinct
crash (the smallest input seen). A run stops at whichever budget it reaches first. The table printed at the end
gives executions, seconds, executions/s, crashing executions and distinct crash signatures per harness; the same
data goes to ``fuzz/out/<engine>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HARNESSES = (
    "safetensors_parse",
    "safetensors_file",
    "model_config",
    "adapter_config",
    "checkpoint_index",
    "lock",
    "golden",
    "tokenizer",
)
DICTIONARY = {"lock": "toml.dict"}


@dataclass
class Result:
    engine: str
    harness: str
    returncode: int
    summary: dict[str, Any] = field(default_factory=dict)
    tail: str = ""

    @property
    def status(self) -> str:
        if self.returncode == 0:
            return "ok"
        return f"exit {self.returncode}"


def _command(engine: str, harness: str, runs: int, seconds: float, out: Path, max_len: int) -> list[str]:
    if engine == "hypothesis":
        return [
            sys.executable,
            "-m",
            "fuzz.hypothesis_main",
            harness,
            "--examples",
            str(runs),
            "--seconds",
            str(seconds),
            "--out",
            str(out),
        ]
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable,
        "-m",
        "fuzz.atheris_main",
        harness,
        "-timeout=0",  # the harness has its own per-call budget (SIGALRM)
        "-rss_limit_mb=2048",  # an allocation sized by a claimed length shows up as an OOM abort
        f"-max_len={max_len}",
        f"-dict={HERE / 'dict' / DICTIONARY.get(harness, 'json.dict')}",
        f"-runs={runs + 1000}",  # backstop; the harness stops itself at `runs`
        f"-max_total_time={int(seconds) + 30}",
        f"-artifact_prefix={out}/",
        "-print_final_stats=1",
        str(corpus),
        str(HERE / "corpus" / harness),
    ]


def run_one(
    engine: str, harness: str, runs: int, seconds: float, out_root: Path, max_len: int, budget: float
) -> Result:
    out = out_root / engine / harness
    env = dict(os.environ)
    env.update(
        {
            "LORA_LOCK_FUZZ_BUDGET": str(budget),
            "LORA_LOCK_FUZZ_RUNS": str(runs),
            "LORA_LOCK_FUZZ_SECONDS": str(seconds),
            "LORA_LOCK_FUZZ_OUT": str(out),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        }
    )
    cmd = _command(engine, harness, runs, seconds, out, max_len)
    log_path = out / "engine.log"
    out.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            proc.kill()  # only the child this function started
            code = proc.wait()
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else {}
    tail = log_path.read_bytes()[-2000:].decode("utf-8", errors="replace")
    return Result(engine, harness, code, summary, tail)


def table(results: list[Result]) -> str:
    rows = [("engine", "harness", "executions", "seconds", "exec/s", "crashing", "distinct", "status")]
    for r in results:
        s = r.summary
        rows.append(
            (
                r.engine,
                r.harness,
                f"{s.get('executions', 0):,}",
                f"{s.get('seconds', 0):.1f}",
                f"{s.get('executions_per_second', 0):,}",
                f"{s.get('crashes', 0):,}",
                str(len(s.get("signatures", {}))),
                r.status,
            )
        )
    total = sum(r.summary.get("executions", 0) for r in results)
    rows.append(("", "total", f"{total:,}", "", "", f"{sum(r.summary.get('crashes', 0) for r in results):,}", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=("atheris", "hypothesis"), default="atheris")
    parser.add_argument("--harness", nargs="+", choices=HARNESSES, default=list(HARNESSES))
    parser.add_argument("--runs", type=int, default=100_000, help="executions per harness")
    parser.add_argument("--seconds", type=float, default=120.0, help="wall-clock seconds per harness")
    parser.add_argument("--jobs", type=int, default=2, help="harnesses run in parallel")
    parser.add_argument("--max-len", type=int, default=8192, help="libFuzzer -max_len (atheris)")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds one call may take before it is a hang")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--fresh", action="store_true", help="delete earlier results and grown corpora first")
    args = parser.parse_args(argv)
    if args.engine == "atheris":
        try:
            import atheris  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
        except ImportError:
            sys.stderr.write("atheris is not installed: pip install atheris (or use --engine hypothesis)\n")
            return 2
    if args.fresh:
        shutil.rmtree(args.out / args.engine, ignore_errors=True)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(run_one, args.engine, h, args.runs, args.seconds, args.out, args.max_len, args.budget)
            for h in args.harness
        ]
        results = [f.result() for f in futures]
    report = table(results)
    lines = [report, "", f"wall clock: {time.monotonic() - started:.0f} s"]
    for r in results:
        for ident, sig in r.summary.get("signatures", {}).items():
            where = f"{ident}.bin, {sig['smallest']} bytes"
            lines.append(f"{r.harness}: {sig['count']:>7,} x {sig['signature']}  [{where}]")
        if r.returncode != 0:
            lines.append(f"{r.harness}: engine exited {r.returncode}; log tail:\n{r.tail}")
    sys.stdout.write("\n".join(lines) + "\n")
    (args.out / args.engine).mkdir(parents=True, exist_ok=True)
    (args.out / args.engine / "results.json").write_text(
        json.dumps([{"engine": r.engine, "returncode": r.returncode, **r.summary} for r in results], indent=1),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
