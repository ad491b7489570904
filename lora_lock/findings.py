"""Result types shared by every layer: findings, reports and their enums.

These are plain frozen dataclasses so the core returns data and every renderer (text, json, markdown, github)
works from the same object.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lora_lock._version import __version__

if TYPE_CHECKING:
    from lora_lock.errors import InputError


class Category(str, enum.Enum):
    """What part of the world a finding is about (DESIGN §3). The order is the order reports use."""

    INPUT = "input"
    BASE = "base"
    TOKENIZER = "tokenizer"
    ADAPTER = "adapter"
    COMPAT = "compat"
    QUANTIZATION = "quantization"
    ENVIRONMENT = "environment"
    EFFECT = "effect"
    GOLDEN = "golden"

    @classmethod
    def parse_list(cls, text: str) -> frozenset[Category]:
        """Parse ``"base,tokenizer"`` into categories; unknown names raise ``ValueError`` naming the valid ones."""
        names = [part.strip().lower() for part in text.split(",") if part.strip()]
        valid = {c.value: c for c in cls if c.value != "input"}  # unusable input is always reported, never chosen
        if not names:
            raise ValueError(f"no category given; choose from {', '.join(valid)}")
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise ValueError(
                f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                f"choose from {', '.join(valid)}"
            )
        return frozenset(valid[n] for n in names)


class Severity(str, enum.Enum):
    """``error`` fails the run; ``warning`` and ``info`` are reported only."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Status(str, enum.Enum):
    """Overall outcome, mapped one-to-one to the exit code."""

    PASS = "pass"  # noqa: S105 (a status word, not a password)
    FAIL = "fail"
    ERROR = "error"

    @property
    def exit_code(self) -> int:
        """The process exit code of this status: 0 pass, 1 fail, 2 error."""
        return {Status.PASS: 0, Status.FAIL: 1, Status.ERROR: 2}[self]


class CheckState(str, enum.Enum):
    """Per-category state in ``Report.checked``."""

    PASS = "pass"  # noqa: S105 (a status word, not a password)
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Finding:
    """One observation. ``code`` is stable and documented (e.g. ``COMPAT-SHAPE``)."""

    code: str
    category: Category
    severity: Severity
    message: str
    subject: str | None = None
    expected: str | None = None
    actual: str | None = None
    hint: str | None = None

    def for_adapter(self, name: str) -> Finding:
        """The same finding, its message naming the adapter it is about (for locks of several adapters)."""
        return replace(self, message=f"adapter {name}: {self.message}")

    def to_dict(self) -> dict[str, Any]:
        """The finding as JSON data: code, category, severity and message, plus whichever of subject, expected,
        actual and hint are set."""
        out: dict[str, Any] = {
            "code": self.code,
            "category": self.category.value,
            "severity": self.severity.value,
            "message": self.message,
        }
        for key in ("subject", "expected", "actual", "hint"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
_CATEGORY_ORDER = {c: i for i, c in enumerate(Category)}


def sort_findings(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """Stable, meaningful order: by category, then severity, then code and subject."""
    return tuple(
        sorted(
            findings,
            key=lambda f: (_CATEGORY_ORDER[f.category], _SEVERITY_ORDER[f.severity], f.code, f.subject or ""),
        )
    )


@dataclass(frozen=True)
class Report:
    """What a ``check`` or ``verify`` run found. ``checked`` maps each category to its state."""

    findings: tuple[Finding, ...]
    checked: Mapping[Category, CheckState] = field(default_factory=dict)
    title: str = "lora-lock"

    @classmethod
    def build(
        cls,
        findings: Iterable[Finding],
        ran: Iterable[Category],
        skipped: Iterable[Category] = (),
        title: str = "lora-lock",
        blocked: Iterable[Category] = (),
    ) -> Report:
        """Derive each category's state from the findings: any error fails it; a category that unusable input
        kept from being checked (``blocked``) is ``error``, never ``pass``."""
        ordered = sort_findings(findings)
        checked: dict[Category, CheckState] = {}
        stuck = set(blocked)
        for cat in ran:
            errors = [f for f in ordered if f.category is cat and f.severity is Severity.ERROR]
            checked[cat] = CheckState.FAIL if errors else CheckState.ERROR if cat in stuck else CheckState.PASS
        if any(f.category is Category.INPUT and f.severity is Severity.ERROR for f in ordered):
            checked[Category.INPUT] = CheckState.ERROR
        for cat in skipped:
            checked.setdefault(cat, CheckState.SKIPPED)
        return cls(
            findings=ordered, checked=dict(sorted(checked.items(), key=lambda kv: _CATEGORY_ORDER[kv[0]])), title=title
        )

    @property
    def status(self) -> Status:
        """Drift wins over unusable input: a run that found drift fails (exit 1) even if another part errored."""
        errors = [f for f in self.findings if f.severity is Severity.ERROR]
        if any(f.category is not Category.INPUT for f in errors):
            return Status.FAIL
        if errors:
            return Status.ERROR
        return Status.PASS

    def count(self, severity: Severity) -> int:
        """How many findings have ``severity``."""
        return sum(1 for f in self.findings if f.severity is severity)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], title: str = "lora-lock") -> Report:
        """The inverse of :meth:`to_dict` (e.g. to render a saved JSON report in another format).

        Raises ``KeyError`` / ``ValueError`` / ``TypeError`` on a document that is not a report.
        """
        findings = tuple(
            Finding(
                code=str(item["code"]),
                category=Category(item["category"]),
                severity=Severity(item["severity"]),
                message=str(item["message"]),
                subject=item.get("subject"),
                expected=item.get("expected"),
                actual=item.get("actual"),
                hint=item.get("hint"),
            )
            for item in data["findings"]
        )
        checked = {Category(k): CheckState(v) for k, v in data["checked"].items()}
        return cls(findings=findings, checked=checked, title=title)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON data (what ``--format json`` prints): lora-lock's version, the status, every finding
        and the state of each category checked."""
        return {
            "lora_lock_version": __version__,
            "status": self.status.value,
            "findings": [f.to_dict() for f in self.findings],
            "checked": {cat.value: state.value for cat, state in self.checked.items()},
        }


def input_finding(exc: InputError) -> Finding:
    """The ``input`` finding (status ``error``) that stands for unusable input in a report."""
    return Finding(exc.code, Category.INPUT, Severity.ERROR, exc.message, hint=exc.hint)
