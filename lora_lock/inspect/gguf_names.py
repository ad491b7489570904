"""What transformers makes of a GGUF file, from the generated table ``data/gguf-names.json``.

The table (written by ``scripts/gen_gguf_names.py`` from transformers' GGUF loader and the ``gguf`` package, with
their versions recorded) holds the ggml tensor types, and per ``general.architecture``: the transformers
``model_type`` it loads as, which metadata key fills each config attribute, and how each llama.cpp tensor name
(``blk.N.attn_q.weight``) maps to the transformers parameter (``model.layers.N.self_attn.q_proj.weight``), with
whether the file stores it as the parameter is shaped, transposed, or merged with others. Nothing here imports
torch, transformers or gguf.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "gguf-names.json"

_BLOCK = re.compile(r"blk\.(\d{1,9})\.")

SAME, TRANSPOSED, MERGED = "same", "transposed", "merged"


@dataclass(frozen=True)
class ArchNames:
    """One GGUF architecture as transformers reads it."""

    arch: str
    model_type: str
    model_class: str
    config: dict[str, str]  # transformers config attribute → metadata sub-key (``@tokenizer.ggml.tokens``: count)
    tensors: dict[str, tuple[str, str]]  # gguf name template → (transformers name template, layout)
    tie_always: bool

    def map_name(self, gguf_name: str) -> tuple[str, str] | None:
        """``blk.3.attn_q.weight`` → ``("model.layers.3.self_attn.q_proj.weight", "same")``; ``None`` if the
        architecture's loader has no parameter for it."""
        match = _BLOCK.match(gguf_name)
        if match is None:
            return self.tensors.get(gguf_name)
        template = "blk.{bid}." + gguf_name[match.end() :]
        found = self.tensors.get(template)
        if found is None:
            return None
        return found[0].replace("{bid}", match[1]), found[1]


@functools.cache
def _table() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DATA.read_text(encoding="utf-8"))
    return doc


@functools.cache
def _types() -> dict[int, tuple[str, int, int]]:
    return {int(k): (v["name"], int(v["block_size"]), int(v["type_size"])) for k, v in _table()["ggml_types"].items()}


def ggml_type(type_id: int) -> tuple[str, int, int] | None:
    """``(name, elements per block, bytes per block)`` of a ggml tensor type, or ``None`` if unknown."""
    return _types().get(type_id)


@functools.cache
def architecture(arch: str) -> ArchNames | None:
    """The table's entry for a ``general.architecture`` value, or ``None`` if transformers cannot load it."""
    entry = _table()["architectures"].get(arch)
    if entry is None:
        return None
    return ArchNames(
        arch=arch,
        model_type=str(entry["model_type"]),
        model_class=str(entry["model_class"]),
        config={str(k): str(v) for k, v in entry["config"].items()},
        tensors={str(k): (str(v[0]), str(v[1])) for k, v in entry["tensors"].items()},
        tie_always=bool(entry["tie_always"]),
    )


def known_architectures() -> list[str]:
    """Every ``general.architecture`` the pinned transformers loads from GGUF."""
    return sorted(_table()["architectures"])
