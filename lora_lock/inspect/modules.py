"""The base model's modules as PEFT sees them, derived from checkpoint tensor names and shapes.

A checkpoint stores parameters (``<module>.weight``); PEFT targets modules. This turns the first into the second
and works out each module's kind and in/out features, including the layouts that do not say them directly:
GPT-2's ``Conv1D`` (weight stored ``[in, out]``), bitsandbytes 4-bit (packed ``uint8``; the true shape is in the
stored quant state), GPTQ / AWQ (``qweight`` packed along one axis).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from lora_lock.errors import InputError
from lora_lock.inspect.checkpoint import Checkpoint
from lora_lock.inspect.model_config import ModelFacts
from lora_lock.inspect.safetensors_header import TensorInfo


class Kind(str, enum.Enum):
    """What a base module is for LoRA: the layer type decides PEFT's wrapper and the weight's axis order."""

    LINEAR = "linear"
    CONV1D = "conv1d"  # transformers' Conv1D (GPT-2 family): weight [in, out]
    EMBEDDING = "embedding"
    CONV = "conv"  # torch ConvNd: weight [out, in, *kernel]
    OTHER = "other"  # norms, biases-only, anything LoRA cannot wrap


#: Model types whose projection layers are transformers' Conv1D, and the module names that use it.
CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "decision_transformer", "imagegpt"})
CONV1D_NAMES = frozenset({"c_attn", "c_proj", "c_fc", "q_attn"})

#: Leaf names of input embeddings across architectures.
EMBEDDING_NAMES = frozenset(
    {
        "embed_tokens",
        "wte",
        "wpe",
        "word_embeddings",
        "embed_in",
        "embed_positions",
        "position_embeddings",
        "token_type_embeddings",
        "shared",
        "tok_embeddings",
        "embed_out_tokens",
    }
)

_MAX_QUANT_STATE_BYTES = 1 << 20


@dataclass(frozen=True)
class BaseModule:
    """One module of the base: ``in_features`` / ``out_features`` are ``num_embeddings`` / ``embedding_dim``
    for embeddings. ``quantized`` names the storage format when the weight is packed."""

    path: str
    kind: Kind
    in_features: int | None
    out_features: int | None
    weight_shape: tuple[int, ...]
    dtype: str
    quantized: str | None = None
    derived_from: str | None = None  # e.g. lm_head tied to the input embedding


def module_of(name: str) -> tuple[str, str]:
    """Split a parameter name into (module path, parameter), folding bitsandbytes' ``weight.<aux>`` tensors."""
    if ".weight." in name:
        head, _, _ = name.partition(".weight.")
        return head, "weight." + name[len(head) + len(".weight.") :]
    module, _, param = name.rpartition(".")
    return module, param


def base_modules(checkpoint: Checkpoint, facts: ModelFacts) -> dict[str, BaseModule]:
    """Every module of the checkpoint with its kind and features."""
    params: dict[str, dict[str, TensorInfo]] = {}
    for name, info in checkpoint.tensors.items():
        module, param = module_of(name)
        params.setdefault(module, {})[param] = info
    out: dict[str, BaseModule] = {}
    quant = facts.quantization
    for module, group in params.items():
        out[module] = _describe(checkpoint, facts, module, group, quant.method if quant else None)
    return out


def _describe(
    checkpoint: Checkpoint, facts: ModelFacts, path: str, group: dict[str, TensorInfo], method: str | None
) -> BaseModule:
    leaf = path.rpartition(".")[2]
    if "qweight" in group:
        return _packed(facts, path, group, method)
    weight = group.get("weight")
    if weight is None:
        first = next(iter(group.values()))
        return BaseModule(path, Kind.OTHER, None, None, first.shape, first.dtype)
    shape = weight.shape
    state = next((info for p, info in group.items() if p.startswith("weight.quant_state.")), None)
    if state is not None:
        true_shape = _bnb_shape(checkpoint, state)
        fmt = state.name.rpartition("__")[2] or "4bit"
        return BaseModule(path, Kind.LINEAR, true_shape[1], true_shape[0], shape, weight.dtype, f"bitsandbytes-{fmt}")
    if len(shape) == 2:
        quantized = "bitsandbytes-int8" if "SCB" in group else None
        if leaf in EMBEDDING_NAMES:
            return BaseModule(path, Kind.EMBEDDING, shape[0], shape[1], shape, weight.dtype)
        if facts.model_type in CONV1D_MODEL_TYPES and leaf in CONV1D_NAMES:
            return BaseModule(path, Kind.CONV1D, shape[0], shape[1], shape, weight.dtype)
        return BaseModule(path, Kind.LINEAR, shape[1], shape[0], shape, weight.dtype, quantized)
    if len(shape) >= 3:
        return BaseModule(path, Kind.CONV, shape[1], shape[0], shape, weight.dtype)
    return BaseModule(path, Kind.OTHER, None, None, shape, weight.dtype)


def _packed(facts: ModelFacts, path: str, group: dict[str, TensorInfo], method: str | None) -> BaseModule:
    """GPTQ packs ``in`` into int32 rows of ``qweight [in*bits/32, out]``; AWQ packs ``out``: ``[in, out*bits/32]``."""
    qweight = group["qweight"]
    raw_bits = facts.quantization.params.get("bits", 4) if facts.quantization else 4
    bits = raw_bits if isinstance(raw_bits, int) and not isinstance(raw_bits, bool) else 4  # checked in the config
    per_word = 32 // bits if bits in (2, 3, 4, 8) and 32 % bits == 0 else 8
    rows, cols = qweight.shape[0], qweight.shape[1] if len(qweight.shape) > 1 else 1
    if method == "awq":
        in_f, out_f = rows, cols * per_word
    else:
        g_idx = group.get("g_idx")
        in_f = g_idx.shape[0] if g_idx is not None else rows * per_word
        out_f = cols
    scales = group.get("scales")
    if scales is not None and len(scales.shape) == 2:
        out_f = scales.shape[1]
    return BaseModule(path, Kind.LINEAR, in_f, out_f, qweight.shape, qweight.dtype, method or "packed")


def _bnb_shape(checkpoint: Checkpoint, state: TensorInfo) -> tuple[int, int]:
    """bitsandbytes stores the unpacked shape as JSON in ``weight.quant_state.bitsandbytes__<type>``."""
    header = next(h for h in checkpoint.headers if state.name in h.tensors and h.tensors[state.name] is state)
    length = state.end - state.begin
    if length > _MAX_QUANT_STATE_BYTES or header.read_data is None:
        raise InputError(f"{header.path}: quant state {state.name!r} cannot be read ({length} bytes)")
    try:
        doc = json.loads(header.read_data(state.begin, length))
        shape = doc["shape"]
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(d, int) for d in shape)):
            raise ValueError("field `shape` is not a pair of integers")
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{header.path}: cannot read the bitsandbytes quant state {state.name!r} ({exc})",
            hint="the checkpoint is corrupt or from an unknown bitsandbytes version",
        ) from exc
    return shape[0], shape[1]


_LAYER = re.compile(r"\.(\d+)(?=\.|$)")


def pattern_of(path: str) -> str:
    """``model.layers.3.self_attn.q_proj`` → ``model.layers.*.self_attn.q_proj``."""
    return _LAYER.sub(".*", path)


def layer_indices(path: str) -> tuple[int, ...]:
    """The layer numbers in a module path (``model.layers.3.mlp`` → ``(3,)``); a digit run too long to be an
    index is skipped."""
    # A digit run too long for a layer index (a crafted name) is not one; int() would refuse it anyway.
    return tuple(int(m) for m in _LAYER.findall(path) if len(m) <= 18)


def compact_ranges(numbers: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0-2,5,7-8"``."""
    values = sorted(set(numbers))
    if not values:
        return ""
    parts: list[str] = []
    start = prev = values[0]
    for v in values[1:]:
        if v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = v
    parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)
