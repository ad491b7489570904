"""Each section of a lock compared with the same section of the world now: base, tokenizer, one adapter."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from lora_lock.findings import Category, Finding, Severity
from lora_lock.lock.drift import REGENERATE, compare_files, compare_values
from lora_lock.lock.module_table import aligned
from lora_lock.lock.rows import row_text, rows_by_pattern
from lora_lock.lock.snapshot import Observed, adapter_section, base_section, tokenizer_section
from lora_lock.lock.tokenizer_drift import fact_findings


def base_findings(
    lock: Mapping[str, Any], observed: Observed, lock_dir: Path, cats: Collection[Category]
) -> list[Finding]:
    """The base's files, config, dtypes and quantization as locked, compared with the base now."""
    locked, now = lock["base"], base_section(observed, lock_dir)
    out: list[Finding] = []
    if Category.BASE in cats:
        out += compare_files(
            Category.BASE, "BASE", locked["files"], observed.base.source.path, now["files"], observed.present["base"]
        )
        out += [f for f in observed.findings if f.category is Category.BASE]
        out += compare_values(
            "BASE-CONFIG",
            Category.BASE,
            "base config",
            locked["config"],
            now["config"],
            hint="the base model is not the one the adapter was locked to; " + REGENERATE,
        )
    if Category.QUANTIZATION in cats:
        out += compare_values(
            "QUANT-DTYPE", Category.QUANTIZATION, "config", {"dtype": locked.get("dtype")}, {"dtype": now.get("dtype")}
        )
        if locked["weights-dtypes"] != now["weights-dtypes"]:
            then, today = _dtype_counts(locked["weights-dtypes"]), _dtype_counts(now["weights-dtypes"])
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
            locked["quantization"],
            now["quantization"],
            hint="a base quantized differently changes the adapter's numerics; " + REGENERATE,
        )
    return out


def _dtype_counts(counts: Mapping[str, int]) -> str:
    """``{"F32": 21}`` → ``"F32 ×21 tensors"``."""
    return ", ".join(f"{dtype} ×{n}" for dtype, n in sorted(counts.items())) + " tensors" if counts else "no tensors"


def tokenizer_findings(lock: Mapping[str, Any], observed: Observed, lock_dir: Path) -> list[Finding]:
    """The tokenizer's files and facts as locked, compared with the tokenizer now."""
    locked, now = lock["tokenizer"], tokenizer_section(observed, lock_dir)
    files = compare_files(
        Category.TOKENIZER,
        "TOKENIZER",
        locked["files"],
        observed.tokenizer_source.path,
        now["files"],
        observed.present["tokenizer"],
    )
    return fact_findings(locked, now, files)


def adapter_findings(
    locked: Mapping[str, Any], observed: Observed, lock_dir: Path, cats: Collection[Category]
) -> list[Finding]:
    """One locked adapter's files, settings and module table, compared with the adapter now."""
    name = locked["name"]
    match = next(((s, a, r) for n, s, a, r in observed.adapters if n == name), None)
    if match is None:
        return []
    source, adapter, result = match
    now = adapter_section(observed, name, source, adapter, result, lock_dir)
    out: list[Finding] = []
    if Category.ADAPTER in cats:
        out += [
            f.for_adapter(name)
            for f in compare_files(
                Category.ADAPTER,
                "ADAPTER",
                locked["files"],
                adapter.root,
                now["files"],
                observed.present.get(f"adapter:{name}", ()),
            )
        ]
        out += [
            f.for_adapter(name)
            for f in compare_values(
                "ADAPTER-SETTINGS", Category.ADAPTER, "adapter setting", locked["settings"], now["settings"]
            )
        ]
    if Category.COMPAT in cats:
        # Several rows share a pattern when its layers differ (rank_pattern): compare each pattern's rows, in
        # runtime names, or in checkpoint names for a lock written before it recorded runtime names.
        locked_rows, now_rows = aligned(locked, now)
        old, new = rows_by_pattern(locked_rows), rows_by_pattern(now_rows)
        for pattern in sorted(set(old) | set(new)):
            if old.get(pattern, []) != new.get(pattern, []):  # whole rows: `quantized` counts too
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


def _rows(rows: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(row_text(row) for row in rows) if rows else "absent"
