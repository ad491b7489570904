"""Identity facts of a base model from its ``config.json`` (no transformers import)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError
from lora_lock.inspect.checkpoint import read_json
from lora_lock.text import brief

# Different model families spell the same fact differently; the first present key wins.
_ALIASES: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim", "model_dim"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "hidden_dim", "ffn_hidden_size"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "num_key_value_heads": ("num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num"),
    "head_dim": ("head_dim",),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
}


@dataclass(frozen=True)
class Quantization:
    """The quantization format of a checkpoint: ``method`` plus the parameters that change the stored layout."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The method with its recorded parameters, sorted: ``bitsandbytes(load_in_4bit=True, ...)``."""
        inner = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.method}({inner})" if inner else self.method


#: Parameters worth recording per method (they change the stored layout or the numerics).
_QUANT_KEYS: dict[str, tuple[str, ...]] = {
    "bitsandbytes": (
        "load_in_4bit",
        "load_in_8bit",
        "bnb_4bit_quant_type",
        "bnb_4bit_use_double_quant",
        "bnb_4bit_compute_dtype",
        "bnb_4bit_quant_storage",
        "llm_int8_skip_modules",
    ),
    "gptq": ("bits", "group_size", "desc_act", "sym", "checkpoint_format"),
    "awq": ("bits", "group_size", "zero_point", "version"),
}


@dataclass(frozen=True)
class ModelFacts:
    """What identifies a base and decides whether an adapter's shapes fit it."""

    architecture: str | None
    model_type: str | None
    hidden_size: int | None
    intermediate_size: int | None
    num_hidden_layers: int | None
    num_attention_heads: int | None
    num_key_value_heads: int | None
    head_dim: int | None
    vocab_size: int | None
    tie_word_embeddings: bool
    dtype: str | None
    quantization: Quantization | None

    def identity(self) -> dict[str, Any]:
        """The facts as a flat, JSON/TOML-friendly mapping (``None`` values left out)."""
        out: dict[str, Any] = {
            "architecture": self.architecture,
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
        }
        return {k: v for k, v in out.items() if v is not None}


def read_model_facts(path: Path, doc: dict[str, Any] | None = None) -> ModelFacts:
    """Read ``config.json``; nested ``text_config`` (multimodal models) fills facts the top level lacks.

    ``doc``: the file's JSON object when the caller has read it already (with :func:`read_json`; not modified)."""
    if doc is None:
        doc = read_json(path)
    text = doc.get("text_config") if isinstance(doc.get("text_config"), dict) else {}
    assert isinstance(text, dict)
    sources = (doc, text)

    architectures = doc.get("architectures")
    architecture = None
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        architecture = architectures[0]
    model_type = doc.get("model_type") if isinstance(doc.get("model_type"), str) else None

    hidden, heads, kv_heads, head_dim = _attention_shape(path, sources)
    tie = doc.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
    dtype = doc.get("dtype", doc.get("torch_dtype", text.get("dtype", text.get("torch_dtype"))))
    return ModelFacts(
        architecture=architecture,
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=_pick(path, sources, "intermediate_size"),
        num_hidden_layers=_pick(path, sources, "num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_pick(path, sources, "vocab_size"),
        tie_word_embeddings=bool(tie),
        dtype=dtype if isinstance(dtype, str) else None,
        quantization=_quantization(path, doc.get("quantization_config")),
    )


_Sources = tuple[dict[str, Any], dict[str, Any]]


def _attention_shape(path: Path, sources: _Sources) -> tuple[int | None, int | None, int | None, int | None]:
    """(hidden size, attention heads, key/value heads, head dim), each derived from the others when unstated:
    ``multi_query`` means one key/value head, no key/value heads means as many as the attention heads."""
    hidden = _pick(path, sources, "hidden_size")
    heads = _pick(path, sources, "num_attention_heads")
    kv_heads = _pick(path, sources, "num_key_value_heads")
    if kv_heads is None and sources[0].get("multi_query") is True:
        kv_heads = 1
    if kv_heads is None:
        kv_heads = heads
    head_dim = _pick(path, sources, "head_dim")
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    return hidden, heads, kv_heads, head_dim


def _pick(path: Path, sources: _Sources, fact: str) -> int | None:
    """The first spelling of ``fact`` present, top level before ``text_config``; ``None`` when none is, or when
    the value is per stage."""
    for source in sources:
        for key in _ALIASES[fact]:
            value = source.get(key)
            if value is None:
                continue
            if _per_stage(value):
                return None  # per-stage values (Swin's num_heads [3, 6, 12, 24]): no single figure
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**40:
                raise InputError(f"{path}: field `{key}` must be an integer from 0 to 2**40, found {brief(value)}")
            return value
    return None


def _per_stage(value: Any) -> bool:
    """A short list of sane integers: one figure per stage of a hierarchical model."""
    return (
        isinstance(value, list)
        and 0 < len(value) <= 64
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**40 for v in value)
    )


def _scalar(value: Any) -> bool:
    """A value the lock can record and compare: no NaN (never equal to itself), no integer beyond 64 bits."""
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return abs(value) < 2**63
    return isinstance(value, float) and math.isfinite(value)


def _quantization(path: Path, raw: Any) -> Quantization | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: field `quantization_config` must be an object, found {type(raw).__name__}")
    method = raw.get("quant_method")
    if not isinstance(method, str):
        if raw.get("load_in_4bit") or raw.get("load_in_8bit"):
            method = "bitsandbytes"
        else:
            raise InputError(f"{path}: field `quantization_config.quant_method` is missing or not a string")
    method = method.lower()
    keys = _QUANT_KEYS.get(method)
    if keys is None:
        params = {k: v for k, v in raw.items() if k != "quant_method" and _scalar(v)}
    else:
        params = {k: raw[k] for k in keys if k in raw and raw[k] is not None}
        for key, value in params.items():
            if not (_scalar(value) or (isinstance(value, list) and all(_scalar(v) for v in value))):
                raise InputError(
                    f"{path}: field `quantization_config.{key}` must be a string, number, boolean or a list of "
                    f"them, found {brief(value)}"
                )
        bits = params.get("bits")
        if method in ("gptq", "awq") and bits is not None and (isinstance(bits, bool) or bits not in (2, 3, 4, 8)):
            raise InputError(f"{path}: field `quantization_config.bits` must be 2, 3, 4 or 8, found {brief(bits)}")
        if method == "bitsandbytes":
            params = {k: v for k, v in params.items() if not (k.startswith("bnb_4bit") and not raw.get("load_in_4bit"))}
    return Quantization(method=method, params=dict(sorted(params.items())))
