"""Run the differential oracle and print its agreement table (architectures × scenarios) as markdown.

    .venv/bin/python bench/oracle_table.py                     # every architecture
    .venv/bin/python bench/oracle_table.py llama llava mixtral  # some
    .venv/bin/python bench/oracle_table.py --disagreements FILE # also write the current list of disagreements

Each cell is ✓ (check agrees with real PEFT), ✗ (it does not; listed below the table with both verdicts) or
· (the scenario does not apply to that architecture). Everything is built locally into a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from tests.oracle.cases import ARCHITECTURES, SCENARIOS, Oracle
from tests.oracle.evaluate import Comparison, compare, known_disagreements


def _run(archs: list[str], root: Path) -> tuple[list[Comparison], dict[str, str], dict[str, str], float]:
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    oracle = Oracle(root)
    results: list[Comparison] = []
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    for arch in archs:
        try:
            cases = oracle.cases(arch)
        except Exception as exc:
            skipped[arch] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
            continue
        for case in cases:
            results.append(compare(oracle, case))
        print(f"{arch}: {len(cases)} cases", file=sys.stderr)
    return results, skipped, oracle.unbuilt, time.perf_counter() - started


def _cell(result: Comparison | None) -> str:
    if result is None:
        return "·"
    return "✓" if result.agree else "✗"


def table(results: list[Comparison]) -> str:
    """The markdown agreement table with per-scenario totals."""
    by_case = {r.case.id: r for r in results}
    archs = list(dict.fromkeys(r.case.arch for r in results))
    used = [s for s in SCENARIOS if any(r.case.scenario == s for r in results)]
    lines = ["| architecture | " + " | ".join(used) + " |", "|---|" + "---|" * len(used)]
    for arch in archs:
        lines.append(f"| {arch} | " + " | ".join(_cell(by_case.get(f"{arch}/{s}")) for s in used) + " |")
    agree = [sum(r.agree for r in results if r.case.scenario == s) for s in used]
    total = [sum(1 for r in results if r.case.scenario == s) for s in used]
    lines.append("| **agree / cases** | " + " | ".join(f"{a}/{t}" for a, t in zip(agree, total, strict=True)) + " |")
    return "\n".join(lines)


def disagreements(results: list[Comparison]) -> str:
    """One line per disagreement: both verdicts and what check reported."""
    known = known_disagreements()
    lines = []
    for r in results:
        if r.agree:
            continue
        why = known.get(r.case.id)
        note = f" — known: {why}" if why else ""
        findings = r.predicted.detail.get("findings") or "no findings"
        lines.append(f"- `{r.case.id}`: PEFT **{r.truth}**, check **{r.predicted}** ({findings}){note}")
    return "\n".join(lines) or "(none)"


def main(argv: list[str] | None = None) -> int:
    """Run the oracle on the given architectures (default: all) and print the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", default=list(ARCHITECTURES))
    parser.add_argument("--disagreements", type=Path, help="also write the list of disagreements to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lora-oracle-") as tmp:
        results, skipped, unbuilt, seconds = _run(args.archs, Path(tmp))
    cpu = time.process_time()
    agreed = sum(r.agree for r in results)
    archs = len({r.case.arch for r in results})
    out = [
        f"**{agreed} of {len(results)} cases agree** on {archs} architectures "
        f"({seconds:.0f} s wall, {cpu:.0f} s CPU for the whole run).",
        "",
        table(results),
        "",
        "### Disagreements",
        "",
        disagreements(results),
    ]
    if skipped:
        out += ["", "### Architectures that cannot be built tiny", ""]
        out += [f"- `{arch}`: {why}" for arch, why in sorted(skipped.items())]
    if unbuilt:
        out += ["", "### Scenarios PEFT refuses to create", ""]
        out += [f"- `{case}`: {why}" for case, why in sorted(unbuilt.items())]
    text = "\n".join(out)
    print(text)
    if args.disagreements is not None:
        args.disagreements.write_text(
            "# Oracle disagreements (check vs real PEFT)\n\n" + disagreements(results) + "\n", encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
