"""What ``lora_lock.check`` predicts for a pair, in the oracle's terms, and whether it agrees with PEFT.

:func:`predicted_verdict` is the one place that turns check's report into ``applies`` / ``drops`` / ``raises``:
from the engine's prediction object where the installed lora_lock has one, else from the exit status and the
finding codes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from lora_lock import Report, Severity, check
from tests.helpers import ROOT
from tests.oracle.truth import Verdict

DROP_CODES = frozenset({"COMPAT-UNMATCHED", "COMPAT-NO-MATCH", "COMPAT-UNTRAINED"})
RAISE_CODES = frozenset({"COMPAT-NO-TARGET", "COMPAT-SHAPE", "COMPAT-RANK", "COMPAT-KIND", "COMPAT-SAVED-SHAPE"})


def _error_codes(report: Report) -> set[str]:
    return {f.code for f in report.findings if f.severity is Severity.ERROR}


def _describe(report: Report) -> str:
    return "; ".join(f"{f.code}: {f.message}" for f in report.findings if f.severity is Severity.ERROR)[:300]


def _engine_prediction(adapter: Path, base: Path) -> Any | None:
    """The engine's prediction for the pair (``Fit.prediction``), reached the way ``check`` reaches it; ``None``
    when the installed lora_lock has no prediction or the input is unusable (check's report then says why)."""
    from lora_lock.compat.base import read_base
    from lora_lock.compat.static import static_findings
    from lora_lock.errors import InputError
    from lora_lock.inspect.adapter import read_adapter
    from lora_lock.sources.resolve import resolve

    try:
        adapter_view = read_adapter(resolve(adapter, what="adapter").path, require_weights=False)
        fit, _ = static_findings(adapter_view, read_base(resolve(base, what="base")))
    except InputError:
        return None
    return getattr(fit, "prediction", None)


def predicted_verdict(adapter: Path, base: Path) -> tuple[Verdict, Report]:
    """check's verdict on ``adapter`` over ``base``, and the report it came from."""
    report = check(adapter, base)
    prediction = _engine_prediction(adapter, base)
    if prediction is not None:
        return (
            Verdict(
                prediction.outcome,
                dropped=int(getattr(prediction, "dropped_tensors", 0) or 0),
                message=getattr(prediction, "raises", None),
                detail={"findings": _describe(report), "exit": report.status.exit_code, "counted": True},
            ),
            report,
        )
    codes = _error_codes(report)
    detail = {"findings": _describe(report), "exit": report.status.exit_code}
    if report.status.exit_code == 2:
        return Verdict("error", message=_describe(report), detail=detail), report
    if codes & RAISE_CODES:
        return Verdict("raises", message=", ".join(sorted(codes & RAISE_CODES)), detail=detail), report
    if codes & DROP_CODES or report.status.exit_code == 1:
        return Verdict("drops", detail=detail), report
    return Verdict("applies", detail=detail), report


def agrees(truth: Verdict, predicted: Verdict, *, counts: bool) -> bool:
    """The same outcome; with ``counts``, a drop also drops the same number of tensors."""
    if truth.outcome != predicted.outcome:
        return False
    return not (counts and truth.outcome == "drops" and truth.dropped != predicted.dropped)


def cli_exit(adapter: Path, base: Path) -> int:
    """Exit code of ``lora-lock check ADAPTER --base BASE`` run as users run it."""
    done = subprocess.run(
        [sys.executable, "-m", "lora_lock", "check", str(adapter), "--base", str(base), "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    return done.returncode
