"""Every exception lora-lock defines, under one root for those that reach a user.

Every error that reaches a user carries text written for that user: what went wrong, where (file and field),
and a hint that names the fix. Foreign exceptions are wrapped where they enter (``raise InputError(...) from exc``)
and only the CLI decides how to show them. The two classes outside the root (:class:`TableError`,
:class:`Unmodelled`) are internal signals, defined here so that every exception has one home.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Re-exported: messages about bad input quote it with ``brief`` (its home is :mod:`lora_lock.text`).
from lora_lock.text import brief as brief

if TYPE_CHECKING:
    from lora_lock.findings import Report


class LoraLockError(Exception):
    """Root of every error lora-lock raises on purpose.

    ``message`` is one paragraph for the user; ``hint`` (optional) says what to do about it. Both usually quote
    untrusted values (file names, config fields, lock strings) and end up in terminals, CI logs and a serving
    process's log: they are sanitised here, once, to one line each (no control or bidi characters, no workflow
    command; see :mod:`lora_lock.report.sanitize`).
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        from lora_lock.report.sanitize import line

        message = line(str(message))
        super().__init__(message)
        self.message = message
        self.hint = line(str(hint)) if hint is not None else None

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message


class InputError(LoraLockError):
    """An input file or argument is unusable (missing, malformed, unsupported). Exit code 2.

    ``code``: the finding code the report gives it (``INPUT-UNUSABLE`` unless a more precise one applies, such as
    ``INPUT-PICKLE``)."""

    def __init__(self, message: str, *, hint: str | None = None, code: str = "INPUT-UNUSABLE") -> None:
        super().__init__(message, hint=hint)
        self.code = code


def library_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised inside torch / transformers / peft / tokenizers, is that library failing on our
    input (to become unusable input, keeping the report) rather than the user stopping us.

    Every ``Exception`` is, and so are the panics of native code: pyo3 turns a Rust panic (the tokenizers library
    on a pathological regex, say) into ``PanicException``, which derives from ``BaseException``. An interrupt, an
    exit, a closing generator and our own errors are not."""
    return not isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit | LoraLockError)


class LockfileError(InputError):
    """The lockfile itself is unusable: not TOML, fails the schema, or written by a newer lora-lock."""


class SourceError(InputError):
    """A base or adapter source cannot be resolved (missing directory, unknown Hub repo or revision, offline)."""


class ProbeUnavailableError(LoraLockError):
    """The behavioural probe cannot run here (the ``probe`` extra is not installed, or the device is missing)."""


class ProbeMemoryError(InputError):
    """A probe or golden forward ran out of device memory (the golden set retries with smaller batches)."""


class LockViolation(LoraLockError):
    """The lock does not hold (raised by :func:`lora_lock.guard`). ``report`` has every finding; ``str()`` names
    the first errors."""

    def __init__(self, report: Report) -> None:
        from lora_lock.findings import Severity

        errors = [f for f in report.findings if f.severity is Severity.ERROR]
        head = "; ".join(f"{f.code}: {f.message}" for f in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(
            f"lora-lock: the lock does not hold ({report.status.value}): {head}{more}",
            hint="run `lora-lock verify` for the full report",
        )
        self.report = report


# Two internal signals, outside the LoraLockError root on purpose: neither is a message for a user as raised.


class TableError(Exception):
    """The shipped rule table is missing or unreadable (a broken install, not bad user input)."""


class Unmodelled(Exception):
    """A conversion operation whose output cannot be derived from names and shapes alone; the text says which and
    why. The runtime view catches it and reports the rename as not modelled (the probe tier confirms)."""
