"""Module-table rows and lock values as one line of text: shared by ``diff`` and ``verify`` so both word a
row the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lora_lock.lock.model import ModuleRow


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


def rows_by_pattern(rows: Sequence[ModuleRow]) -> dict[str, list[ModuleRow]]:
    """Module table rows per pattern: one pattern has several rows when its layers differ (``rank_pattern``)."""
    out: dict[str, list[ModuleRow]] = {}
    for row in rows:
        out.setdefault(row.pattern, []).append(row)
    return out


def row_text(r: ModuleRow) -> str:
    """One module-table row: its layers, kind, base shape, rank and LoRA shapes."""
    quantized = f" ({r.quantized})" if r.quantized else ""
    return (
        f"layers {r.layers}: {r.count}× {r.kind}{quantized} base {value_text(r.base_shape)}, "
        f"rank {r.rank}, lora_A {value_text(r.lora_a)}, lora_B {value_text(r.lora_b)}"
    )
