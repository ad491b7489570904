"""How values, shapes, digests and commits are spelled in messages and in the lock.

One spelling per convention, so a finding, a lock and an error name the same thing the same way (the test suite
asserts the exact text). Nothing here imports from the rest of lora-lock: the static path and ``errors`` use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: Hex characters of a digest or commit shown in a message: enough to tell two apart at a glance.
SHORT = 12


def brief(value: object, limit: int = 80) -> str:
    """A short, safe rendering of a value from an untrusted file for an error message: a string as its ``repr``,
    anything else as JSON, either cut to ``limit`` characters with an ellipsis; ``"a <type>"`` for a value JSON
    cannot write.

    ``repr`` of a 5000-digit integer raises ``ValueError`` and of a deep structure ``RecursionError``; a message
    about bad input must never fail itself.
    """
    import json

    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 4] + "...'"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def value_text(value: Any) -> str:
    """A lock value as a finding shows it: lists as ``[a, b]``, tables as ``{key=value, ...}`` in their own
    order, anything else by ``str`` (so ``None`` is ``"None"``; callers that mean "absent" say so themselves)."""
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def short_digest(digest: str) -> str:
    """The first 12 hex characters of a ``sha256:<hex>`` digest, without the algorithm (a digest with no prefix
    is cut the same way). Callers append the ``…`` where a sentence wants it."""
    return digest.split(":", 1)[-1][:SHORT]


def short_commit(commit: str | None) -> str:
    """The first 12 characters of a commit (``"?"`` when there is none), as ``git log --oneline`` would show it."""
    return (commit or "?")[:SHORT]


def shape_brackets(shape: Iterable[int]) -> str:
    """``(4096, 16)`` → ``"[4096, 16]"``: a tensor shape in a message, spelled as PyTorch prints ``.shape``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def shape_token(shape: Iterable[int]) -> str:
    """``(4096, 16)`` → ``"4096x16"``: a tensor shape in the lock, one token per shape so lock diffs stay one
    line per change."""
    return "x".join(str(d) for d in shape)
