"""Which transformers / PEFT will load the adapter: installed, recorded in a lock, or named explicitly.

Versions are read from package metadata (``importlib.metadata``); the libraries themselves are never imported.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lora_lock.errors import InputError
from lora_lock.text import brief

PACKAGES = ("transformers", "peft")

#: A PEP 440-ish version: release numbers, then optional pre/post/dev/local parts; no spaces.
_VERSION = re.compile(r"^[0-9]{1,6}(\.[0-9]{1,6}){0,5}([A-Za-z0-9.+!_-]{0,40})$")
_RELEASE = re.compile(r"^([0-9]{1,6}(?:\.[0-9]{1,6}){0,5})")


@dataclass(frozen=True)
class Stack:
    """The transformers and PEFT versions whose load rules apply; ``None`` = unknown or not installed."""

    transformers: str | None
    peft: str | None
    origin: str  # "installed" | "lock" | "explicit"

    def describe(self) -> str:
        """E.g. ``transformers 5.23.0, peft 0.21.2 (installed)``."""
        parts = [
            f"{name} {version}" if version else f"{name} unknown"
            for name, version in (("transformers", self.transformers), ("peft", self.peft))
        ]
        return f"{', '.join(parts)} ({self.origin})"


def release(version: str | None) -> tuple[int, ...] | None:
    """The numeric release of a version (``5.0.0.dev0`` → ``(5, 0, 0)``), or None when it has none."""
    if not isinstance(version, str):
        return None
    match = _RELEASE.match(version)
    if match is None:
        return None
    return tuple(int(p) for p in match.group(1).split("."))


def _dist_info_version(name: str) -> str | None:
    """The version in the name of ``<name>-<version>.dist-info`` on ``sys.path`` (what pip writes), or None.

    ``importlib.metadata.version`` builds a finder over every path entry and parses the METADATA file; on the
    static path only the directory name is needed, so this lists each ``sys.path`` directory once.
    """
    prefix = name.replace("-", "_").lower() + "-"
    for entry in sys.path:
        for item in _listing(entry):
            lowered = item.lower()
            if lowered.startswith(prefix) and lowered.endswith(".dist-info"):
                version = item[len(prefix) : -len(".dist-info")]
                if _VERSION.match(version):
                    return version
    return None


@lru_cache(maxsize=64)
def _listing(entry: str) -> tuple[str, ...]:
    try:
        return tuple(n for n in os.listdir(entry or ".") if n.endswith(".dist-info"))
    except OSError:
        return ()


def _metadata_version(name: str) -> str | None:
    found = _dist_info_version(name)
    if found is not None:
        return found
    import importlib.metadata as md  # the slow general lookup (eggs, odd layouts); its import costs too

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def installed_stack() -> Stack:
    """The versions installed in this interpreter, from package metadata only (nothing is imported)."""
    return Stack(_metadata_version("transformers"), _metadata_version("peft"), "installed")


def parse_stack(spec: str) -> Stack:
    """Parse ``transformers==5.23.0,peft==0.21.2`` (either may be omitted); bad text raises InputError."""
    example = "expected e.g. 'transformers==5.23.0,peft==0.21.2'"
    if not isinstance(spec, str) or not spec.strip() or len(spec) > 200:
        raise InputError(f"--stack: {example}, found {brief(spec)}.")
    found: dict[str, str] = {}
    for part in spec.split(","):
        item = part.strip()
        name, sep, version = item.partition("==")
        name, version = name.strip().lower().replace("_", "-"), version.strip()
        if not sep or not name or not version:
            raise InputError(f"--stack: {example}, found {brief(item)} (each entry is NAME==VERSION).")
        if name not in PACKAGES:
            raise InputError(f"--stack: {example}; {brief(name)} is not one of {', '.join(PACKAGES)}.")
        if name in found:
            raise InputError(f"--stack: {example}; {name} is given twice.")
        if not _VERSION.match(version):
            raise InputError(f"--stack: {example}; {brief(version)} is not a version number for {name}.")
        found[name] = version
    return Stack(found.get("transformers"), found.get("peft"), "explicit")


def lock_stack(environment: Mapping[str, Any]) -> Stack:
    """The stack a lock's ``[environment]`` table records (``versions.transformers`` / ``versions.peft``)."""
    versions: Any = environment.get("versions") if isinstance(environment, Mapping) else None
    if not isinstance(versions, Mapping):
        versions = environment if isinstance(environment, Mapping) else {}

    def pick(name: str) -> str | None:
        value = versions.get(name)
        return value if isinstance(value, str) and _VERSION.match(value) else None

    return Stack(pick("transformers"), pick("peft"), "lock")
