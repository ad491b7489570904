"""lora-lock: lock a LoRA adapter to the exact base model, tokenizer and stack it was trained and validated on.

Public API (each returns data; nothing here prints, reads the environment or exits):

- :func:`check` — static fit of an adapter against a base (never imports torch).
- :func:`generate` — write ``lora.lock`` for adapters over one base.
- :func:`verify` — re-check a lock; returns a :class:`Report` (``report.status.exit_code`` is 0 / 1 / 2).
- :func:`diff` — what changed between two locks.
"""

from __future__ import annotations

from lora_lock._version import __version__
from lora_lock.checker import check
from lora_lock.diff import diff
from lora_lock.errors import InputError, LockfileError, LoraLockError, SourceError
from lora_lock.generate import GenerateResult, generate
from lora_lock.models import Category, Finding, Report, Severity, Status
from lora_lock.verify import verify

__all__ = [
    "Category",
    "Finding",
    "GenerateResult",
    "InputError",
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
    "verify",
]
