"""The shapes transformers' (and PEFT's) conversion operations produce, without tensors.

Each operation maps ``{pattern: [shape, ...] | shape}`` to the same kind of dict, naming its outputs as the
library's ``convert`` does (first op of a chain keeps source patterns, the last one names the targets).
An operation whose result depends on the built model (``Split`` sizes its pieces from the model's parameters,
``Transpose(check_dims=True)`` looks at the parameter's shape) or that this module does not know raises
:class:`Unmodelled`; the caller reports it and the probe tier confirms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from lora_lock.errors import Unmodelled

Shape = tuple[int, ...]
Value = Union[Shape, list[Shape]]  # noqa: UP007 (a runtime alias on Python 3.10)


def _single(value: Value) -> Shape:
    if isinstance(value, list):
        if not value:
            raise Unmodelled("no tensor collected")
        return value[0]
    return value


def _dim(dim: Any, ndim: int) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or not -ndim - 1 <= dim <= ndim:
        raise Unmodelled(f"dimension {dim!r} does not fit a {ndim}-d tensor")
    return dim + ndim if dim < 0 else dim


def _merge(op: Mapping[str, Any], data: dict[str, Value], sources: list[str], targets: list[str]) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for pattern, value in data.items():
        shapes = value if isinstance(value, list) else [value]
        if len(set(shapes)) != 1:
            raise Unmodelled(f"experts of {pattern} have different shapes {sorted(set(shapes))}")
        shape = shapes[0]
        d = _dim(op.get("dim", 0), len(shape))
        name = targets[0] if len(data) == 1 else pattern
        out[name] = (*shape[:d], len(shapes), *shape[d:])
    return out


def _concat(op: Mapping[str, Any], data: dict[str, Value], sources: list[str], targets: list[str]) -> dict[str, Value]:
    shapes: list[Shape] = []
    for pattern in sources:
        if pattern in data:
            value = data[pattern]
            shapes.extend(value if isinstance(value, list) else [value])
    if not shapes:
        raise Unmodelled("nothing to concatenate")
    d = _dim(op.get("dim", 0), len(shapes[0]))
    rest = {(*s[:d], *s[d + 1 :]) for s in shapes}
    if len(rest) != 1 or len({len(s) for s in shapes}) != 1:
        raise Unmodelled(f"cannot concatenate shapes {shapes} along dim {d}")
    first = shapes[0]
    return {targets[0]: (*first[:d], sum(s[d] for s in shapes), *first[d + 1 :])}


def _chunk(
    op: Mapping[str, Any], data: dict[str, Value], targets: list[str], config: Mapping[str, Any]
) -> dict[str, Value]:
    shape = _single(next(iter(data.values())))
    attr = op.get("num_shards_attribute")
    if attr is not None:
        text = config.get("text_config") if isinstance(config.get("text_config"), Mapping) else config
        count = text.get(str(attr)) if isinstance(text, Mapping) else None
        if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= 4096:
            raise Unmodelled(f"Chunk needs config field {attr!r}, found {count!r}")
        targets = [targets[0].replace("*", str(i)) for i in range(count)]
    d = _dim(op.get("dim", 0), len(shape))
    size = shape[d]
    step = math.ceil(size / len(targets)) if targets else 0
    pieces = [min(step, size - i * step) for i in range(len(targets)) if step and size - i * step > 0]
    return {
        t: (*shape[:d], n, *shape[d + 1 :]) for t, n in zip(targets, pieces, strict=False)
    }  # torch.chunk may give fewer


def _transpose(
    op: Mapping[str, Any], data: dict[str, Value], sources: list[str], targets: list[str]
) -> dict[str, Value]:
    if op.get("check_dims"):
        raise Unmodelled("Transpose(check_dims=True) transposes only when the built parameter's shape differs")
    shape = _single(next(iter(data.values())))
    a, b = _dim(op.get("dim0", 0), len(shape) - 1), _dim(op.get("dim1", 1), len(shape) - 1)
    name = sources[0] if len(targets) > 1 else targets[0]
    out = list(shape)
    out[a], out[b] = out[b], out[a]
    return {name: tuple(out)}


def _same_shape(data: dict[str, Value], sources: list[str], targets: list[str]) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for pattern, value in data.items():
        if len(targets) == 1 and len(sources) == 1:
            name = targets[0]
        else:
            name = pattern
        out[name] = _single(value)
    return out


def _conv3d_to_linear(data: dict[str, Value], sources: list[str], targets: list[str]) -> dict[str, Value]:
    shape = _single(next(iter(data.values())))
    name = sources[0] if len(targets) > 1 else targets[0]
    if len(shape) == 5:
        return {name: (shape[0], math.prod(shape[1:]))}
    if len(shape) == 2:
        return {name: shape}
    raise Unmodelled(f"Conv3dToLinear expects a 5-d or 2-d tensor, found {list(shape)}")


def _flatten(op: Mapping[str, Any], data: dict[str, Value]) -> dict[str, Value]:
    dims = op.get("dims", (0,))
    dims = [dims] if isinstance(dims, int) else list(dims)
    out: dict[str, Value] = {}
    for name, value in data.items():
        shape = _single(value)
        start = _dim(dims[0], len(shape) - 1)
        end = _dim(dims[1], len(shape) - 1) if len(dims) > 1 else len(shape) - 1
        out[name] = (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])
    return out


def _permute(op: Mapping[str, Any], data: dict[str, Value]) -> dict[str, Value]:
    dims = [int(d) for d in op.get("dims", ())]
    out: dict[str, Value] = {}
    for name, value in data.items():
        shape = _single(value)
        if sorted(dims) != list(range(len(shape))):
            raise Unmodelled(f"cannot permute {list(shape)} by {dims}")
        out[name] = tuple(shape[d] for d in dims)
    return out


def _peft_concat(data: dict[str, Value], sources: list[str], layer_name: str) -> dict[str, Value]:
    ordered = [_single(data[s]) for s in sources if s in data]
    dims = {len(s) for s in ordered}
    if dims == {2}:
        return {layer_name: (sum(s[0] for s in ordered), sum(s[1] for s in ordered))}
    if dims == {3} and len(ordered) >= 2 and len({s[0] for s in ordered}) == 1:
        experts = ordered[0][0]
        return {layer_name: (sum(s[1] for s in ordered), sum(s[2] for s in ordered) * experts)}
    raise Unmodelled(f"PEFT's block-diagonal concatenation refuses shapes {ordered}")


@dataclass(frozen=True)
class _Call:
    """What a converter's operations share besides the shapes: its patterns, the layer and the model config."""

    sources: list[str]
    targets: list[str]
    layer_name: str
    config: Mapping[str, Any]


_Op = Callable[[Mapping[str, Any], dict[str, Value], _Call], dict[str, Value]]

#: Operation name → its shape rule (``Split`` and unknown names are :class:`Unmodelled`).
_OPS: dict[str, _Op] = {
    "MergeModulelist": lambda op, data, call: _merge(op, data, call.sources, call.targets),
    "Concatenate": lambda op, data, call: _concat(op, data, call.sources, call.targets),
    "Chunk": lambda op, data, call: _chunk(op, data, call.targets, call.config),
    "Transpose": lambda op, data, call: _transpose(op, data, call.sources, call.targets),
    "PermuteForRope": lambda op, data, call: _same_shape(data, call.sources, call.targets),
    "Interleave": lambda op, data, call: {call.targets[0]: _single(next(iter(data.values())))},
    "Conv3dToLinear": lambda op, data, call: _conv3d_to_linear(data, call.sources, call.targets),
    "FlattenDims": lambda op, data, call: _flatten(op, data),
    "PermuteDims": lambda op, data, call: _permute(op, data),
    "PeftConcatenate": lambda op, data, call: _peft_concat(data, call.sources, call.layer_name),
}


def apply_ops(
    ops: Sequence[Mapping[str, Any]],
    data: dict[str, Value],
    sources: list[str],
    targets: list[str],
    *,
    layer_name: str,
    config: Mapping[str, Any],
) -> dict[str, Value]:
    """Run a converter's operations on collected shapes; output keys are patterns (or ``layer_name`` for PEFT)."""
    call = _Call(sources, targets, layer_name, config)
    for op in ops:
        name = op.get("op")
        if name == "Split":
            raise Unmodelled("Split sizes its pieces from the built model's parameters")
        rule = _OPS.get(name) if isinstance(name, str) else None
        if rule is None:
            raise Unmodelled(f"operation {name} is not modelled statically")
        data = rule(op, data, call)
    return data
