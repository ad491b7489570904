"""Helpers for platform teams, as data: the adapters of a lock (a CI matrix), and the lock's environment (pins).
:mod:`lora_lock.report.fleet` words them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lora_lock.lock.model import read_lock

#: Distribution names on PyPI for the keys of ``[environment.versions]``.
_DIST = {"huggingface_hub": "huggingface-hub"}
#: Keys that are not pip-installable packages.
_NOT_PACKAGES = frozenset({"python", "cuda"})


@dataclass(frozen=True)
class Pins:
    """The versions a lock's environment was generated with, and the lock file's name."""

    lock_name: str
    versions: Mapping[str, str]

    def packages(self) -> Iterator[tuple[str, str, str]]:
        """``(distribution, public version, build label)`` per pip-installable package, sorted by lock key."""
        for name in sorted(self.versions):
            if name in _NOT_PACKAGES:
                continue
            public, _, label = self.versions[name].partition("+")
            yield _DIST.get(name, name), public, label


def adapter_names(lockfile: str | Path) -> list[str]:
    """The adapter names a lock holds, in the lock's order (the lock is read and validated first; one CI job each)."""
    return list(read_lock(Path(lockfile)).adapter_names())


def pins(lockfile: str | Path) -> Pins:
    """The lock's ``[environment.versions]``."""
    path = Path(lockfile)
    versions = dict(read_lock(path).environment.versions)
    return Pins(lock_name=path.name, versions=versions)
