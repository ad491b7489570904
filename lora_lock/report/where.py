"""Which workspace file a verify finding is about, so a ``github`` annotation lands on the file that changed (the
base's ``config.json``, the adapter's weights, the tokenizer's ``tokenizer.json``) rather than always on the lock.

Only local sources have workspace files; a Hub source, a finding about no file, or a file that no longer exists
(a deleted one) is annotated on the lock itself."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from lora_lock.findings import Finding

Locate = Callable[[Finding], "str | None"]

#: Findings about one fixed file of their section (the others name theirs in ``subject``).
_FIXED = {
    "BASE-CONFIG": "config.json",
    "ADAPTER-SETTINGS": "adapter_config.json",
    "TOKENIZER-CHAT-TEMPLATE": "tokenizer_config.json",
    "TOKENIZER-SPECIAL": "tokenizer_config.json",
}
_SECTION = {"BASE": "base", "TOKENIZER": "tokenizer", "ADAPTER": "adapter", "QUANT": "base"}


def _dir(fields: Mapping[str, Any], lock_dir: Path) -> Path | None:
    source = fields.get("source")
    return lock_dir / Path(*PurePosixPath(source).parts) if isinstance(source, str) else None


def locator(lock_path: Path, lock: Mapping[str, Any], fallback: str | None) -> Locate:
    """A function giving each finding its annotation file (relative to the working directory when under it)."""
    lock_dir = lock_path.parent
    dirs: dict[str, Path | None] = {"base": _dir(lock["base"], lock_dir)}
    tok = lock["tokenizer"]
    dirs["tokenizer"] = _dir(tok, lock_dir) if {"source", "repo"} & set(tok) else dirs["base"]
    adapters = {str(a["name"]): _dir(a, lock_dir) for a in lock["adapter"]}
    only = next(iter(adapters.values())) if len(adapters) == 1 else None

    def locate(finding: Finding) -> str | None:
        section = _SECTION.get(finding.code.split("-", 1)[0])
        name = _FIXED.get(finding.code)
        if name is None and finding.code.endswith(("-FILE-CHANGED", "-FILE-EXTRA")):
            name = finding.subject
        if section is None or name is None:
            return fallback
        root = dirs.get(section) if section != "adapter" else _adapter_dir(finding, adapters, only)
        if root is None:
            return fallback
        path = root / Path(*PurePosixPath(name).parts)
        try:
            if not path.is_file():
                return fallback
            rel = os.path.relpath(path, Path.cwd())
        except (OSError, ValueError):
            return fallback
        return PurePosixPath(*Path(rel).parts).as_posix() if not rel.startswith("..") else path.as_posix()

    return locate


def _adapter_dir(finding: Finding, adapters: Mapping[str, Path | None], only: Path | None) -> Path | None:
    for name, root in adapters.items():
        if finding.message.startswith(f"adapter {name}: "):
            return root
    return only
