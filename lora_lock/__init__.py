"""lora-lock: lock a LoRA adapter to the exact base model, tokenizer and stack it was trained and validated on.

Public API (each returns data; nothing here prints, reads the environment or exits):

- :func:`check` — static fit of an adapter against a base (never imports torch).
- :func:`generate` — write ``lora.lock`` for adapters over one base.
- :func:`verify` — re-check a lock; returns a :class:`Report` (``report.status.exit_code`` is 0 / 1 / 2).
- :func:`diff` — what changed between two locks.
- :func:`guard` — the serving start-up check: raises :class:`LockViolation` when the lock does not hold.

Submodules load on first use, so ``import lora_lock`` stays cheap on the static path.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lora_lock._version import __version__

if TYPE_CHECKING:
    from lora_lock.commands.check import check
    from lora_lock.commands.generate import GenerateResult, generate
    from lora_lock.commands.guard import guard
    from lora_lock.commands.verify import verify
    from lora_lock.errors import InputError, LockfileError, LockViolation, LoraLockError, SourceError
    from lora_lock.findings import Category, Finding, Report, Severity, Status
    from lora_lock.lock.diff import diff

_EXPORTS = {
    "check": "lora_lock.commands.check",
    "diff": "lora_lock.lock.diff",
    "generate": "lora_lock.commands.generate",
    "GenerateResult": "lora_lock.commands.generate",
    "verify": "lora_lock.commands.verify",
    "guard": "lora_lock.commands.guard",
    "LockViolation": "lora_lock.errors",
    "InputError": "lora_lock.errors",
    "LockfileError": "lora_lock.errors",
    "LoraLockError": "lora_lock.errors",
    "SourceError": "lora_lock.errors",
    "Category": "lora_lock.findings",
    "Finding": "lora_lock.findings",
    "Report": "lora_lock.findings",
    "Severity": "lora_lock.findings",
    "Status": "lora_lock.findings",
}

__all__ = [
    "Category",
    "Finding",
    "GenerateResult",
    "InputError",
    "LockViolation",
    "LockfileError",
    "LoraLockError",
    "Report",
    "Severity",
    "SourceError",
    "Status",
    "__version__",
    "check",
    "diff",
    "generate",
    "guard",
    "verify",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lora_lock' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
