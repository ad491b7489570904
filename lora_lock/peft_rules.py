"""PEFT's own rules, mirrored without importing PEFT: how it names saved tensors, which modules ``target_modules``
selects, which rank a module gets, and how a model's module names line up with its checkpoint's tensor names.

Sources: ``peft/utils/save_and_load.py`` (saved keys), ``peft/tuners/tuners_utils.py`` (``check_target_module_exists``),
``peft/utils/other.py`` (``get_pattern_key``), transformers' base-model-prefix handling on load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from lora_lock import userregex
from lora_lock.inspect.adapter import AdapterConfig
from lora_lock.inspect.safetensors_header import TensorInfo

PEFT_PREFIXES = ("base_model.model.", "base_model.")

#: Saved-key suffix → part name. Order matters: longer suffixes first.
LORA_PARTS: tuple[tuple[str, str], ...] = (
    (".lora_A.weight", "A"),
    (".lora_B.weight", "B"),
    (".lora_B.bias", "B_bias"),
    (".lora_embedding_A", "A"),
    (".lora_embedding_B", "B"),
    (".lora_magnitude_vector", "magnitude"),
    (".lora_E", "E"),
    (".ranknum", "ranknum"),
    (".token_adapter.trainable_tokens_delta", "tokens"),
)

#: Task heads that PEFT adds to ``modules_to_save`` by itself for classification tasks.
IMPLICIT_HEADS = {
    "SEQ_CLS": ("classifier", "score"),
    "TOKEN_CLS": ("classifier", "score"),
    "QUESTION_ANS": ("qa_outputs",),
}

#: Output projections that may be tied to the input embedding.
OUTPUT_HEADS = ("lm_head", "embed_out", "output")


@dataclass
class LoraModule:
    """The LoRA tensors an adapter holds for one module (``path`` in the adapter's namespace)."""

    path: str
    parts: dict[str, TensorInfo] = field(default_factory=dict)

    @property
    def embedding_style(self) -> bool:
        return any(t.name.endswith(("lora_embedding_A", "lora_embedding_B")) for t in self.parts.values())


def strip_peft_prefix(key: str) -> str:
    for prefix in PEFT_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


#: ``…q_proj.lora_A.default.weight``: a raw ``state_dict`` save that kept the adapter name PEFT removes on save.
_NAMED_KEY = re.compile(
    r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)\.(?!weight$|bias$)"
    r"[^.]+(\.weight|\.bias)?$"
)


def split_adapter_tensors(
    tensors: Iterable[TensorInfo],
) -> tuple[dict[str, LoraModule], dict[str, dict[str, TensorInfo]], list[str]]:
    """Split saved tensors into LoRA modules, full saved modules (``modules_to_save`` / heads) and keys that still
    carry an adapter name (PEFT inserts the name on load, so those load nowhere)."""
    lora: dict[str, LoraModule] = {}
    saved: dict[str, dict[str, TensorInfo]] = {}
    named: list[str] = []
    for info in tensors:
        key = strip_peft_prefix(info.name)
        if _NAMED_KEY.search(key):
            named.append(info.name)
            continue
        for suffix, part in LORA_PARTS:
            if key.endswith(suffix):
                module = key[: -len(suffix)]
                lora.setdefault(module, LoraModule(module)).parts[part] = info
                break
        else:
            if ".base_layer." in key:  # PEFT's save_embedding_layers copy of a LoRA-wrapped module's own weight
                module, _, param = key.partition(".base_layer.")
            else:
                module, _, param = key.rpartition(".")
            saved.setdefault(module, {})[param] = info
    return lora, saved, sorted(named)


# --- PEFT's target matching (peft/tuners/tuners_utils.py: check_target_module_exists) -------------------------


def _names_match(names: tuple[str, ...] | str, key: str, where: str) -> bool:
    if isinstance(names, str):
        return userregex.fullmatch(names, key, where) is not None
    return key in names or any(key.endswith(f".{n}") for n in names)


#: Longest digit run read as a layer index (a longer one is not a layer index: int() would refuse it anyway).
_MAX_INDEX_DIGITS = 18


def is_targeted(config: AdapterConfig, key: str) -> bool:
    """Whether PEFT would wrap the module named ``key`` (model namespace) with a LoRA layer.

    User patterns run with a time limit (:mod:`lora_lock.userregex`): a pathological one is an InputError.
    """
    where = str(config.path)
    if config.exclude_modules and _names_match(config.exclude_modules, key, f"{where}: exclude_modules"):
        return False
    # PEFT reads modules_to_save entries as regex fragments here (no escaping), so do we.
    if any(userregex.match(rf"(^|.*\.){m}($|\..*)", key, f"{where}: modules_to_save") for m in config.modules_to_save):
        return False
    targets = config.target_modules
    if targets is None:
        return False
    if targets == "all-linear":
        return True  # resolved by the caller: every linear module except the output head
    found = _names_match(targets, key, f"{where}: target_modules")
    if isinstance(targets, str) or not found or not config.layers_to_transform:
        return found
    match = None
    if not config.layers_pattern:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
    else:
        for pattern in config.layers_pattern:
            match = userregex.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", key, f"{where}: layers_pattern")
            if match:
                break
    if match is None or len(match.group("idx")) > _MAX_INDEX_DIGITS:
        return False
    return int(match.group("idx")) in config.layers_to_transform


def rank_for(config: AdapterConfig, key: str) -> int:
    """Per-module rank: the first ``rank_pattern`` key matching ``key`` (PEFT's ``get_pattern_key``), else ``r``."""
    for pattern, rank in config.rank_pattern.items():
        if userregex.match(rf"(.*\.)?({pattern})$", key, f"{config.path}: rank_pattern"):
            return rank
    return config.r


# --- prefix alignment --------------------------------------------------------------------------------------------


def _prefixes(paths: Iterable[str], depth: int = 2) -> set[str]:
    out = {""}
    for path in paths:
        parts = path.split(".")
        for k in range(1, min(depth, len(parts) - 1) + 1):
            out.add(".".join(parts[:k]) + ".")
    return out


def align(adapter_paths: Iterable[str], base_paths: set[str]) -> tuple[str, str]:
    """Find (strip, add) so that ``add + path[len(strip):]`` names base modules for the most adapter modules.

    transformers renames checkpoint keys on load (``gpt2`` stores ``h.0.attn`` for ``transformer.h.0.attn``), so
    the adapter's module names and the base file's tensor names may differ by a leading prefix.
    """
    paths = sorted(set(adapter_paths))
    if not paths:
        return "", ""
    best = ("", "")
    best_score = sum(1 for p in paths if p in base_paths)
    if best_score == len(paths):
        return best
    for strip in sorted(_prefixes(paths), key=len):
        for add in sorted(_prefixes(base_paths, depth=1), key=len):
            if strip == add or (strip and add):
                continue  # transformers adds or strips the base-model prefix; it never swaps one for another
            score = sum(1 for p in paths if p.startswith(strip) and add + p[len(strip) :] in base_paths)
            if score > best_score:
                best, best_score = (strip, add), score
    return best


def to_base(path: str, alignment: tuple[str, str]) -> str:
    strip, add = alignment
    return add + path[len(strip) :] if path.startswith(strip) else path


def to_model(path: str, alignment: tuple[str, str]) -> str:
    strip, add = alignment
    return strip + path[len(add) :] if path.startswith(add) else path
