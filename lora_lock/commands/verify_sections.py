"""Each section of a lock compared with the same section of the world now: base, tokenizer, one adapter.

Both sides are typed records: the locked side read from the lock, the world's side what ``generate`` would write
now (the same functions of :mod:`lora_lock.lock.snapshot`), so a fresh lock never shows drift and every finding
names a real change. Files are compared from the digests observed now (:func:`compare_files`), where a weight may
have been measured by size alone: the world's records are built without a ``files`` table (``NO_FILES``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from lora_lock.findings import Category, Finding, Severity
from lora_lock.lock.drift import REGENERATE, compare_files, compare_values
from lora_lock.lock.model import Adapter, Base, Lock, ModuleRow
from lora_lock.lock.module_table import aligned
from lora_lock.lock.rows import row_text, rows_by_pattern
from lora_lock.lock.snapshot import (
    Observed,
    adapter_key,
    adapter_record,
    base_record,
    section_digests,
    tokenizer_record,
)
from lora_lock.lock.tokenizer_drift import fact_findings
from lora_lock.lock.values import FileSet

#: The world's side of a section compared here carries no files: they are compared from the digests.
NO_FILES = FileSet()


def base_findings(lock: Lock, observed: Observed, lock_dir: Path, cats: Collection[Category]) -> list[Finding]:
    """The base's files, config, dtypes and quantization as locked, compared with the base now."""
    locked, now = lock.base, base_record(observed, lock_dir, NO_FILES)
    out: list[Finding] = []
    if Category.BASE in cats:
        out += compare_files(
            Category.BASE,
            "BASE",
            locked.files,
            observed.base.source.path,
            section_digests(observed, "base"),
            observed.present["base"],
        )
        out += [f for f in observed.findings if f.category is Category.BASE]
        out += compare_values(
            "BASE-CONFIG",
            Category.BASE,
            "base config",
            locked.config.to_dict(),
            now.config.to_dict(),
            hint="the base model is not the one the adapter was locked to; " + REGENERATE,
        )
    if Category.QUANTIZATION in cats:
        out += _numerics_findings(locked, now)
    return out


def _numerics_findings(locked: Base, now: Base) -> list[Finding]:
    """The base's dtype, stored tensor dtypes and quantization as locked, compared with the base now."""
    out = compare_values("QUANT-DTYPE", Category.QUANTIZATION, "config", {"dtype": locked.dtype}, {"dtype": now.dtype})
    dtypes = now.weights_dtypes
    if locked.weights_dtypes != dtypes:
        then, today = _dtype_counts(locked.weights_dtypes), _dtype_counts(dtypes)
        out.append(
            Finding(
                "QUANT-DTYPE",
                Category.QUANTIZATION,
                Severity.ERROR,
                f"the base's stored tensor dtypes changed: {then} → {today}",
                subject="weights-dtypes",
                expected=then,
                actual=today,
                hint="the weights were converted or re-quantized; " + REGENERATE,
            )
        )
    out += compare_values(
        "QUANT-FORMAT",
        Category.QUANTIZATION,
        "quantization",
        locked.quantization.to_dict(),
        now.quantization.to_dict(),
        hint="a base quantized differently changes the adapter's numerics; " + REGENERATE,
    )
    return out


def _dtype_counts(counts: Mapping[str, int]) -> str:
    """``{"F32": 21}`` → ``"F32 ×21 tensors"``."""
    return ", ".join(f"{dtype} ×{n}" for dtype, n in sorted(counts.items())) + " tensors" if counts else "no tensors"


def tokenizer_findings(lock: Lock, observed: Observed, lock_dir: Path) -> list[Finding]:
    """The tokenizer's files and facts as locked, compared with the tokenizer now."""
    files = compare_files(
        Category.TOKENIZER,
        "TOKENIZER",
        lock.tokenizer.files,
        observed.tokenizer_source.path,
        section_digests(observed, "tokenizer"),
        observed.present["tokenizer"],
    )
    return fact_findings(lock.tokenizer, tokenizer_record(observed, lock_dir, NO_FILES), files)


def adapter_findings(locked: Adapter, observed: Observed, lock_dir: Path, cats: Collection[Category]) -> list[Finding]:
    """One locked adapter's files, settings and module table, compared with the adapter now."""
    name = locked.name
    one = next((o for o in observed.adapters if o.name == name), None)
    if one is None:
        return []
    now = adapter_record(observed, one, lock_dir, NO_FILES)
    out: list[Finding] = []
    if Category.ADAPTER in cats:
        out += [
            f.for_adapter(name)
            for f in compare_files(
                Category.ADAPTER,
                "ADAPTER",
                locked.files,
                one.adapter.root,
                section_digests(observed, adapter_key(name)),
                observed.present.get(adapter_key(name), ()),
            )
        ]
        out += [
            f.for_adapter(name)
            for f in compare_values(
                "ADAPTER-SETTINGS",
                Category.ADAPTER,
                "adapter setting",
                locked.settings.to_dict(),
                now.settings.to_dict(),
            )
        ]
    if Category.COMPAT in cats:
        out += _module_findings(name, *aligned(locked, now))
    return out


def _module_findings(name: str, locked_rows: Sequence[ModuleRow], now_rows: Sequence[ModuleRow]) -> list[Finding]:
    """Each pattern whose resolved rows changed. Several rows share a pattern when its layers differ
    (rank_pattern): each pattern's rows are compared whole (``quantized`` counts too), in runtime names, or in
    checkpoint names for a lock written before it recorded runtime names."""
    old, new = rows_by_pattern(locked_rows), rows_by_pattern(now_rows)
    out: list[Finding] = []
    for pattern in sorted(set(old) | set(new)):
        if old.get(pattern, []) != new.get(pattern, []):
            then, today = _rows(old.get(pattern, [])), _rows(new.get(pattern, []))
            out.append(
                Finding(
                    "COMPAT-MODULES",
                    Category.COMPAT,
                    Severity.ERROR,
                    f"{pattern}: the resolved module changed: {then} → {today}",
                    subject=pattern,
                    expected=then,
                    actual=today,
                    hint=REGENERATE,
                ).for_adapter(name)
            )
    return out


def _rows(rows: Sequence[ModuleRow]) -> str:
    return "; ".join(row_text(row) for row in rows) if rows else "absent"
