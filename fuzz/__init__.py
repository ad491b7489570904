"""Fuzz harnesses for lora-lock's readers of untrusted files (see fuzz/README.md).

The contract every harness checks: for any input bytes a reader returns a result or raises lora-lock's own
:class:`~lora_lock.errors.InputError`; anything else (KeyError, ValueError, RecursionError, a hang, ...) is a bug.
"""

from __future__ import annotations
