"""Module-table rows and lock values as one line of text: shared by ``diff`` and ``verify`` so both word a
row the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def value_text(value: Any) -> str:
    """A lock value in a change sentence: ``absent`` for none, a digest shortened to 12 hex digits."""
    if value is None:
        return "absent"
    if isinstance(value, str) and value.startswith("sha256:"):
        return value[7:19] + "…"
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={value_text(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def rows_by_pattern(rows: list[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Module table rows per pattern: one pattern has several rows when its layers differ (``rank_pattern``)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row["pattern"]), []).append(row)
    return out


def row_text(row: Mapping[str, Any]) -> str:
    """One module-table row: its layers, kind, base shape, rank and LoRA shapes."""
    quantized = f" ({row['quantized']})" if row.get("quantized") else ""
    return (
        f"layers {row['layers']}: {row['count']}× {row['kind']}{quantized} base {value_text(row['base-shape'])}, "
        f"rank {row['rank']}, lora_A {value_text(row['lora-a'])}, lora_B {value_text(row['lora-b'])}"
    )
