"""Value types of the lock: digests, file references, read-only tables and TOML values kept as they were read.

Every type here round-trips with the text or table it came from: ``Digest.from_str(str(d)) == d`` and
``str(Digest.from_str(s)) == s`` for a valid ``s``; ``FileSet.from_dict(t).to_dict() == t`` for a schema-valid
files table; ``thaw(freeze(v)) == v`` for any TOML value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from lora_lock.hashing import Digest

V = TypeVar("V")

#: A TOML value as the model holds it: tables become ``FrozenMap``, arrays become tuples (``thaw`` undoes both).
Value = Union[str, int, float, bool, dt.datetime, dt.date, dt.time, tuple["Value", ...], "FrozenMap[Value]"]


class FrozenMap(Mapping[str, V]):
    """A read-only, hashable table with string keys (equal to any mapping with the same items, a dict included)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, V] | Iterable[tuple[str, V]] = ()) -> None:
        self._items: dict[str, V] = dict(items)

    def __getitem__(self, key: str) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


def frozen_map(table: Mapping[str, V]) -> FrozenMap[V]:
    """A table's items in sorted key order (the order the canonical lock writes them in)."""
    return FrozenMap((key, table[key]) for key in sorted(table))


def freeze(value: Any) -> Value:
    """A parsed TOML value, read-only: tables → ``FrozenMap`` (keys sorted), arrays → tuples, scalars as they are."""
    if isinstance(value, Mapping):
        return FrozenMap((str(key), freeze(value[key])) for key in sorted(value))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    if isinstance(value, (str, int, float, dt.date, dt.time)):  # bool is an int; datetime is a date
        return value
    raise TypeError(f"not a TOML value: {type(value).__name__}")


def thaw(value: Value) -> Any:
    """The inverse of ``freeze``: the plain dicts and lists ``tomllib`` returns and ``tomli_w`` writes."""
    if isinstance(value, FrozenMap):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


@dataclass(frozen=True, slots=True, order=True, kw_only=True)
class FileRef:
    """One file of a source: its POSIX path inside the source, its digest and its size in bytes."""

    path: str
    digest: Digest
    size: int

    def to_dict(self) -> dict[str, Any]:
        """The file's entry in a ``files`` table (the path is the entry's key)."""
        return {"digest": str(self.digest), "size": self.size}


@dataclass(frozen=True, slots=True)
class FileSet:
    """A section's ``files`` table: file references in path order, looked up by path."""

    entries: tuple[FileRef, ...] = ()
    _by_path: dict[str, FileRef] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Path order is the order the canonical lock writes; two sets of the same files are then equal.
        ordered = tuple(sorted(self.entries, key=lambda ref: ref.path))
        by_path = {ref.path: ref for ref in ordered}
        if len(by_path) != len(ordered):
            raise ValueError("a files table names one path twice")
        object.__setattr__(self, "entries", ordered)
        object.__setattr__(self, "_by_path", by_path)

    @classmethod
    def from_dict(cls, table: Mapping[str, Mapping[str, Any]]) -> FileSet:
        """A files table as the schema admits it: path → ``{digest, size}``."""
        return cls(
            tuple(FileRef(path=path, digest=Digest.from_str(e["digest"]), size=e["size"]) for path, e in table.items())
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The ``files`` table, keyed by path."""
        return {ref.path: ref.to_dict() for ref in self.entries}

    def get(self, path: str) -> FileRef | None:
        """The reference of ``path``, or None when the set has no such file."""
        return self._by_path.get(path)

    def paths(self) -> tuple[str, ...]:
        """Every path, in order."""
        return tuple(ref.path for ref in self.entries)

    def __iter__(self) -> Iterator[FileRef]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, path: object) -> bool:
        return path in self._by_path
