"""Which workspace file a verify finding is about, so a ``github`` annotation lands on the file that changed (the
base's ``config.json``, the adapter's weights, the tokenizer's ``tokenizer.json``) rather than always on the lock.

Only local sources have workspace files; a Hub source, a finding about no file, a file that no longer exists
(a deleted one), or one outside the workspace is annotated on the lock itself. The CLI (``verify --format github``)
and the GitHub Action (``action/run.py``) share :func:`for_lock`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from lora_lock.errors import InputError
from lora_lock.findings import Finding

if TYPE_CHECKING:
    from lora_lock.lock.model import Lock, Sourced

Locate = Callable[[Finding], "str | None"]

#: Findings about one fixed file of their section (the others name theirs in ``subject``).
_FIXED = {
    "BASE-CONFIG": "config.json",
    "ADAPTER-SETTINGS": "adapter_config.json",
    "TOKENIZER-CHAT-TEMPLATE": "tokenizer_config.json",
    "TOKENIZER-SPECIAL": "tokenizer_config.json",
}
_SECTION = {"BASE": "base", "TOKENIZER": "tokenizer", "ADAPTER": "adapter", "QUANT": "base"}


def _dir(section: Sourced, lock_dir: Path) -> Path | None:
    source = section.source
    return lock_dir / Path(*PurePosixPath(source).parts) if source is not None else None


def for_lock(lockfile: str | Path, fallback: str | None, *, root: Path | None = None) -> Locate | None:
    """The :func:`locator` of the lock at ``lockfile`` (a lock, or the directory holding ``lora.lock``), as the CLI
    and the GitHub Action use it; None when the lock cannot be read (the report already says why, on the lock)."""
    from lora_lock.lock.io import lock_path
    from lora_lock.lock.model import read_lock

    path = lock_path(lockfile)
    try:
        lock = read_lock(path)
    except InputError:
        return None
    return locator(path, lock, fallback, root=root)


def locator(lock_path: Path, lock: Lock, fallback: str | None, *, root: Path | None = None) -> Locate:
    """A function giving each finding its annotation file.

    ``root``: the directory annotation paths are relative to (GitHub reads them relative to the workspace); a file
    outside it is annotated on ``fallback``, since GitHub can place it nowhere. None: relative to the working
    directory, and a file outside it by its absolute path (a run outside any workspace)."""
    lock_dir = lock_path.parent
    base = Path.cwd() if root is None else root
    dirs: dict[str, Path | None] = {"base": _dir(lock.base, lock_dir)}
    tok = lock.tokenizer
    dirs["tokenizer"] = _dir(tok, lock_dir) if tok.source is not None or tok.repo is not None else dirs["base"]
    adapters = {a.name: _dir(a, lock_dir) for a in lock.adapters}
    only = next(iter(adapters.values())) if len(adapters) == 1 else None

    def locate(finding: Finding) -> str | None:
        section = _SECTION.get(finding.code.split("-", 1)[0])
        name = _FIXED.get(finding.code)
        if name is None and finding.code.endswith(("-FILE-CHANGED", "-FILE-EXTRA")):
            name = finding.subject
        if section is None or name is None:
            return fallback
        folder = dirs.get(section) if section != "adapter" else _adapter_dir(finding, adapters, only)
        if folder is None:
            return fallback
        path = folder / Path(*PurePosixPath(name).parts)
        try:
            if not path.is_file():
                return fallback
            rel = os.path.relpath(path, base)
        except (OSError, ValueError):  # ValueError: another drive on Windows
            return fallback
        if rel == ".." or rel.startswith(".." + os.sep):
            return fallback if root is not None else Path(os.path.abspath(path)).as_posix()
        return Path(rel).as_posix()

    return locate


def _adapter_dir(finding: Finding, adapters: Mapping[str, Path | None], only: Path | None) -> Path | None:
    for name, root in adapters.items():
        if finding.message.startswith(f"adapter {name}: "):
            return root
    return only
