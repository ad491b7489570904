"""How a lock table becomes a frozen record and back: each field names its TOML key and how its value is
converted on the way in and out; :class:`Record` reads and writes a table through them.

:mod:`lora_lock.lock.model` declares the lock's sections with these fields; nothing here checks the schema.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, cast

from lora_lock.hashing import Digest
from lora_lock.lock.values import FileSet, FrozenMap, freeze, frozen_map, thaw

R = TypeVar("R", bound="Record")


@dataclass(frozen=True, slots=True)
class _Key:
    """How one field is spelled in the lock and converted on the way in and out."""

    name: str
    load: Callable[[Any], Any]
    dump: Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def key(
    name: str, load: Callable[[Any], Any] = _same, dump: Callable[[Any], Any] = _same, *, required: bool = False
) -> Any:
    """A field spelled ``name`` in the lock, converted by ``load`` / ``dump``; None when absent unless ``required``."""
    meta = {"toml": _Key(name, load, dump)}
    return field(metadata=meta) if required else field(default=None, metadata=meta)


def need(name: str, load: Callable[[Any], Any] = _same, dump: Callable[[Any], Any] = _same) -> Any:
    """A field the lock always has, spelled ``name``."""
    return key(name, load, dump, required=True)


def extra() -> Any:
    """The keys of a table the schema leaves open, kept as read."""
    return field(default=FrozenMap(), metadata={"extra": True})


def rows(cls: type[R]) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """How an array of tables of ``cls`` rows is read and written."""
    return (lambda rows: tuple(cls._from_table(row) for row in rows)), (lambda rows: [row.to_dict() for row in rows])


def table(cls: type[R]) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """How one sub-table of ``cls`` is read and written."""
    return cls._from_table, (lambda record: record.to_dict())


DIGEST = (Digest.from_str, str)
FILES = (FileSet.from_dict, FileSet.to_dict)
MAP = (frozen_map, dict)
VALUE = (freeze, thaw)


class Record:
    """A lock table as a record: ``from_dict`` / ``to_dict`` through each field's key (no schema check here)."""

    __slots__ = ()

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record of a schema-valid table (``ValueError`` for a key the schema does not allow here)."""
        return cls._from_table(data)

    @classmethod
    def _from_table(cls: type[R], data: Mapping[str, Any]) -> R:
        kwargs: dict[str, Any] = {}
        known: set[str] = set()
        open_field = None
        for f in fields(cast(Any, cls)):
            spec: _Key | None = f.metadata.get("toml")
            if spec is None:
                open_field = f.name
                continue
            known.add(spec.name)
            if spec.name in data:
                kwargs[f.name] = spec.load(data[spec.name])
        rest = {key: value for key, value in data.items() if key not in known}
        if open_field is not None:
            kwargs[open_field] = freeze(rest)
        elif rest:
            raise ValueError(f"{cls.__name__}: unexpected keys {sorted(rest)}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The table as ``tomllib`` reads it: absent fields left out, open keys merged back."""
        out: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for f in fields(cast(Any, self)):
            value = getattr(self, f.name)
            spec: _Key | None = f.metadata.get("toml")
            if spec is None:
                rest = thaw(value)
            elif value is not None:
                out[spec.name] = spec.dump(value)
        # Only a record built by hand can hold a known key in ``extra``: it would silently replace the field.
        known = {spec.name for f in fields(cast(Any, self)) if (spec := f.metadata.get("toml"))}
        if known & rest.keys():
            raise ValueError(f"{type(self).__name__}: `extra` repeats the field(s) {sorted(known & rest.keys())}")
        return {**out, **rest}
