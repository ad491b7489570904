"""The serving guard: refuse to serve an adapter whose lock does not hold.

Meant for a serving process's start-up (PEFT/transformers, vLLM multi-LoRA, TGI): the static and fast checks
(configs, tokenizer, adapter files, compat, environment; base weights by size and header) in well under a second
for local files, raising a typed error that carries the full report.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from lora_lock.commands.verify import STATIC_CATEGORIES, verify
from lora_lock.errors import LockViolation as LockViolation  # re-exported: callers catch it beside guard
from lora_lock.findings import Category, Report, Status
from lora_lock.userregex import per_run


@per_run
def guard(
    lockfile: str | Path = "lora.lock",
    *,
    adapters: Collection[str] | None = None,
    categories: Collection[Category] = STATIC_CATEGORIES,
    hash_weights: bool = False,
    allow_symlinks: bool = False,
    allow_outside_sources: bool = False,
) -> Report:
    """Verify the lock's static tier; return the report when it holds, raise :class:`LockViolation` otherwise.

    ``adapters`` limits the check to the named adapters (a server loading one of many). Base weights are compared
    by size and safetensors header unless ``hash_weights`` (full hashing costs about a second per 1.5 GB per core):
    the fast mode catches converted, truncated, re-quantized or renamed weights, not a swap that keeps every size
    and header (new values in the same layout), which ``hash_weights=True`` or a CI ``verify`` catches. Every file
    of the locked directories is checked (a file added to the base, such as a planted adapter, fails the guard);
    ``allow_symlinks`` / ``allow_outside_sources`` as for :func:`~lora_lock.commands.verify.verify`.
    """
    report = verify(
        lockfile,
        only=categories,
        adapters=adapters,
        hash_weights=hash_weights,
        allow_symlinks=allow_symlinks,
        allow_outside_sources=allow_outside_sources,
    )
    if report.status is not Status.PASS:
        raise LockViolation(report)
    return report
