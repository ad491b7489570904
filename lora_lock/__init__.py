"""lora-lock: lock a LoRA adapter to the exact base model, tokenizer and stack it was trained and validated on.

Public API (each returns data; nothing here prints or exits):

- :func:`check` — static fit of an adapter against a base (no torch).
"""

from __future__ import annotations

from lora_lock._version import __version__
from lora_lock.checker import check
from lora_lock.errors import InputError, LockfileError, LoraLockError, SourceError
from lora_lock.models import Category, Finding, Report, Severity, Status

__all__ = [
    "Category",
    "Finding",
    "InputError",
    "LockfileError",
    "LoraLockError",
    "Report",
    "Severity",
    "SourceError",
    "Status",
    "__version__",
    "check",
]
