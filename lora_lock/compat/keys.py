"""The adapter file's side: how PEFT names the tensors it saves, split into LoRA modules and full saved modules.

Sources: ``peft/utils/save_and_load.py`` (saved keys: the adapter name removed, ``base_model.model.`` kept),
``peft/tuners/adalora`` (``lora_A`` / ``lora_B`` / ``lora_E`` are parameters, saved without ``.weight``, with a
``ranknum`` buffer), ``peft/tuners/lora/layer.py`` (``ParamWrapper`` for ``target_parameters``, nested as
``base_layer`` when one module has several targeted parameters), ``peft/utils/other.py`` (``TrainableTokensWrapper``:
``token_adapter.trainable_tokens_delta``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

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
    (".lora_A", "A"),  # AdaLoRA: parameters, saved without ``.weight``
    (".lora_B", "B"),
    (".lora_E", "E"),
    (".ranknum", "ranknum"),
)
#: trainable_token_indices: the per-token delta PEFT saves for a wrapped embedding (not a LoRA pair).
TOKENS_SUFFIX = ".token_adapter.trainable_tokens_delta"

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
        """Whether the module's LoRA is an embedding's (``lora_embedding_A`` / ``_B``: the shapes are transposed)."""
        return any(t.name.endswith(("lora_embedding_A", "lora_embedding_B")) for t in self.parts.values())


@dataclass(frozen=True)
class AdapterKeys:
    """An adapter's tensors sorted by what PEFT does with them on load."""

    lora: dict[str, LoraModule]
    #: full tensors (``modules_to_save`` copies, heads, biases): module → parameter → tensor
    saved: dict[str, dict[str, TensorInfo]]
    #: ``trainable_token_indices`` deltas: module → tensor
    tokens: dict[str, TensorInfo]
    #: keys that still carry an adapter name (PEFT inserts the name on load, so they load nowhere)
    named: list[str]


def strip_peft_prefix(key: str) -> str:
    """``base_model.model.x`` → ``x`` (the model namespace PEFT's names live in)."""
    for prefix in PEFT_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


#: ``…q_proj.lora_A.default.weight``: a raw ``state_dict`` save that kept the adapter name PEFT removes on save.
_NAMED_KEY = re.compile(
    r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)\.(?!weight$|bias$)"
    r"[^.]+(\.weight|\.bias)?$"
)


def split_keys(tensors: Iterable[TensorInfo]) -> AdapterKeys:
    """Split saved tensors into LoRA modules, full saved modules, token deltas and keys with an adapter name."""
    lora: dict[str, LoraModule] = {}
    saved: dict[str, dict[str, TensorInfo]] = {}
    tokens: dict[str, TensorInfo] = {}
    named: list[str] = []
    for info in tensors:
        key = strip_peft_prefix(info.name)
        if _NAMED_KEY.search(key):
            named.append(info.name)
            continue
        if key.endswith(TOKENS_SUFFIX):
            tokens[key[: -len(TOKENS_SUFFIX)]] = info
            continue
        for suffix, part in LORA_PARTS:
            if key.endswith(suffix):
                module = key[: -len(suffix)]
                lora.setdefault(module, LoraModule(module)).parts.setdefault(part, info)
                break
        else:
            if ".base_layer." in key:  # PEFT's save_embedding_layers copy of a LoRA-wrapped module's own weight
                module, _, param = key.partition(".base_layer.")
            else:
                module, _, param = key.rpartition(".")
            saved.setdefault(module, {})[param] = info
    return AdapterKeys(lora, saved, tokens, sorted(named))


def split_adapter_tensors(
    tensors: Iterable[TensorInfo],
) -> tuple[dict[str, LoraModule], dict[str, dict[str, TensorInfo]], list[str]]:
    """(LoRA modules, full saved modules, keys with an adapter name): :func:`split_keys` without token deltas."""
    keys = split_keys(tensors)
    return keys.lora, keys.saved, keys.named


def unwrap_param_module(path: str) -> str:
    """``experts.base_layer`` → ``experts``: nested ``ParamWrapper`` levels of one module (one per parameter)."""
    while path.endswith(".base_layer"):
        path = path[: -len(".base_layer")]
    return path
