"""Full tensors in the adapter file: ``modules_to_save`` copies, task heads, biases (``bias="all"``), embedding copies.

PEFT wraps every module whose runtime name ends with a ``modules_to_save`` entry and loads ``<module>.<param>`` into
the wrapper's copy; a tensor of a module it does not list loads straight into the base module. Either way the
parameter must exist in the built model under that name: a head transformers renamed (GPT-NeoX's ``embed_out``
saved as ``lm_head``), or a bias of a base whose layers have none (``bias="all"`` trained on a base with biases),
is an unexpected key that ``load_state_dict(strict=False)`` drops without a word.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lora_lock.compat.keys import OUTPUT_HEADS, split_keys
from lora_lock.compat.model import RuntimeModel, to_base
from lora_lock.compat.shapes import DESCRIBE, Grouper, Problem, base_shape
from lora_lock.compat.targets import listed_saved
from lora_lock.findings import Category, Finding, Severity
from lora_lock.inspect.adapter import AdapterConfig
from lora_lock.inspect.model_config import ModelFacts
from lora_lock.inspect.modules import BaseModule, Kind
from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.text import shape_brackets


def is_listed(module: str, listed: set[str]) -> bool:
    """PEFT wraps every module whose name ends with an entry, dot or not (``"head"`` wraps ``lm_head``), and a
    wrapped module's children are saved under it."""
    return any(module.endswith(m) or module.startswith(m + ".") or f".{m}." in module for m in listed)


def writes_into_base(config: AdapterConfig, tensors: Iterable[TensorInfo]) -> bool:
    """Whether loading the adapter changes the base model's own weights: trained biases (``bias`` "all" or
    "lora_only") or full tensors ``modules_to_save`` does not list. ``disable_adapter()`` does not undo that, so
    such an adapter loaded beside others would change what they are measured on."""
    if config.bias not in ("none", ""):
        return True
    listed = listed_saved(config)
    return any(not is_listed(module, listed) for module in split_keys(tensors).saved)


@dataclass(frozen=True)
class SavedResult:
    """The saved-tensor table, findings, and the saved tensors PEFT drops (adapter-namespace ``module.param``)."""

    table: tuple[tuple[str, tuple[int, ...]], ...]
    findings: list[Finding]
    dropped: list[str]
    #: dropped tensors that are biases the base's layers lack (``bias="all"`` on another base)
    dropped_biases: list[str]


def _exists(model: RuntimeModel, base_module: str, param: str) -> bool:
    module = model.modules.get(base_module)
    if module is not None and module.derived_from is not None:  # a tied head: only its weight exists
        return param == "weight"
    return param in model.param_names.get(base_module, frozenset())


def _renamed_head(model: RuntimeModel, path: str) -> bool:
    """An output head saved under a name this base's head does not have (``lm_head`` where it is ``embed_out``)."""
    return path in OUTPUT_HEADS and any(h in model.modules for h in OUTPUT_HEADS if h != path)


def _tied_head(model: RuntimeModel, facts: ModelFacts, params: dict[str, TensorInfo]) -> bool:
    """A head the checkpoint leaves out because transformers ties it to the input embedding (``lm_head``,
    Whisper's ``proj_out``, RoBERTa's ``lm_head.decoder``): it exists in the built model with the embedding's shape."""
    weight = params.get("weight")
    if not facts.tie_word_embeddings or weight is None:
        return False
    shapes = {tuple(m.weight_shape) for m in model.modules.values() if m.kind is Kind.EMBEDDING}
    if facts.vocab_size is not None and facts.hidden_size is not None:
        shapes.add((facts.vocab_size, facts.hidden_size))  # embeddings named otherwise (``tokens_embed``, ``w``)
    bias = params.get("bias")
    return tuple(weight.shape) in shapes and (bias is None or tuple(bias.shape) == (weight.shape[0],))


@dataclass(frozen=True)
class _Scope:
    """What every saved module is checked against: the adapter config, the built base, and the prefix alignment."""

    config: AdapterConfig
    facts: ModelFacts
    model: RuntimeModel
    alignment: tuple[str, str]
    #: the modules PEFT keeps per-adapter copies of (``modules_to_save`` and the task's heads)
    listed: set[str]
    #: the adapter's LoRA modules (their full tensors are ``save_embedding_layers`` copies, listed or not)
    lora_paths: frozenset[str]


@dataclass
class _Collected:
    """The results built up module by module."""

    findings: list[Finding] = field(default_factory=list)
    table: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    biases: list[str] = field(default_factory=list)
    grouper: Grouper = field(default_factory=Grouper)


def check_saved(
    config: AdapterConfig,
    facts: ModelFacts,
    saved: dict[str, dict[str, TensorInfo]],
    model: RuntimeModel,
    alignment: tuple[str, str],
    lora_paths: frozenset[str] = frozenset(),
) -> SavedResult:
    """Check every saved full tensor against the built model: where it loads, whether it fits, what is dropped."""
    scope = _Scope(config, facts, model, alignment, listed_saved(config), lora_paths)
    out = _Collected()
    for module, params in sorted(saved.items()):
        _check_one(scope, module, params, out)
    out.findings += out.grouper.findings(DESCRIBE)
    return SavedResult(tuple(out.table), out.findings, out.dropped, out.biases)


def _check_one(scope: _Scope, module: str, params: dict[str, TensorInfo], out: _Collected) -> None:
    """One saved module: its table rows, whether modules_to_save lists it, what is dropped, whether it fits."""
    for param, info in sorted(params.items()):
        out.table.append((f"{module}.{param}", tuple(info.shape)))
    unlisted = _unlisted(scope, module, params)
    if unlisted is not None:
        out.findings.append(unlisted)
    model = scope.model
    base_path = to_base(module, scope.alignment)
    base = model.modules.get(base_path)
    if (base is None or "weight" not in model.param_names.get(base_path, frozenset())) and _tied_head(
        model, scope.facts, params
    ):
        return  # loads into the tied head; its shape is the embedding's, which it matched
    # a task head (classifier, score …) the checkpoint lacks: the task's model class creates it, then PEFT loads
    # the saved copy into it
    task_head = base is None and is_listed(module, scope.listed) and not _renamed_head(model, base_path)
    if not task_head:
        _record_drops(model, module, params, base_path, out)
    if base is None:
        head = _task_head_input(scope.facts, module, params.get("weight"))
        if head is not None:
            out.findings.append(head)
        return
    for param, expected, found in _mismatches(model, base_path, base, params):
        out.grouper.add(
            f"{module}.{param}",
            Problem(
                "COMPAT-SAVED-SHAPE",
                Category.COMPAT,
                Severity.ERROR,
                shape_brackets(expected),
                shape_brackets(found.shape),
                _vocab_hint(scope.facts, module, expected, found),
            ),
        )


def _record_drops(
    model: RuntimeModel, module: str, params: dict[str, TensorInfo], base_path: str, out: _Collected
) -> None:
    """The saved tensors the built model has no parameter for: ``load_state_dict(strict=False)`` drops them."""
    base = model.modules.get(base_path)
    for param in sorted(params):
        if base is None or not _exists(model, base_path, param):
            out.dropped.append(f"{module}.{param}")
            if base is not None and param == "bias":
                out.biases.append(f"{module}.{param}")


def _unlisted(scope: _Scope, module: str, params: dict[str, TensorInfo]) -> Finding | None:
    """Full tensors of a module modules_to_save does not list: PEFT loads them into the base module itself."""
    bias_only = scope.config.bias != "none" and set(params) <= {"bias"}  # bias="all" saves every bias by design
    if module in scope.lora_paths or is_listed(module, scope.listed) or bias_only:
        return None
    return Finding(
        "ADAPTER-UNLISTED-SAVED",
        Category.ADAPTER,
        Severity.WARNING,
        f"the adapter file holds full tensors of `{module}` ({', '.join(sorted(params))}) that "
        "modules_to_save does not list: PEFT loads them straight into the base module, replacing its "
        "weights",
        subject=module,
        hint="add the module to modules_to_save, or remove the tensors",
    )


def _task_head_input(facts: ModelFacts, module: str, weight: TensorInfo | None) -> Finding | None:
    """A saved module the base lacks (a task head) whose input size is not the base's hidden size."""
    if weight is None or len(weight.shape) != 2 or facts.hidden_size is None or weight.shape[1] == facts.hidden_size:
        return None
    return Finding(
        "COMPAT-SAVED-SHAPE",
        Category.COMPAT,
        Severity.WARNING,
        f"`{module}` is not in the base checkpoint (a task head) and its input size {weight.shape[1]} "
        f"differs from the base's hidden size {facts.hidden_size}",
        subject=module,
        expected=f"[*, {facts.hidden_size}]",
        actual=shape_brackets(weight.shape),
    )


def _mismatches(
    model: RuntimeModel, base_path: str, base: BaseModule, params: dict[str, TensorInfo]
) -> list[tuple[str, tuple[int, ...], TensorInfo]]:
    """(parameter, the shape the base has, the saved tensor) for the saved weight and bias of another shape."""
    expected_w = base.weight_shape if base.derived_from is None else (base.out_features or 0, base.in_features or 0)
    if base.quantized:
        expected_w = base_shape(base)
    checks = [("weight", tuple(expected_w))]
    bias = model.params.get(f"{base_path}.bias")
    if bias is not None and base.kind is not Kind.EMBEDDING:
        checks.append(("bias", tuple(bias.shape)))
    out = []
    for param, expected in checks:
        found = params.get(param)
        if found is not None and tuple(found.shape) != expected:
            out.append((param, expected, found))
    return out


def _vocab_hint(facts: ModelFacts, module: str, expected: tuple[int, ...], found: TensorInfo) -> str:
    if facts.vocab_size is not None and expected and expected[0] == facts.vocab_size:
        return (
            f"the adapter saved a {found.shape[0]}-token {module}; this base has {facts.vocab_size} "
            "tokens: the tokenizer / vocabulary changed"
        )
    return ""
