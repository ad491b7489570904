"""Regular expressions written by someone else (``target_modules`` strings, ``rank_pattern`` keys, golden-set
scorers): compiled and run with a time limit, so a hostile or careless pattern is an input error, not a hang.

The ``regex`` module matches Python's ``re`` syntax (its VERSION0 mode) and, unlike ``re``, can stop a match
that backtracks for too long.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import regex

from lora_lock.errors import InputError, brief

IGNORECASE = int(regex.IGNORECASE)

#: Wall time one match may take. Module names are short: a real pattern answers in microseconds.
TIMEOUT_S = 0.25
_COMPILE_ERRORS = (regex.error, OverflowError, RecursionError, ValueError, TypeError)


@lru_cache(maxsize=512)
def _compiled(pattern: str, flags: int) -> Any:
    return regex.compile(pattern, flags)


def compile_user(pattern: str, where: str, flags: int = 0) -> Any:
    """Compile ``pattern`` or raise an InputError naming ``where`` it came from."""
    try:
        return _compiled(pattern, flags)
    except _COMPILE_ERRORS as exc:
        raise InputError(f"{where} must be a valid regular expression, found {brief(pattern)} ({exc})") from exc


def _run(kind: str, pattern: str, text: str, where: str, flags: int) -> Any:
    compiled = compile_user(pattern, where, flags)
    try:
        return getattr(compiled, kind)(text, timeout=TIMEOUT_S)
    except TimeoutError as exc:
        raise InputError(
            f"{where}: the regular expression {pattern[:80]!r} takes too long to match (catastrophic backtracking)",
            hint="simplify the pattern; PEFT would hang on it too",
        ) from exc


def fullmatch(pattern: str, text: str, where: str, flags: int = 0) -> Any:
    return _run("fullmatch", pattern, text, where, flags)


def match(pattern: str, text: str, where: str, flags: int = 0) -> Any:
    return _run("match", pattern, text, where, flags)


def search(pattern: str, text: str, where: str, flags: int = 0) -> Any:
    return _run("search", pattern, text, where, flags)
