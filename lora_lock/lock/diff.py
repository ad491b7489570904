"""``diff``: what changed between two locks, in a reviewer's words."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock._version import __version__
from lora_lock.findings import Category
from lora_lock.lock.io import read
from lora_lock.lock.module_table import aligned
from lora_lock.report.sanitize import cell, document, line

#: What a change of each category means for the adapter: the reviewer's summary of ``diff``.
REVIEW = {
    Category.INPUT: "the locks differ in a way lora-lock does not interpret",
    Category.BASE: "the base model changed: the adapter now runs on other weights or another configuration",
    Category.TOKENIZER: "the tokenizer changed: token ids or prompt formatting may differ from training",
    Category.ADAPTER: "the adapter's files, settings or source changed",
    Category.COMPAT: "the resolved module table changed: check every LoRA module still lands on a base layer",
    Category.QUANTIZATION: "the base's dtype or quantization changed: the adapter's numerics change with it",
    Category.ENVIRONMENT: "library versions changed: module names and scaling rules can change between releases",
    Category.EFFECT: "the recorded adapter-effect baseline changed: check it was re-measured, not loosened "
    "(tolerances, prompts)",
    Category.GOLDEN: "the golden-set baseline changed: compare the accuracies above",
}


@dataclass(frozen=True)
class Change:
    """One difference between two locks: a sentence for the reader, the field it is about, and both values."""

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
    """Every difference between two locks, in report category order, with a reviewer's summary."""

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

    def review(self) -> list[str]:
        """The reviewer's summary: one sentence per changed category saying what it means for the adapter."""
        return [f"{c.value}: {REVIEW[c]}" for c in self.counts()]

    def to_dict(self) -> dict[str, Any]:
        """The diff as JSON data: whether identical, counts per category, the review sentences, every change."""
        return {
            "lora_lock_version": __version__,
            "identical": self.identical,
            "summary": {
                "changes": len(self.changes),
                "categories": {c.value: n for c, n in self.counts().items()},
                "review": self.review(),
            },
            "changes": [c.to_dict() for c in self.changes],
        }

    def _headline(self) -> str:
        n = len(self.changes)
        return f"{n} change{'s' if n != 1 else ''}: " + ", ".join(f"{c.value} {k}" for c, k in self.counts().items())

    def render_markdown(self) -> str:
        """A PR comment: the headline, what each changed category means for review, then every change."""
        if self.identical:
            return "## lora-lock diff\n\n✅ the locks are identical\n"
        lines = ["## lora-lock diff", "", f"**{self._headline()}**", "", "| category | changes | for review |"]
        lines.append("|---|---|---|")
        lines += [f"| {c.value} | {k} | {cell(REVIEW[c])} |" for c, k in self.counts().items()]
        current: Category | None = None
        for change in self.changes:
            if change.category is not current:
                current = change.category
                lines += ["", f"### {current.value}", ""]
            lines.append(f"- {cell(change.message)}")
        return "\n".join(lines) + "\n"

    def render_json(self) -> str:
        """The diff as a JSON document, safe to print (raw control characters escaped)."""
        # default=str: a hand-edited lock may hold TOML dates or times, which JSON has no type for.
        return document(json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str)) + "\n"

    def render_text(self) -> str:
        """The diff for a terminal: changes grouped under their category, one line each, then the headline and the
        review sentences."""
        if self.identical:
            return "the locks are identical\n"
        lines: list[str] = []
        current: Category | None = None
        for change in self.changes:
            if change.category is not current:
                current = change.category
                lines.append(f"{current.value}:")
            # One line per change, whatever the locks' strings hold: an ESC, CR or line feed in a value must not
            # hide or fake a line (a drift tolerance set to 1e9 stays visible).
            lines.append(f"  {line(change.message)}")
        lines.append(self._headline())
        lines += [f"  - {line(sentence)}" for sentence in self.review()]
        return "\n".join(lines) + "\n"


def _v(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, str) and value.startswith("sha256:"):
        return value[7:19] + "…"
    if isinstance(value, list):
        return "[" + ", ".join(_v(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_v(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


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


def rows_by_pattern(rows: list[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Module table rows per pattern: one pattern has several rows when its layers differ (``rank_pattern``)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row["pattern"]), []).append(row)
    return out


def row_text(row: Mapping[str, Any]) -> str:
    """One lock module row in a sentence: layers, count, kind, base shape, rank and LoRA shapes."""
    quantized = f" ({row['quantized']})" if row.get("quantized") else ""
    return (
        f"layers {row['layers']}: {row['count']}× {row['kind']}{quantized} base {_v(row['base-shape'])}, "
        f"rank {row['rank']}, lora_A {_v(row['lora-a'])}, lora_B {_v(row['lora-b'])}"
    )


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
    """Every difference between two parsed locks: base, tokenizer, adapters (added, removed, changed) with
    their module tables, behaviour records and environment."""
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
        # In runtime names when both locks record them; else in checkpoint names (a lock of lora-lock 0.1.0).
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
    """The differences between two lock files, each read and validated (:class:`LockfileError` on a bad one)."""
    return diff_locks(read(Path(old)), read(Path(new)))


def _origin(adapter: Mapping[str, Any]) -> str:
    """Where an adapter comes from: its local path, or its Hub repo (and revision)."""
    if "source" in adapter:
        return str(adapter["source"])
    revision = adapter.get("revision")
    return f"{adapter.get('repo')}@{revision}" if revision else str(adapter.get("repo"))
