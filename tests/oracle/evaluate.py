"""One comparison: PEFT's verdict and check's on the same case; shared by the tests and bench/oracle_table.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.oracle.cases import Case, Oracle
from tests.oracle.predicted import agrees, predicted_verdict
from tests.oracle.truth import Verdict

KNOWN_FILE = Path(__file__).with_name("known_disagreements.json")


@dataclass(frozen=True)
class Comparison:
    """PEFT's verdict (``truth``), check's (``predicted``), whether they agree and check's exit code."""

    case: Case
    truth: Verdict
    predicted: Verdict
    agree: bool
    exit_code: int


def compare(oracle: Oracle, case: Case) -> Comparison:
    """Run PEFT (cached) and check on ``case`` and compare their verdicts."""
    truth = oracle.truth(case)
    predicted, report = predicted_verdict(case.adapter, case.base.path)
    counted = bool(predicted.detail.get("counted"))
    return Comparison(case, truth, predicted, agrees(truth, predicted, counts=counted), report.status.exit_code)


def known_disagreements() -> dict[str, str]:
    """Case id -> why check and PEFT are known to disagree on it (kept true by the tests)."""
    data = json.loads(KNOWN_FILE.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in data.items() if not k.startswith("_")}
