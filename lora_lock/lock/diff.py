"""``diff``: what changed between two locks, as data (the changed rows); :mod:`lora_lock.report.diff` words it.

The locks are typed (:class:`~lora_lock.lock.model.Lock`); what the diff walks key by key (a section's settings,
the config, the environment) it walks as the lock spells it, so each change names the lock's own key and carries
the values as the lock writes them (``diff --format json``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.findings import Category
from lora_lock.lock.io import canonical
from lora_lock.lock.model import Adapter, Golden, Lock, ModuleRow, Probe, read_lock
from lora_lock.lock.module_table import aligned
from lora_lock.lock.record import Record
from lora_lock.lock.rows import row_text, rows_by_pattern
from lora_lock.lock.rows import value_text as _v
from lora_lock.lock.values import FileSet


@dataclass(frozen=True)
class Change:
    """One changed row between two locks: its category, the sentence saying what changed, and both values."""

    category: Category
    message: str
    subject: str
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The change as JSON data (``lora-lock diff --format json``)."""
        return {
            "category": self.category.value,
            "subject": self.subject,
            "message": self.message,
            "old": self.old,
            "new": self.new,
        }


@dataclass(frozen=True)
class LockDiff:
    """Every change between two locks, in report order; :mod:`lora_lock.report.diff` renders it."""

    changes: tuple[Change, ...]

    @property
    def identical(self) -> bool:
        """Whether the two locks record the same facts (no change at all)."""
        return not self.changes

    def counts(self) -> dict[Category, int]:
        """Changes per category, in report order."""
        out: dict[Category, int] = {}
        for c in self.changes:
            out[c.category] = out.get(c.category, 0) + 1
        return {c: out[c] for c in Category if c in out}


def _walk(old: Any, new: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new)):
            yield from _walk(old.get(key), new.get(key), (*path, str(key)))
    elif old != new:
        yield path, old, new


def _table(record: Record | None, *, skip: Sequence[str] = ()) -> dict[str, Any]:
    """A record as the lock spells it (keys sorted, as the canonical lock writes them), without the ``skip`` keys
    the diff compares on their own."""
    data: dict[str, Any] = canonical(record.to_dict()) if record is not None else {}
    return {key: value for key, value in data.items() if key not in skip}


def _files(category: Category, what: str, old: FileSet, new: FileSet) -> list[Change]:
    out = []
    for name in sorted(set(old.paths()) | set(new.paths())):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if b is None:  # a file on neither side is not listed
            out.append(Change(category, f"{what} file {name} removed", name, a.to_dict() if a else None, None))
        elif a is None:
            out.append(Change(category, f"{what} file {name} added", name, None, b.to_dict()))
        else:
            out.append(
                Change(
                    category,
                    f"{what} file {name} changed: {_v(str(a.digest))} ({a.size} bytes) → "
                    f"{_v(str(b.digest))} ({b.size} bytes)",
                    name,
                    a.to_dict(),
                    b.to_dict(),
                )
            )
    return out


def _section(category: Category, what: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    out = []
    for path, a, b in _walk(old, new):
        key = ".".join(path)
        out.append(Change(category, f"{what} {key} {_v(a)} → {_v(b)}", key, a, b))
    return out


def _one_or_all(rows: Sequence[ModuleRow]) -> Any:
    """A change's old/new value: the row, or the list of rows when the pattern has several (``rank_pattern``)."""
    return None if not rows else _table(rows[0]) if len(rows) == 1 else [_table(r) for r in rows]


def _module_changes(name: str, old: Sequence[ModuleRow], new: Sequence[ModuleRow]) -> list[Change]:
    a, b = rows_by_pattern(old), rows_by_pattern(new)
    out = []
    for pattern in sorted(set(a) | set(b)):
        xs, ys = a.get(pattern, []), b.get(pattern, [])
        if xs == ys:
            continue
        leaf = pattern.rpartition(".")[2]
        if not xs or not ys:
            state = "added" if not xs else "removed"
            count = sum(int(r.count) for r in ys or xs)
            out.append(
                Change(
                    Category.COMPAT,
                    f"adapter {name}: {pattern} {state} ({count} modules)",
                    pattern,
                    _one_or_all(xs),
                    _one_or_all(ys),
                )
            )
            continue
        if len(xs) != 1 or len(ys) != 1:
            out.append(
                Change(
                    Category.COMPAT,
                    f"adapter {name}: {leaf} changed: {'; '.join(map(row_text, xs))} → {'; '.join(map(row_text, ys))}",
                    pattern,
                    _one_or_all(xs),
                    _one_or_all(ys),
                )
            )
            continue
        x, y = _table(xs[0]), _table(ys[0])
        parts = []
        for key in ("base-shape", "lora-a", "lora-b", "rank", "kind", "count", "layers", "quantized"):
            if x.get(key) != y.get(key):
                parts.append(f"{key} {_v(x.get(key))} → {_v(y.get(key))}")
        out.append(
            Change(
                Category.COMPAT,
                f"adapter {name}: {leaf} changed in {ys[0].count} modules: {'; '.join(parts)}",
                pattern,
                x,
                y,
            )
        )
    return out


def _changed(category: Category, what: str, key: str, old: object, new: object) -> list[Change]:
    """One change when a single locked value differs."""
    return [] if old == new else [Change(category, f"{what} {_v(old)} → {_v(new)}", key, old, new)]


def diff_locks(old: Lock, new: Lock) -> LockDiff:
    """The changes between two locks, in report order: base, quantization, tokenizer, adapters, environment,
    behaviour."""
    ob, nb = old.base, new.base
    changes: list[Change] = []
    if ob.revision != nb.revision:
        changes.append(
            Change(
                Category.BASE,
                f"base revision {_v(ob.revision)[:12]} → {_v(nb.revision)[:12]}",
                "revision",
                ob.revision,
                nb.revision,
            )
        )
    for key, a, b in (("source", ob.source, nb.source), ("repo", ob.repo, nb.repo), ("ref", ob.ref, nb.ref)):
        changes += _changed(Category.BASE, f"base {key}", key, a, b)
    for path, a, b in _walk(_table(ob.config), _table(nb.config)):
        changes.append(Change(Category.BASE, f"{path[0].replace('_', ' ')} {_v(a)} → {_v(b)}", path[0], a, b))
    changes += _changed(Category.COMPAT, "module naming rules", "runtime-rules", ob.runtime_rules, nb.runtime_rules)
    changes += _files(Category.BASE, "base", ob.files, nb.files)
    changes += _section(Category.QUANTIZATION, "base", _numerics(old), _numerics(new))
    changes += _files(Category.TOKENIZER, "tokenizer", old.tokenizer.files, new.tokenizer.files)
    changes += _section(
        Category.TOKENIZER, "tokenizer", _table(old.tokenizer, skip=("files",)), _table(new.tokenizer, skip=("files",))
    )
    changes += _adapter_changes(old, new)
    for path, a, b in _walk(_table(old.environment), _table(new.environment)):
        changes.append(
            Change(
                Category.ENVIRONMENT,
                f"{'.'.join(path[1:]) or path[0]} {_v(a)} → {_v(b)}"
                if path[0] == "versions"
                else f"environment {'.'.join(path)} {_v(a)} → {_v(b)}",
                ".".join(path),
                a,
                b,
            )
        )
    changes += _behaviour_changes("probe", Category.EFFECT, old.probe, new.probe)
    changes += _behaviour_changes("golden", Category.GOLDEN, old.golden, new.golden)
    return LockDiff(tuple(changes))


def _numerics(lock: Lock) -> dict[str, Any]:
    """What decides the base's numerics: its dtype, its stored tensor dtypes and its quantization."""
    base = _table(lock.base)
    return {key: base.get(key) for key in ("dtype", "weights-dtypes", "quantization")}


def _adapter_changes(old: Lock, new: Lock) -> list[Change]:
    """Adapters added or removed, and each kept adapter's files, settings and module table."""
    changes: list[Change] = []
    for name in sorted(set(old.adapter_names()) | set(new.adapter_names())):
        x, y = old.adapter(name), new.adapter(name)
        if x is None or y is None:
            changes.append(
                Change(
                    Category.ADAPTER,
                    f"adapter {name} {'added' if x is None else 'removed'}",
                    name,
                    None if x is None else _origin(x),
                    None if y is None else _origin(y),
                )
            )
            continue
        changes += _files(Category.ADAPTER, f"adapter {name}", x.files, y.files)
        own = ("files", "modules", "name")
        changes += _section(Category.ADAPTER, f"adapter {name}", _table(x, skip=own), _table(y, skip=own))
        # In runtime names when both locks record them; else in checkpoint names (a lock written before runtime names).
        changes += _module_changes(name, *aligned(x, y))
    return changes


#: The figures of each behaviour section's rows that the diff names one by one.
_FIGURES = {
    "probe": ("effect-kl", "noise-kl", "effect-distance", "noise-distance", "tolerance"),
    "golden": ("accuracy", "acc-norm"),
}


def _behaviour_changes(
    section: str, category: Category, a: Probe | Golden | None, b: Probe | Golden | None
) -> list[Change]:
    """What changed in one behaviour section (``[probe]`` or ``[golden]``): each adapter's figures, then the
    section's settings; a changed sidecar alone is named as changed fingerprints."""
    if a == b:
        return []
    if a is None or b is None:
        return [Change(category, f"{section} {'added' if a is None else 'removed'}", section)]
    out: list[Change] = []
    rows_a = {r.name: _table(r) for r in a.adapters}
    rows_b = {r.name: _table(r) for r in b.adapters}
    for name in sorted(set(rows_a) | set(rows_b)):
        x, y = rows_a.get(name, {}), rows_b.get(name, {})
        parts = [f"{k} {_v(x.get(k))} → {_v(y.get(k))}" for k in _FIGURES[section] if x.get(k) != y.get(k)]
        if x.get("correct") != y.get("correct"):
            parts.append("per-item results changed")
        if parts:
            out.append(Change(category, f"adapter {name}: {'; '.join(parts)}", name, x, y))
    settings = ("adapter", "sidecar", "sidecar-digest")
    out += _section(category, section, _table(a, skip=settings), _table(b, skip=settings))
    if isinstance(a, Probe) and isinstance(b, Probe) and a.sidecar_digest != b.sidecar_digest and not out:
        out.append(Change(category, f"{section} fingerprints changed", section))
    return out


def diff(old: str | Path, new: str | Path) -> LockDiff:
    """The changes from the lock file ``old`` to the lock file ``new``."""
    return diff_locks(read_lock(Path(old)), read_lock(Path(new)))


def _origin(adapter: Adapter) -> str:
    """Where an adapter comes from: its local path, or its Hub repo (and revision)."""
    if adapter.source is not None:
        return adapter.source
    return f"{adapter.repo}@{adapter.revision}" if adapter.revision else str(adapter.repo)
