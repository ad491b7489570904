"""``diff``: what changed between two locks, as data (the changed rows); :mod:`lora_lock.report.diff` words it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.findings import Category
from lora_lock.lock.io import read
from lora_lock.lock.module_table import aligned
from lora_lock.lock.rows import row_text, rows_by_pattern
from lora_lock.lock.rows import value_text as _v


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


def _files(category: Category, what: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None:
            out.append(Change(category, f"{what} file {name} added", name, None, b))
        elif b is None:
            out.append(Change(category, f"{what} file {name} removed", name, a, None))
        else:
            out.append(
                Change(
                    category,
                    f"{what} file {name} changed: {_v(a['digest'])} ({a['size']} bytes) → "
                    f"{_v(b['digest'])} ({b['size']} bytes)",
                    name,
                    a,
                    b,
                )
            )
    return out


def _section(
    category: Category, what: str, old: Mapping[str, Any], new: Mapping[str, Any], skip: tuple[str, ...] = ("files",)
) -> list[Change]:
    out = []
    for path, a, b in _walk(
        {k: v for k, v in old.items() if k not in skip}, {k: v for k, v in new.items() if k not in skip}
    ):
        key = ".".join(path)
        out.append(Change(category, f"{what} {key} {_v(a)} → {_v(b)}", key, a, b))
    return out


def _one_or_all(rows: list[Mapping[str, Any]]) -> Any:
    """A change's old/new value: the row, or the list of rows when the pattern has several (``rank_pattern``)."""
    return None if not rows else rows[0] if len(rows) == 1 else rows


def _module_changes(name: str, old: list[Mapping[str, Any]], new: list[Mapping[str, Any]]) -> list[Change]:
    a, b = rows_by_pattern(old), rows_by_pattern(new)
    out = []
    for pattern in sorted(set(a) | set(b)):
        xs, ys = a.get(pattern, []), b.get(pattern, [])
        if xs == ys:
            continue
        leaf = pattern.rpartition(".")[2]
        if not xs or not ys:
            state = "added" if not xs else "removed"
            count = sum(int(r["count"]) for r in ys or xs)
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
        x, y = xs[0], ys[0]
        parts = []
        for key in ("base-shape", "lora-a", "lora-b", "rank", "kind", "count", "layers", "quantized"):
            if x.get(key) != y.get(key):
                parts.append(f"{key} {_v(x.get(key))} → {_v(y.get(key))}")
        out.append(
            Change(
                Category.COMPAT,
                f"adapter {name}: {leaf} changed in {y['count']} modules: {'; '.join(parts)}",
                pattern,
                x,
                y,
            )
        )
    return out


def diff_locks(old: Mapping[str, Any], new: Mapping[str, Any]) -> LockDiff:
    """The changes between two lock documents, as read by :func:`lora_lock.lock.io.read`."""
    changes: list[Change] = []
    ob, nb = old["base"], new["base"]
    if ob.get("revision") != nb.get("revision"):
        changes.append(
            Change(
                Category.BASE,
                f"base revision {_v(ob.get('revision'))[:12]} → {_v(nb.get('revision'))[:12]}",
                "revision",
                ob.get("revision"),
                nb.get("revision"),
            )
        )
    for key in ("source", "repo", "ref"):
        if ob.get(key) != nb.get(key):
            changes.append(
                Change(
                    Category.BASE, f"base {key} {_v(ob.get(key))} → {_v(nb.get(key))}", key, ob.get(key), nb.get(key)
                )
            )
    for path, a, b in _walk(ob["config"], nb["config"]):
        changes.append(Change(Category.BASE, f"{path[0].replace('_', ' ')} {_v(a)} → {_v(b)}", path[0], a, b))
    if ob.get("runtime-rules") != nb.get("runtime-rules"):
        changes.append(
            Change(
                Category.COMPAT,
                f"module naming rules {_v(ob.get('runtime-rules'))} → {_v(nb.get('runtime-rules'))}",
                "runtime-rules",
                ob.get("runtime-rules"),
                nb.get("runtime-rules"),
            )
        )
    changes += _files(Category.BASE, "base", ob["files"], nb["files"])
    changes += _section(
        Category.QUANTIZATION,
        "base",
        {k: ob.get(k) for k in ("dtype", "weights-dtypes", "quantization")},
        {k: nb.get(k) for k in ("dtype", "weights-dtypes", "quantization")},
    )
    changes += _files(Category.TOKENIZER, "tokenizer", old["tokenizer"]["files"], new["tokenizer"]["files"])
    changes += _section(Category.TOKENIZER, "tokenizer", old["tokenizer"], new["tokenizer"])

    oa = {a["name"]: a for a in old["adapter"]}
    na = {a["name"]: a for a in new["adapter"]}
    for name in sorted(set(oa) | set(na)):
        x, y = oa.get(name), na.get(name)
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
        changes += _files(Category.ADAPTER, f"adapter {name}", x["files"], y["files"])
        changes += _section(Category.ADAPTER, f"adapter {name}", x, y, skip=("files", "modules", "name"))
        # In runtime names when both locks record them; else in checkpoint names (a lock written before runtime names).
        changes += _module_changes(name, *aligned(x, y))
    for path, a, b in _walk(old["environment"], new["environment"]):
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
    changes += _behaviour_changes(old, new)
    return LockDiff(tuple(changes))


def _behaviour_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    out: list[Change] = []
    for section, category, keys in (
        ("probe", Category.EFFECT, ("effect-kl", "noise-kl", "effect-distance", "noise-distance", "tolerance")),
        ("golden", Category.GOLDEN, ("accuracy", "acc-norm")),
    ):
        a, b = old.get(section), new.get(section)
        if a == b:
            continue
        if a is None or b is None:
            out.append(Change(category, f"{section} {'added' if a is None else 'removed'}", section))
            continue
        rows_a = {r["name"]: r for r in a.get("adapter", [])}
        rows_b = {r["name"]: r for r in b.get("adapter", [])}
        for name in sorted(set(rows_a) | set(rows_b)):
            x, y = rows_a.get(name, {}), rows_b.get(name, {})
            parts = [f"{k} {_v(x.get(k))} → {_v(y.get(k))}" for k in keys if x.get(k) != y.get(k)]
            if x.get("correct") != y.get("correct"):
                parts.append("per-item results changed")
            if parts:
                out.append(Change(category, f"adapter {name}: {'; '.join(parts)}", name, x, y))
        settings = {k: v for k, v in a.items() if k != "adapter"}, {k: v for k, v in b.items() if k != "adapter"}
        out += _section(category, section, settings[0], settings[1], skip=("sidecar", "sidecar-digest"))
        if a.get("sidecar-digest") != b.get("sidecar-digest") and not out:
            out.append(Change(category, f"{section} fingerprints changed", section))
    return out


def diff(old: str | Path, new: str | Path) -> LockDiff:
    """The changes from the lock file ``old`` to the lock file ``new``."""
    return diff_locks(read(Path(old)), read(Path(new)))


def _origin(adapter: Mapping[str, Any]) -> str:
    """Where an adapter comes from: its local path, or its Hub repo (and revision)."""
    if "source" in adapter:
        return str(adapter["source"])
    revision = adapter.get("revision")
    return f"{adapter.get('repo')}@{revision}" if revision else str(adapter.get("repo"))
