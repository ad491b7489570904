"""Per-module shape checks: each adapter LoRA module against the built model's layer (or fused parameter) it
lands in, folded into one finding per pattern with a count, and the resolved module table ``generate`` records.

PEFT builds each LoRA layer from the config's ``r`` / ``rank_pattern`` and the layer's features, then loads the
saved tensors into it: any other shape is a ``size mismatch`` error at load. ``ParamWrapper`` layers
(``target_parameters`` on a fused ``[experts, a, b]`` tensor) hold ``lora_A [r·experts, b]``, ``lora_B [a, r·experts]``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from lora_lock.compat.keys import LoraModule
from lora_lock.findings import Category, Finding, Severity
from lora_lock.inspect.adapter import AdapterConfig
from lora_lock.inspect.model_config import ModelFacts
from lora_lock.inspect.modules import BaseModule, Kind, compact_ranges, layer_indices, pattern_of
from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.text import shape_brackets


def where(paths: list[str]) -> str:
    """``(in a.b)``, ``(3 modules, layers 0-2)`` or ``(3 modules)``: where a finding applies."""
    layers = [idx[0] for idx in (layer_indices(p) for p in paths) if idx]
    if len(paths) == 1:
        return f"(in {paths[0]})"
    if layers:
        return f"({len(paths)} modules, layers {compact_ranges(layers)})"
    return f"({len(paths)} modules)"


_LORA_KINDS = (Kind.LINEAR, Kind.CONV1D, Kind.EMBEDDING, Kind.CONV)

RowKey = tuple[str, str, tuple[int, ...], int, tuple[int, ...], tuple[int, ...], str | None]


@dataclass(frozen=True)
class ModuleGroup:
    """A row of the resolved module table: modules sharing a pattern, kind and shapes."""

    pattern: str
    count: int
    layers: str
    kind: str
    base_shape: tuple[int, ...]
    rank: int
    lora_a: tuple[int, ...]
    lora_b: tuple[int, ...]
    quantized: str | None = None


@dataclass(frozen=True)
class Problem:
    """One module's mismatch, before grouping: modules with the same problem and pattern share a finding."""

    code: str
    category: Category
    severity: Severity
    expected: str
    actual: str
    hint: str = ""


class Grouper:
    """Collects per-module problems and folds those sharing a pattern into one finding with a count."""

    def __init__(self) -> None:
        self.groups: dict[tuple[Problem, str], list[str]] = defaultdict(list)

    def add(self, path: str, problem: Problem) -> None:
        """Record one module's mismatch; modules with the same problem (code, expected and actual values) and
        pattern share a finding."""
        self.groups[(problem, pattern_of(path))].append(path)

    def findings(self, describe: dict[str, str]) -> list[Finding]:
        """One finding per group, in the order groups were first seen: the message (from ``describe``, by code)
        names the module pattern and the layers it covers."""
        out = []
        for (problem, pattern), paths in self.groups.items():
            located = where(paths)
            text = describe[problem.code].format(expected=problem.expected, actual=problem.actual)
            out.append(
                Finding(
                    code=problem.code,
                    category=problem.category,
                    severity=problem.severity,
                    message=f"{pattern.rpartition('.')[2]}: {text} {located}",
                    subject=pattern,
                    expected=problem.expected,
                    actual=problem.actual,
                    hint=problem.hint or None,
                )
            )
        return out


DESCRIBE = {
    "COMPAT-SHAPE": "adapter LoRA shapes {actual} do not fit the base layer, which needs {expected}",
    "COMPAT-RANK": "rank mismatch: expected {expected}, found {actual}",
    "COMPAT-KIND": "the adapter holds {actual} but the base module is {expected}",
    "ADAPTER-INCOMPLETE": "the adapter has {actual} but not {expected}",
    "COMPAT-SAVED-SHAPE": "saved module is {actual} but the base has {expected}",
}


def _shape_hint(leaf: str, axis: str, adapter_dim: int, base_dim: int, facts: ModelFacts) -> str:
    head_dim = facts.head_dim
    if axis == "out" and head_dim and adapter_dim % head_dim == 0:
        if leaf in ("k_proj", "v_proj") and facts.num_key_value_heads:
            return (
                f"the adapter was trained on a base with {adapter_dim // head_dim} KV heads of size {head_dim};"
                f" this base has {facts.num_key_value_heads} (grouped-query attention differs)"
            )
        if leaf == "q_proj" and facts.num_attention_heads:
            return (
                f"the adapter was trained on a base with {adapter_dim // head_dim} attention heads;"
                f" this base has {facts.num_attention_heads}"
            )
    if facts.vocab_size is not None and base_dim == facts.vocab_size:
        return (
            f"the adapter was trained with a vocabulary of {adapter_dim} tokens; this base has {base_dim}:"
            " the tokenizer changed"
        )
    if facts.hidden_size is not None and base_dim == facts.hidden_size:
        return f"the adapter was trained on hidden size {adapter_dim}; this base has {base_dim}"
    if facts.intermediate_size is not None and base_dim == facts.intermediate_size:
        return f"the adapter was trained on an MLP size of {adapter_dim}; this base has {base_dim}"
    return f"the adapter was trained on a different base ({axis} features {adapter_dim} vs {base_dim} here)"


def base_shape(base: BaseModule) -> tuple[int, ...]:
    """A base module's weight shape as PEFT reads it for LoRA: ``(in, out)`` for an embedding, ``(out, in)``
    otherwise (0 for an unknown dimension)."""
    if base.kind is Kind.EMBEDDING:
        return (base.in_features or 0, base.out_features or 0)
    return (base.out_features or 0, base.in_features or 0)


def expected_lora(base: BaseModule, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ``(lora_A, lora_B)`` shapes PEFT builds for ``base`` at ``rank``: ``(r, in)`` and ``(out, r)``."""
    if base.kind is Kind.EMBEDDING:
        return (rank, base.in_features or 0), (base.out_features or 0, rank)
    return (rank, base.in_features or 0), (base.out_features or 0, rank)


@dataclass(frozen=True)
class Placement:
    """One adapter LoRA module (``path`` in the adapter's namespace), the base layer PEFT wraps for it, and the
    rank PEFT builds that layer with."""

    path: str
    lora: LoraModule
    base: BaseModule
    rank: int


def _incomplete(lm: LoraModule) -> Problem:
    return Problem(
        "ADAPTER-INCOMPLETE",
        Category.ADAPTER,
        Severity.ERROR,
        "lora_A and lora_B",
        ", ".join(sorted(lm.parts)),
        "the adapter file is damaged or was saved by a tool that drops tensors; re-save it with PEFT",
    )


def _kind_problem(lm: LoraModule, base: BaseModule) -> Problem | None:
    """The tensors are for another layer type than the base's: PEFT drops them."""
    if base.kind not in _LORA_KINDS:
        return Problem(
            "COMPAT-KIND",
            Category.COMPAT,
            Severity.ERROR,
            f"a {shape_brackets(base.weight_shape)} parameter PEFT cannot wrap",
            "LoRA weights",
            "the module of this name is something else in this base (renamed architecture?)",
        )
    if (base.kind is Kind.EMBEDDING) != lm.embedding_style:
        return Problem(
            "COMPAT-KIND",
            Category.COMPAT,
            Severity.ERROR,
            "an embedding" if base.kind is Kind.EMBEDDING else f"a {base.kind.value} layer",
            "embedding LoRA (lora_embedding_A/B)" if lm.embedding_style else "linear LoRA (lora_A/B)",
            "the module changed type between the adapter's base and this one",
        )
    return None


def _inconsistent_rank(ra: int, rb: int) -> Problem:
    return Problem(
        "COMPAT-RANK",
        Category.ADAPTER,
        Severity.ERROR,
        f"lora_B rank {ra} (as lora_A)",
        f"lora_B rank {rb}",
        "the adapter file is inconsistent; re-save it with PEFT",
    )


def _config_rank(configured: int, ra: int) -> Problem:
    return Problem(
        "COMPAT-RANK",
        Category.ADAPTER,
        Severity.ERROR,
        f"r={configured} (adapter_config.json)",
        f"r={ra} (tensors)",
        "PEFT builds layers from the config's r / rank_pattern and fails to load "
        "tensors of another rank; fix r or rank_pattern in adapter_config.json",
    )


def _feature_problem(facts: ModelFacts, place: Placement, a: TensorInfo, b: TensorInfo) -> Problem | None:
    """``lora_A``'s input or ``lora_B``'s output features differ from the base layer's: a ``size mismatch``."""
    base = place.base
    exp_a, exp_b = expected_lora(base, a.shape[0] if a.shape else 0)
    in_actual = a.shape[1] if len(a.shape) > 1 else -1
    out_actual = b.shape[0]
    if in_actual == exp_a[1] and out_actual == exp_b[0]:
        return None
    axis, got, want = ("in", in_actual, exp_a[1]) if in_actual != exp_a[1] else ("out", out_actual, exp_b[0])
    if base.kind is Kind.EMBEDDING:
        axis = "out" if axis == "in" else "in"  # embedding: A spans the vocabulary, B the embedding size
    return Problem(
        "COMPAT-SHAPE",
        Category.COMPAT,
        Severity.ERROR,
        f"lora_A {shape_brackets(exp_a)}, lora_B {shape_brackets(exp_b)} (base {shape_brackets(base_shape(base))})",
        f"lora_A {shape_brackets(a.shape)}, lora_B {shape_brackets(b.shape)}",
        _shape_hint(place.path.rpartition(".")[2], axis, got, want, facts),
    )


def _per_output_problems(lm: LoraModule, out: int) -> list[Problem]:
    """DoRA magnitude and LoRA bias tensors that do not have one entry per output."""
    problems = []
    for part in ("magnitude", "B_bias"):
        extra = lm.parts.get(part)
        if extra is not None and not _per_output(tuple(extra.shape), out):
            problems.append(
                Problem(
                    "COMPAT-SHAPE",
                    Category.COMPAT,
                    Severity.ERROR,
                    f"{part} {shape_brackets((out,))}",
                    f"{part} {shape_brackets(extra.shape)}",
                    "DoRA magnitude and LoRA bias have one entry per output",
                )
            )
    return problems


def check_module(
    config: AdapterConfig, facts: ModelFacts, place: Placement, grouper: Grouper, rows: dict[RowKey, list[str]]
) -> str:
    """Check one adapter LoRA module against the base layer PEFT wraps; problems go to ``grouper``, the row to
    ``rows``.

    Returns ``ok``, ``incomplete`` (a part is missing), ``kind`` (the tensors are for another layer type: PEFT
    drops them) or ``shape`` (PEFT's load raises ``size mismatch``)."""
    path, lm, base = place.path, place.lora, place.base
    a, b = lm.parts.get("A"), lm.parts.get("B")
    if a is None or b is None:
        grouper.add(path, _incomplete(lm))
        return "incomplete"
    kind = _kind_problem(lm, base)
    if kind is not None:
        grouper.add(path, kind)
        return "kind"
    ra = a.shape[0] if a.shape else 0
    rb = b.shape[1] if len(b.shape) > 1 else -1
    if ra != rb:
        grouper.add(path, _inconsistent_rank(ra, rb))
        return "shape"
    status = "ok"
    if config.peft_type == "LORA" and ra != place.rank:
        status = "shape"
        grouper.add(path, _config_rank(place.rank, ra))
    features = _feature_problem(facts, place, a, b)
    if features is not None:
        grouper.add(path, features)
        return "shape"
    for problem in _per_output_problems(lm, expected_lora(base, ra)[1][0]):
        status = "shape"
        grouper.add(path, problem)
    rows[
        (pattern_of(path), base.kind.value, base_shape(base), ra, tuple(a.shape), tuple(b.shape), base.quantized)
    ].append(path)
    return status


def _per_output(shape: tuple[int, ...], out: int) -> bool:
    """One entry per output: ``[out]``, or ``[1, out, 1, …]`` (PEFT's DoRA on a conv layer keeps the weight's
    other axes as 1s)."""
    return shape == (out,) or (
        len(shape) > 1 and shape[1] == out and all(d == 1 for i, d in enumerate(shape) if i != 1)
    )


def _param_fits(shape: tuple[int, ...], rank: int, a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether ``lora_A`` / ``lora_B`` fit PEFT's ``ParamWrapper`` on a parameter of ``shape`` at ``rank``.

    A 3-d ``[experts, x, y]`` parameter gets ``lora_A [r·experts, y]``, ``lora_B [x, r·experts]`` (the other way round
    for expert modules transformers marks ``is_transposed``, which the checkpoint does not say: both are accepted);
    a 2-d ``[out, in]`` one ``lora_A [r, in]``, ``lora_B [out, r]``.
    """
    if len(shape) == 3:
        experts, x, y = shape
        wide = rank * experts
        return (a, b) in (((wide, y), (x, wide)), ((wide, x), (y, wide)))
    if len(shape) == 2:
        return a == (rank, shape[1]) and b == (shape[0], rank)
    return False


def check_param_module(
    path: str,
    lm: LoraModule,
    params: list[tuple[str, TensorInfo, int]],
    grouper: Grouper,
    rows: dict[RowKey, list[str]],
) -> str:
    """Check one ``ParamWrapper`` level (``experts`` or ``experts.base_layer``) against the parameters PEFT wraps in
    that module: ``params`` is (parameter name, its tensor, the rank PEFT builds it with)."""
    a, b = lm.parts.get("A"), lm.parts.get("B")
    if a is None or b is None:
        grouper.add(path, _incomplete(lm))
        return "incomplete"
    sa, sb = tuple(a.shape), tuple(b.shape)
    for name, info, rank in params:
        if _param_fits(tuple(info.shape), rank, sa, sb):
            key: RowKey = (pattern_of(f"{path}.{name}"), "parameter", tuple(info.shape), rank, sa, sb, None)
            rows[key].append(path)
            return "ok"
    wanted = "; ".join(
        f"{name} {shape_brackets(info.shape)} at r={rank}: "
        f"lora_A [{rank * (info.shape[0] if len(info.shape) == 3 else 1)}, …]"
        for name, info, rank in params
    )
    grouper.add(
        path,
        Problem(
            "COMPAT-SHAPE",
            Category.COMPAT,
            Severity.ERROR,
            f"a LoRA pair for one of the wrapped parameters ({wanted})",
            f"lora_A {shape_brackets(sa)}, lora_B {shape_brackets(sb)}",
            "target_parameters LoRA has rank × experts rows; the adapter was trained on a base with other expert "
            "shapes or another number of experts",
        ),
    )
    return "shape"


def table(rows: dict[RowKey, list[str]]) -> tuple[ModuleGroup, ...]:
    """The resolved module table: one row per (pattern, kind, shapes), with the count and layers."""
    return tuple(
        ModuleGroup(
            pattern=k[0],
            count=len(v),
            layers=compact_ranges(i[0] for i in map(layer_indices, v) if i),
            kind=k[1],
            base_shape=k[2],
            rank=k[3],
            lora_a=k[4],
            lora_b=k[5],
            quantized=k[6],
        )
        for k, v in sorted(
            rows.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3], kv[0][4], kv[0][5], kv[0][6] or "")
        )
    )
