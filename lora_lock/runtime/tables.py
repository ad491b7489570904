"""The generated rule tables (``data/transformers.json``, ``data/peft.json``), loaded once per process.

``scripts/gen_rule_tables.py`` writes them from the installed transformers and PEFT; nothing here imports those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lora_lock.errors import TableError

DATA = Path(__file__).resolve().with_name("data")
FORMAT = 1


@dataclass(frozen=True)
class TransformersTable:
    """transformers' conversion rules: transforms, the identifiers that select them, architectures' sub-models."""

    version: str
    transforms: list[dict[str, Any]]
    mappings: dict[str, list[int]]
    #: class name → [model_type, base_model_prefix, index into ``trees``]
    architectures: dict[str, list[Any]]
    #: shared sub-model trees (without the root): [module path, class, model_type, config key]
    trees: list[list[list[Any]]]
    unbuildable: dict[str, str]
    auto_base_class: dict[str, str]

    def known_model_type(self, model_type: str) -> bool:
        """Whether the table knows this ``model_type`` at all (an auto class or a conversion entry)."""
        return model_type in self.auto_base_class or model_type in self.mappings

    def architecture(self, class_name: str) -> tuple[str, str, list[list[Any]]] | None:
        """(model_type, base_model_prefix, sub-model tree with the root first) of a built class, or None."""
        entry = self.architectures.get(class_name)
        if not isinstance(entry, list) or len(entry) != 3:
            return None
        model_type, prefix, tree = entry
        return str(model_type), str(prefix), [["", class_name, model_type, ""], *self.trees[int(tree)]]


@dataclass(frozen=True)
class PeftTable:
    """PEFT's tables for converting adapters on transformers 5."""

    version: str
    adapter_name: str
    model_to_conversion_pattern: dict[str, str]
    moe_target_module_mapping: dict[str, dict[str, str]]
    moe_fused_targets: dict[str, dict[str, list[str]]]
    prefixes: dict[str, str]
    transforms: list[dict[str, Any]]
    preamble: list[int]
    derived_converters: dict[str, list[int]]


def _read(name: str) -> dict[str, Any]:
    path = DATA / name
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: the shipped rule table cannot be read ({exc}); reinstall lora-lock") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TableError(
            f"{path}: rule table format {data.get('format') if isinstance(data, dict) else '?'} "
            f"is not {FORMAT}; reinstall lora-lock"
        )
    return data


@lru_cache(maxsize=1)
def transformers_table() -> TransformersTable:
    """The transformers table (parsed on first use, then cached)."""
    d = _read("transformers.json")
    return TransformersTable(
        version=str(d["generated_from"]["transformers"]),
        transforms=d["transforms"],
        mappings=d["mappings"],
        architectures=d["architectures"],
        trees=d["trees"],
        unbuildable=d["unbuildable"],
        auto_base_class=d["auto_base_class"],
    )


@lru_cache(maxsize=1)
def peft_table() -> PeftTable:
    """The PEFT table (parsed on first use, then cached)."""
    d = _read("peft.json")
    return PeftTable(
        version=str(d["generated_from"]["peft"]),
        adapter_name=str(d["adapter_name"]),
        model_to_conversion_pattern=d["model_to_conversion_pattern"],
        moe_target_module_mapping=d["moe_target_module_mapping"],
        moe_fused_targets=d["moe_fused_targets"],
        prefixes=d["prefixes"],
        transforms=d["transforms"],
        preamble=d["preamble"],
        derived_converters=d["derived_converters"],
    )
