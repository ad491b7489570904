"""Regular expressions written by someone else (``target_modules`` strings, ``rank_pattern`` keys, golden-set
scorers): compiled and run with a time limit, so a hostile or careless pattern is an input error, not a hang.

The ``regex`` module matches Python's ``re`` syntax (its VERSION0 mode) and, unlike ``re``, can stop a match
that backtracks for too long. A limit per match is not enough: a dozen patterns each taking just under it, tried
against thousands of module names, still run for minutes. So every match also draws on a budget for the whole
run (:func:`budget`; the CLI opens one per command), and the run stops with an input error when it is spent.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, ParamSpec, TypeVar

from lora_lock.errors import InputError, brief

#: ``regex.IGNORECASE``, the same bit as ``re.IGNORECASE``; ``regex`` itself is imported on the first compile, so a
#: run whose adapter has no user pattern (most: ``target_modules`` is usually a list) never pays its import.
IGNORECASE = 2

#: Wall time one match may take. Module names are short: a real pattern answers in microseconds.
TIMEOUT_S = 0.25
#: Wall time all user patterns of one run may take together. A real adapter's patterns over a 400B model's
#: module names take milliseconds.
RUN_BUDGET_S = 5.0
#: Longest pattern compiled: real ones are a few dozen characters; compile time grows with length.
MAX_PATTERN = 4096
_COMPILE_ERRORS: tuple[type[BaseException], ...] = (OverflowError, RecursionError, ValueError, TypeError)


class _Budget(threading.local):
    """What is left of the current run's budget, per thread (``None``: no run open, per-match limit only)."""

    left: float | None = None
    total: float = RUN_BUDGET_S


_budget = _Budget()


@contextmanager
def budget(seconds: float | None = None) -> Iterator[None]:
    """Run the body with a fresh budget of ``seconds`` (default :data:`RUN_BUDGET_S`) for all user regex matching
    (nested: the inner one)."""
    seconds = RUN_BUDGET_S if seconds is None else seconds
    saved = (_budget.left, _budget.total)
    _budget.left, _budget.total = seconds, seconds
    try:
        yield
    finally:
        _budget.left, _budget.total = saved


_P = ParamSpec("_P")
_R = TypeVar("_R")


def per_run(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Give a public entry point (``check``, ``generate``, ``verify``, ``guard``) one budget for the whole call,
    unless a run already has one open (the CLI's, or an outer entry point's): a library caller gets the same
    bound on total regex work as the command line."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if _budget.left is not None:
            return func(*args, **kwargs)
        with budget():
            return func(*args, **kwargs)

    return wrapper


def _spent(where: str) -> InputError:
    return InputError(
        f"{where}: the regular expressions of this input took more than {_budget.total:g} s in all "
        "(catastrophic backtracking over many names)",
        hint="simplify the patterns (rank_pattern / alpha_pattern keys, target_modules, golden-set regexes)",
    )


@lru_cache(maxsize=512)
def _compiled(pattern: str, flags: int) -> Any:
    import regex

    return regex.compile(pattern, flags)


def _compile_errors() -> tuple[type[BaseException], ...]:
    import regex

    return (regex.error, *_COMPILE_ERRORS)


def compile_user(pattern: str, where: str, flags: int = 0) -> Any:
    """Compile ``pattern`` or raise an InputError naming ``where`` it came from."""
    if len(pattern) > MAX_PATTERN:
        raise InputError(f"{where}: a regular expression of {len(pattern)} characters (at most {MAX_PATTERN})")
    try:
        return _compiled(pattern, flags)
    except _compile_errors() as exc:
        raise InputError(f"{where} must be a valid regular expression, found {brief(pattern)} ({exc})") from exc


def _run(kind: str, pattern: str, text: str, where: str, flags: int, *args: Any) -> Any:
    compiled = compile_user(pattern, where, flags)
    left = _budget.left
    if left is not None and left <= 0:
        raise _spent(where)
    timeout = TIMEOUT_S if left is None else min(TIMEOUT_S, left)
    start = time.monotonic()
    try:
        return getattr(compiled, kind)(*args, text, timeout=timeout)
    except TimeoutError as exc:
        if left is not None and timeout < TIMEOUT_S:
            raise _spent(where) from exc
        raise InputError(
            f"{where}: the regular expression {brief(pattern)} takes too long to match (catastrophic backtracking)",
            hint="simplify the pattern; PEFT would hang on it too",
        ) from exc
    finally:
        if _budget.left is not None:
            _budget.left -= time.monotonic() - start


def fullmatch(pattern: str, text: str, where: str, flags: int = 0) -> Any:
    """``regex.fullmatch`` of a user pattern, within the per-match limit and the run's budget (:class:`InputError`
    naming ``where`` past either)."""
    return _run("fullmatch", pattern, text, where, flags)


def match(pattern: str, text: str, where: str, flags: int = 0) -> Any:
    """``regex.match`` of a user pattern, within the same limits as :func:`fullmatch`."""
    return _run("match", pattern, text, where, flags)


def search(pattern: str, text: str, where: str, flags: int = 0) -> Any:
    """``regex.search`` of a user pattern, within the same limits as :func:`fullmatch`."""
    return _run("search", pattern, text, where, flags)


def sub(pattern: str, replacement: str, text: str, where: str, flags: int = 0) -> str:
    """``pattern`` replaced by ``replacement`` in ``text``, within the same limits as a match."""
    result: str = _run("sub", pattern, text, where, flags, replacement)
    return result
