"""Does an adapter fit a base? The static engine: adapter tensors ↔ base modules, following PEFT's rules.

PEFT saves ``base_model.model.<module>.lora_A.weight`` (adapter name removed) and loads with ``strict=False``:
a tensor whose module the base lacks is dropped without a word. So besides shape errors (loud at load time) the
engine reports what PEFT would silently ignore, and which targeted base modules would get no trained weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from lora_lock.compat_drops import (
    named_keys_finding,
    no_target,
    target_findings,
    unmatched_findings,
    untrained_finding,
    where,
)
from lora_lock.inspect.adapter import AdapterConfig
from lora_lock.inspect.model_config import ModelFacts
from lora_lock.inspect.modules import (
    BaseModule,
    Kind,
    compact_ranges,
    layer_indices,
    pattern_of,
)
from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.models import Category, Finding, Severity
from lora_lock.peft_rules import (
    IMPLICIT_HEADS,
    OUTPUT_HEADS,
    LoraModule,
    align,
    is_targeted,
    rank_for,
    split_adapter_tensors,
    to_base,
    to_model,
)


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
class Fit:
    """What the engine found: findings, the resolved module table, and the prefix alignment it used."""

    findings: tuple[Finding, ...]
    modules: tuple[ModuleGroup, ...]
    saved: tuple[tuple[str, tuple[int, ...]], ...]
    alignment: tuple[str, str]
    lora_modules: int
    matched_modules: int


# --- the engine --------------------------------------------------------------------------------------------------

_LORA_KINDS = (Kind.LINEAR, Kind.CONV1D, Kind.EMBEDDING, Kind.CONV)
_EMBEDDING_PREFERENCE = ("embed_tokens", "wte", "word_embeddings", "embed_in", "shared", "tok_embeddings")


def with_tied_head(modules: dict[str, BaseModule], facts: ModelFacts) -> dict[str, BaseModule]:
    """Add ``lm_head`` derived from the input embedding when the checkpoint leaves it out (tied weights)."""
    if not facts.tie_word_embeddings or any(h in modules for h in OUTPUT_HEADS):
        return modules
    embeddings = [m for m in modules.values() if m.kind is Kind.EMBEDDING]
    if facts.vocab_size is not None:
        embeddings = [m for m in embeddings if m.in_features == facts.vocab_size] or embeddings
    embeddings.sort(key=lambda m: next((i for i, n in enumerate(_EMBEDDING_PREFERENCE) if m.path.endswith(n)), 99))
    if not embeddings:
        return modules
    emb = embeddings[0]
    head = BaseModule(
        "lm_head",
        Kind.LINEAR,
        emb.out_features,
        emb.in_features,
        (emb.in_features or 0, emb.out_features or 0),
        emb.dtype,
        emb.quantized,
        derived_from=emb.path,
    )
    return {**modules, "lm_head": head}


class _Grouper:
    """Collects per-module problems and folds those sharing a pattern into one finding with a count."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, Category, Severity, str, str, str, str], list[str]] = defaultdict(list)

    def add(
        self, code: str, category: Category, severity: Severity, path: str, expected: str, actual: str, hint: str = ""
    ) -> None:
        self.groups[(code, category, severity, pattern_of(path), expected, actual, hint)].append(path)

    def findings(self, describe: dict[str, str]) -> list[Finding]:
        out = []
        for (code, category, severity, pattern, expected, actual, hint), paths in self.groups.items():
            located = where(paths)
            out.append(
                Finding(
                    code=code,
                    category=category,
                    severity=severity,
                    message=f"{pattern.rpartition('.')[2]}: {describe[code].format(expected=expected, actual=actual)}"
                    f" {located}",
                    subject=pattern,
                    expected=expected,
                    actual=actual,
                    hint=hint or None,
                )
            )
        return out


_DESCRIBE = {
    "COMPAT-SHAPE": "adapter LoRA shapes {actual} do not fit the base layer, which needs {expected}",
    "COMPAT-RANK": "rank mismatch: expected {expected}, found {actual}",
    "COMPAT-KIND": "the adapter holds {actual} but the base module is {expected}",
    "ADAPTER-INCOMPLETE": "the adapter has {actual} but not {expected}",
    "COMPAT-SAVED-SHAPE": "saved module is {actual} but the base has {expected}",
}


def _shape(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


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


def fit(
    config: AdapterConfig,
    tensors: Iterable[TensorInfo] | None,
    facts: ModelFacts,
    modules: dict[str, BaseModule],
) -> Fit:
    """Map an adapter onto a base's modules and report every way it does not fit.

    ``tensors`` is the adapter's weights header; ``None`` means config-only (what ``target_modules`` selects).
    """
    modules = with_tied_head(modules, facts)
    lora, saved, named_keys = split_adapter_tensors(tensors or ())
    alignment = align([*lora, *saved], set(modules))
    grouper = _Grouper()
    findings: list[Finding] = []
    rows: dict[tuple[str, str, tuple[int, ...], int, tuple[int, ...], tuple[int, ...], str | None], list[str]] = (
        defaultdict(list)
    )
    unmatched: list[str] = []

    for path, lm in sorted(lora.items()):
        base = modules.get(to_base(path, alignment))
        if base is None:
            unmatched.append(path)
            continue
        _check_module(config, facts, path, lm, base, grouper, rows)

    lora_paths = set(lora)
    targeted = _targeted(config, modules, alignment)
    nothing_targeted = no_target(config, targeted)
    if tensors is not None and nothing_targeted:
        pass  # PEFT raises before loading anything: COMPAT-NO-TARGET below says so; nothing is silently dropped
    elif tensors is not None:
        findings += unmatched_findings(unmatched, lora, modules, alignment, facts)
        untrained = [p for p in targeted if p not in lora_paths]
        if named_keys:
            findings.append(named_keys_finding(named_keys))
        if untrained:
            leaves = {p.rpartition(".")[2] for p in unmatched}
            renamed = any(p.rpartition(".")[2] in leaves for p in untrained)
            findings.append(untrained_finding(untrained, renamed, named_keys=bool(named_keys)))
    else:
        for path in targeted:
            base = modules[to_base(path, alignment)]
            rank = rank_for(config, path)
            a, b = _expected_lora(base, rank)
            rows[(pattern_of(path), base.kind.value, _base_shape(base), rank, a, b, base.quantized)].append(path)
    findings += target_findings(config, modules, alignment, targeted, tensors is not None)
    findings += grouper.findings(_DESCRIBE)
    saved_table, saved_findings = _check_saved(config, facts, saved, modules, alignment, frozenset(lora))
    findings += saved_findings

    table = tuple(
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
        for k, v in sorted(rows.items())
    )
    return Fit(
        findings=tuple(findings),
        modules=table,
        saved=saved_table,
        alignment=alignment,
        lora_modules=len(lora),
        matched_modules=len(lora) - len(unmatched),
    )


def _base_shape(base: BaseModule) -> tuple[int, ...]:
    if base.kind is Kind.EMBEDDING:
        return (base.in_features or 0, base.out_features or 0)
    return (base.out_features or 0, base.in_features or 0)


def _expected_lora(base: BaseModule, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if base.kind is Kind.EMBEDDING:
        return (rank, base.in_features or 0), (base.out_features or 0, rank)
    return (rank, base.in_features or 0), (base.out_features or 0, rank)


def _check_module(
    config: AdapterConfig,
    facts: ModelFacts,
    path: str,
    lm: LoraModule,
    base: BaseModule,
    grouper: _Grouper,
    rows: dict[tuple[str, str, tuple[int, ...], int, tuple[int, ...], tuple[int, ...], str | None], list[str]],
) -> None:
    a, b = lm.parts.get("A"), lm.parts.get("B")
    if a is None or b is None:
        have = ", ".join(sorted(lm.parts))
        grouper.add(
            "ADAPTER-INCOMPLETE",
            Category.ADAPTER,
            Severity.ERROR,
            path,
            "lora_A and lora_B",
            have,
            "the adapter file is damaged or was saved by a tool that drops tensors; re-save it with PEFT",
        )
        return
    if base.kind not in _LORA_KINDS:
        grouper.add(
            "COMPAT-KIND",
            Category.COMPAT,
            Severity.ERROR,
            path,
            f"a {_shape(base.weight_shape)} parameter PEFT cannot wrap",
            "LoRA weights",
            "the module of this name is something else in this base (renamed architecture?)",
        )
        return
    if (base.kind is Kind.EMBEDDING) != lm.embedding_style:
        expected = "an embedding" if base.kind is Kind.EMBEDDING else f"a {base.kind.value} layer"
        actual = "embedding LoRA (lora_embedding_A/B)" if lm.embedding_style else "linear LoRA (lora_A/B)"
        grouper.add(
            "COMPAT-KIND",
            Category.COMPAT,
            Severity.ERROR,
            path,
            expected,
            actual,
            "the module changed type between the adapter's base and this one",
        )
        return
    ra = a.shape[0] if a.shape else 0
    rb = b.shape[1] if len(b.shape) > 1 else -1
    leaf = path.rpartition(".")[2]
    if ra != rb:
        grouper.add(
            "COMPAT-RANK",
            Category.ADAPTER,
            Severity.ERROR,
            path,
            f"lora_B rank {ra} (as lora_A)",
            f"lora_B rank {rb}",
            "the adapter file is inconsistent; re-save it with PEFT",
        )
        return
    configured = rank_for(config, path)
    if config.peft_type == "LORA" and ra != configured:
        grouper.add(
            "COMPAT-RANK",
            Category.ADAPTER,
            Severity.ERROR,
            path,
            f"r={configured} (adapter_config.json)",
            f"r={ra} (tensors)",
            "PEFT builds layers from the config's r / rank_pattern and fails to load "
            "tensors of another rank; fix r or rank_pattern in adapter_config.json",
        )
    exp_a, exp_b = _expected_lora(base, ra)
    in_actual = a.shape[1] if len(a.shape) > 1 else -1
    out_actual = b.shape[0]
    if in_actual != exp_a[1] or out_actual != exp_b[0]:
        axis, got, want = ("in", in_actual, exp_a[1]) if in_actual != exp_a[1] else ("out", out_actual, exp_b[0])
        if base.kind is Kind.EMBEDDING:
            axis = "out" if axis == "in" else "in"  # embedding: A spans the vocabulary, B the embedding size
        grouper.add(
            "COMPAT-SHAPE",
            Category.COMPAT,
            Severity.ERROR,
            path,
            f"lora_A {_shape(exp_a)}, lora_B {_shape(exp_b)} (base {_shape(_base_shape(base))})",
            f"lora_A {_shape(a.shape)}, lora_B {_shape(b.shape)}",
            _shape_hint(leaf, axis, got, want, facts),
        )
        return
    for part in ("magnitude", "B_bias"):
        extra = lm.parts.get(part)
        if extra is not None and not _per_output(tuple(extra.shape), exp_b[0]):
            grouper.add(
                "COMPAT-SHAPE",
                Category.COMPAT,
                Severity.ERROR,
                path,
                f"{part} {_shape((exp_b[0],))}",
                f"{part} {_shape(extra.shape)}",
                "DoRA magnitude and LoRA bias have one entry per output",
            )
    rows[
        (pattern_of(path), base.kind.value, _base_shape(base), ra, tuple(a.shape), tuple(b.shape), base.quantized)
    ].append(path)


def _per_output(shape: tuple[int, ...], out: int) -> bool:
    """One entry per output: ``[out]``, or ``[1, out, 1, …]`` (PEFT's DoRA on a conv layer keeps the weight's
    other axes as 1s)."""
    return shape == (out,) or (
        len(shape) > 1 and shape[1] == out and all(d == 1 for i, d in enumerate(shape) if i != 1)
    )


def _targeted(config: AdapterConfig, modules: dict[str, BaseModule], alignment: tuple[str, str]) -> list[str]:
    """Model-namespace paths of the base modules PEFT would wrap."""
    out = []
    all_linear = config.target_modules == "all-linear"
    for base_path, module in modules.items():
        if module.kind not in _LORA_KINDS:
            continue
        if all_linear and (module.kind not in (Kind.LINEAR, Kind.CONV1D) or base_path in OUTPUT_HEADS):
            continue
        path = to_model(base_path, alignment)
        if is_targeted(config, path):
            out.append(path)
    return sorted(out)


def _listed_saved(config: AdapterConfig) -> set[str]:
    """The module names PEFT keeps per-adapter copies of: ``modules_to_save`` and the task's implicit heads."""
    return set(config.modules_to_save) | set(IMPLICIT_HEADS.get(config.task_type or "", ()))


def _is_listed(module: str, listed: set[str]) -> bool:
    """PEFT wraps every module whose name ends with an entry, dot or not (``"head"`` wraps ``lm_head``), and a
    wrapped module's children are saved under it."""
    return any(module.endswith(m) or module.startswith(m + ".") or f".{m}." in module for m in listed)


def writes_into_base(config: AdapterConfig, tensors: Iterable[TensorInfo]) -> bool:
    """Whether loading the adapter changes the base model's own weights: trained biases (``bias`` "all" or
    "lora_only") or full tensors ``modules_to_save`` does not list. ``disable_adapter()`` does not undo that, so
    such an adapter loaded beside others would change what they are measured on."""
    if config.bias not in ("none", ""):
        return True
    _, saved, _ = split_adapter_tensors(tensors)
    listed = _listed_saved(config)
    return any(not _is_listed(module, listed) for module in saved)


def _check_saved(
    config: AdapterConfig,
    facts: ModelFacts,
    saved: dict[str, dict[str, TensorInfo]],
    modules: dict[str, BaseModule],
    alignment: tuple[str, str],
    lora_paths: frozenset[str] = frozenset(),
) -> tuple[tuple[tuple[str, tuple[int, ...]], ...], list[Finding]]:
    findings: list[Finding] = []
    table: list[tuple[str, tuple[int, ...]]] = []
    listed = _listed_saved(config)
    for module, params in sorted(saved.items()):
        for param, info in sorted(params.items()):
            table.append((f"{module}.{param}", tuple(info.shape)))
        if module not in lora_paths and not _is_listed(module, listed):
            findings.append(
                Finding(
                    "ADAPTER-UNLISTED-SAVED",
                    Category.ADAPTER,
                    Severity.WARNING,
                    f"the adapter file holds full tensors of `{module}` ({', '.join(sorted(params))}) that "
                    "modules_to_save does not list: PEFT loads them straight into the base module, replacing its "
                    "weights",
                    subject=module,
                    hint="add the module to modules_to_save, or remove the tensors",
                )
            )
        base = modules.get(to_base(module, alignment))
        weight = params.get("weight")
        if base is None:
            if (
                weight is not None
                and len(weight.shape) == 2
                and facts.hidden_size is not None
                and weight.shape[1] != facts.hidden_size
            ):
                findings.append(
                    Finding(
                        "COMPAT-SAVED-SHAPE",
                        Category.COMPAT,
                        Severity.WARNING,
                        f"`{module}` is not in the base checkpoint (a task head) and its input size {weight.shape[1]} "
                        f"differs from the base's hidden size {facts.hidden_size}",
                        subject=module,
                        expected=f"[*, {facts.hidden_size}]",
                        actual=_shape(weight.shape),
                    )
                )
            continue
        expected_w = base.weight_shape if base.derived_from is None else (base.out_features or 0, base.in_features or 0)
        if base.quantized:
            expected_w = _base_shape(base)
        checks = [("weight", expected_w)]
        if base.out_features is not None and base.kind is not Kind.EMBEDDING:
            checks.append(("bias", (base.out_features,)))
        for param, expected in checks:
            found = params.get(param)
            if found is None or tuple(found.shape) == tuple(expected):
                continue
            info = found
            hint = ""
            if facts.vocab_size is not None and expected and expected[0] == facts.vocab_size:
                hint = (
                    f"the adapter saved a {info.shape[0]}-token {module}; this base has {facts.vocab_size} "
                    "tokens: the tokenizer / vocabulary changed"
                )
            grouper = _Grouper()
            grouper.add(
                "COMPAT-SAVED-SHAPE",
                Category.COMPAT,
                Severity.ERROR,
                f"{module}.{param}",
                _shape(expected),
                _shape(info.shape),
                hint,
            )
            findings += grouper.findings(_DESCRIBE)
    return tuple(table), findings
