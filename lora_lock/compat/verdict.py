"""The verdict: what PEFT will do with the adapter on this base (applies / drops N tensors / raises), and which rule
tables and versions the prediction was made with."""

from __future__ import annotations

from dataclasses import dataclass

from lora_lock.findings import Category, Finding, Severity
from lora_lock.runtime import Stack


@dataclass(frozen=True)
class Prediction:
    """What ``PeftModel.from_pretrained(base, adapter)`` does on ``stack``, predicted statically.

    ``outcome`` is ``applies`` (every adapter tensor lands), ``drops`` (it loads, ``dropped_tensors`` of
    ``total_tensors`` land nowhere) or ``raises`` (``raises`` quotes the exception PEFT raises).
    """

    outcome: str
    dropped_tensors: int
    raises: str | None
    stack: Stack
    rules: tuple[str, ...]
    total_tensors: int

    def describe(self) -> str:
        """One line: ``applies``, ``drops 12 of 48 tensors`` or ``raises ValueError: …``."""
        if self.outcome == "drops":
            return f"drops {self.dropped_tensors} of {self.total_tensors} tensors"
        if self.outcome == "raises":
            return f"raises {self.raises}"
        return "applies"


def predict(stack: Stack, rules: tuple[str, ...], total: int, dropped: int, raises: str | None) -> Prediction:
    """The outcome from what the engine found: a raise wins (PEFT stops there), then any dropped tensor."""
    if raises is not None:
        return Prediction("raises", 0, raises, stack, rules, total)
    if dropped:
        return Prediction("drops", dropped, None, stack, rules, total)
    return Prediction("applies", 0, None, stack, rules, total)


def rules_finding(stack: Stack, rules: tuple[str, ...]) -> Finding:
    """COMPAT-RULES: which versions' rules the check applied (info)."""
    return Finding(
        "COMPAT-RULES",
        Category.COMPAT,
        Severity.INFO,
        f"checked with the load rules of {stack.describe()}: " + "; ".join(rules),
        subject="stack",
        actual=stack.describe(),
    )
