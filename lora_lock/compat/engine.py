"""Does an adapter fit a base? :func:`fit` runs the stages in the order the data flows, each stage its own module:

checkpoint names → runtime model (:mod:`.model`) → PEFT's adapter-key conversion (:mod:`lora_lock.runtime`) →
PEFT's target matching (:mod:`.targets`) → per-module shapes (:mod:`.shapes`) → saved modules (:mod:`.saved`) →
silent drops (:mod:`.drops`) → the verdict (:mod:`.verdict`). Identity (:mod:`.identity`) needs the sources and is
added by the ``check`` glue.

PEFT loads with ``strict=False``: a tensor the built model has no place for is dropped without a word. So besides
what PEFT raises on (no target, refused conversions, shape mismatches) the engine counts what it would silently
drop, and which targeted modules get no trained weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lora_lock.compat.drops import (
    dropped_finding,
    named_keys_finding,
    raises_finding,
    target_findings,
    unmatched_findings,
    untrained_finding,
)
from lora_lock.compat.keys import AdapterKeys, LoraModule, split_keys, unwrap_param_module
from lora_lock.compat.model import RuntimeModel, align, runtime_model, to_base, to_model
from lora_lock.compat.saved import SavedResult, check_saved
from lora_lock.compat.shapes import (
    DESCRIBE,
    Grouper,
    ModuleGroup,
    Placement,
    RowKey,
    base_shape,
    check_module,
    check_param_module,
    expected_lora,
    table,
)
from lora_lock.compat.targets import Targets, rank_for, resolve_targets
from lora_lock.compat.verdict import Prediction, predict, rules_finding
from lora_lock.findings import Finding
from lora_lock.inspect.adapter import AdapterConfig
from lora_lock.inspect.checkpoint import Checkpoint
from lora_lock.inspect.model_config import ModelFacts
from lora_lock.inspect.modules import pattern_of
from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.runtime import Stack, adapter_key_conversion, convert_adapter_keys, installed_stack


@dataclass(frozen=True)
class Fit:
    """What the engine found: findings, the resolved module table, the prefix alignment, and the prediction."""

    findings: tuple[Finding, ...]
    modules: tuple[ModuleGroup, ...]
    saved: tuple[tuple[str, tuple[int, ...]], ...]
    alignment: tuple[str, str]
    lora_modules: int
    matched_modules: int
    prediction: Prediction | None = None


_SIZE_MISMATCH = "RuntimeError: Error(s) in loading state_dict for PeftModel: size mismatch for "


@dataclass(frozen=True)
class _Aligned:
    """One fit's inputs once the adapter's keys are split and aligned to the base: what the load and drop steps
    read."""

    config: AdapterConfig
    facts: ModelFacts
    model: RuntimeModel
    keys: AdapterKeys
    targets: Targets
    alignment: tuple[str, str]
    #: the base modules PEFT wraps with a LoRA layer (``targets.modules`` as a set, for lookups)
    wrapped: frozenset[str]


class _Load:
    """The load step: where each adapter LoRA module goes and how many saved tensors land nowhere; the per-module
    problems and the module table rows."""

    def __init__(self, origin: Mapping[str, tuple[str, ...]]) -> None:
        self.origin = origin
        self.dropped = 0
        self.raises: str | None = None
        self.unmatched: list[str] = []
        self.not_targeted: list[str] = []
        self.kind_drops: list[str] = []
        self.not_targeted_tensors = 0
        self.grouper = Grouper()
        self.rows: dict[RowKey, list[str]] = defaultdict(list)

    def count(self, lm: LoraModule) -> int:
        """Saved tensors behind one (converted) LoRA module."""
        return sum(len(self.origin.get(t.name, (t.name,))) for t in lm.parts.values())

    def mismatch(self, key: str) -> None:
        if self.raises is None:
            self.raises = _SIZE_MISMATCH + key

    def untargeted(self, path: str, lm: LoraModule) -> None:
        """A module of the base that PEFT builds no LoRA layer in: its tensors are dropped."""
        self.not_targeted.append(path)
        self.not_targeted_tensors += self.count(lm)


def _load_lora(ctx: _Aligned, load: _Load) -> None:
    """Every adapter LoRA module into the layer PEFT built for it (a module, or a ``ParamWrapper`` level)."""
    for path, lm in sorted(ctx.keys.lora.items()):
        base_path = to_base(path, ctx.alignment)
        params = ctx.targets.parameters.get(unwrap_param_module(base_path))
        if params and base_path not in ctx.wrapped:
            _load_param_level(ctx, load, path, lm, base_path, params)
        else:
            _load_module(ctx, load, path, lm, base_path)


def _load_param_level(
    ctx: _Aligned, load: _Load, path: str, lm: LoraModule, base_path: str, params: tuple[str, ...]
) -> None:
    """One ``ParamWrapper`` level of a module with targeted parameters (one level per parameter)."""
    holder = unwrap_param_module(base_path)
    level = (len(base_path) - len(holder)) // len(".base_layer")
    if level >= len(params):
        load.untargeted(path, lm)
        return
    wanted = [
        (
            name,
            ctx.model.params[f"{holder}.{name}"],
            rank_for(ctx.config, to_model(f"{holder}.{name}", ctx.alignment), ctx.targets.rank_pattern),
        )
        for name in params
    ]
    if check_param_module(path, lm, wanted, load.grouper, load.rows) == "shape":
        load.mismatch(f"{path}.lora_A")


def _load_module(ctx: _Aligned, load: _Load, path: str, lm: LoraModule, base_path: str) -> None:
    """One adapter LoRA module into the base module of its name, if PEFT wrapped it."""
    base = ctx.model.modules.get(base_path)
    if base is None:
        load.unmatched.append(path)
        load.dropped += load.count(lm)
        return
    if base_path not in ctx.wrapped:
        load.untargeted(path, lm)
        return
    rank = rank_for(ctx.config, path, ctx.targets.rank_pattern)
    status = check_module(ctx.config, ctx.facts, Placement(path, lm, base, rank), load.grouper, load.rows)
    if status == "shape":
        load.mismatch(f"{path}.lora_A")
    elif status == "kind":  # COMPAT-KIND (from the shape checks) names them
        load.kind_drops.append(path)
        load.dropped += load.count(lm)


def _config_rows(
    config: AdapterConfig,
    model: RuntimeModel,
    targets: Targets,
    alignment: tuple[str, str],
    rows: dict[RowKey, list[str]],
) -> None:
    """Config only: the table of what ``target_modules`` selects, at the ranks PEFT would build."""
    for base_path in targets.modules:
        base = model.modules[base_path]
        path = to_model(base_path, alignment)
        rank = rank_for(config, path, targets.rank_pattern)
        a, b = expected_lora(base, rank)
        rows[(pattern_of(path), base.kind.value, base_shape(base), rank, a, b, base.quantized)].append(path)


def fit(
    config: AdapterConfig,
    tensors: Iterable[TensorInfo] | None,
    facts: ModelFacts,
    checkpoint: Checkpoint,
    *,
    model_config: Mapping[str, Any] | None = None,
    stack: Stack | None = None,
) -> Fit:
    """Map an adapter onto a base as ``stack``'s transformers and PEFT load it, and report every way it does not fit.

    ``tensors`` is the adapter's weights header; ``None`` means config-only (what ``target_modules`` selects).
    ``model_config`` is the base's ``config.json`` (it selects the runtime rules); ``stack`` defaults to the
    installed versions.
    """
    stack = stack or installed_stack()
    model_config = model_config or {}
    model = runtime_model(checkpoint, facts, model_config, stack)
    findings: list[Finding] = list(model.notes)
    rules = [model.rules]
    originals = list(tensors or ())
    conversion = adapter_key_conversion(model_config, stack, config.peft_type) if tensors is not None else None
    converted = convert_adapter_keys({t.name: t for t in originals}, conversion, model_config)
    if conversion is not None:
        rules.append(conversion.rules)
    findings += converted.notes
    if converted.error is not None and tensors is not None:
        findings.append(raises_finding(config, converted.error))
    keys = split_keys(converted.tensors.values())
    alignment = align(
        [*(unwrap_param_module(p) for p in keys.lora), *keys.saved], set(model.modules), model.movable_prefixes
    )
    targets = resolve_targets(config, model, alignment, model_config, stack)
    if targets.converted:
        rules.append(f"peft {stack.peft or 'unknown'} per-expert → fused target conversion")
    ctx = _Aligned(config, facts, model, keys, targets, alignment, frozenset(targets.modules))

    load = _Load(converted.origin)
    if tensors is not None:
        _load_lora(ctx, load)
    else:
        _config_rows(config, model, targets, alignment, load.rows)
    saved = check_saved(config, facts, keys.saved, model, alignment, frozenset(keys.lora))
    findings += target_findings(config, model.modules, alignment, targets)
    if tensors is not None and targets.raises is None:
        findings += _drop_findings(ctx, load, saved)
    findings += load.grouper.findings(DESCRIBE)
    findings += saved.findings
    if any(f.code == "COMPAT-SAVED-SHAPE" and f.severity.value == "error" for f in saved.findings):
        load.mismatch(next(f"{m}" for m, _ in saved.table))
    findings.append(rules_finding(stack, tuple(rules)))

    prediction = None
    if tensors is not None:
        dropped = load.dropped + load.not_targeted_tensors + len(keys.named) + len(saved.dropped)
        dropped += sum(1 for m in keys.tokens if to_base(m, alignment) not in model.modules)
        raises = targets.raises or converted.error or load.raises
        prediction = predict(stack, tuple(rules), len(originals), dropped, raises)
    return Fit(
        findings=tuple(findings),
        modules=table(load.rows),
        saved=saved.table,
        alignment=alignment,
        lora_modules=len(keys.lora),
        matched_modules=len(keys.lora) - len(load.unmatched),
        prediction=prediction,
    )


def _drop_findings(ctx: _Aligned, load: _Load, saved: SavedResult) -> list[Finding]:
    """What PEFT's ``strict=False`` load drops without a word, and the targeted modules left untrained."""
    keys, model, alignment = ctx.keys, ctx.model, ctx.alignment
    findings = unmatched_findings(load.unmatched, keys.lora, model.modules, alignment, ctx.facts)
    if keys.named:
        findings.append(named_keys_finding(keys.named))
    if load.not_targeted:
        findings.append(
            dropped_finding(
                "these modules exist in the base, but target_modules / target_parameters do not select them, so "
                "PEFT builds no LoRA layer to load them into",
                load.not_targeted,
                load.not_targeted_tensors,
                "add the modules to target_modules (or target_parameters) in adapter_config.json, or the adapter "
                "was saved with another configuration than the one next to it",
            )
        )
    biases = set(saved.dropped_biases)
    others = [p for p in saved.dropped if p not in biases]
    if saved.dropped_biases:
        findings.append(
            dropped_finding(
                'bias="all" saved biases of layers that have none in this base',
                saved.dropped_biases,
                len(saved.dropped_biases),
                "the adapter was trained on a base whose layers have biases (another architecture or variant)",
            )
        )
    if others:
        findings.append(
            dropped_finding(
                "full tensors (modules_to_save / heads) of modules this base does not have under those names",
                others,
                len(others),
                "the head or module was renamed in this base (e.g. GPT-NeoX's output head is `embed_out`), or the "
                "adapter was trained on another architecture",
            )
        )
    tokens = [m for m in keys.tokens if to_base(m, alignment) not in model.modules]
    if tokens:
        findings.append(
            dropped_finding(
                "trainable_token_indices deltas of embeddings this base does not have",
                tokens,
                len(tokens),
                "the adapter was trained on another architecture",
            )
        )
    wrapped_paths = {to_model(p, alignment) for p in ctx.targets.modules}
    trained = set(keys.lora)
    untrained = sorted(p for p in wrapped_paths if p not in trained)
    if untrained:
        leaves = {p.rpartition(".")[2] for p in load.unmatched}
        renamed = any(p.rpartition(".")[2] in leaves for p in untrained)
        findings.append(untrained_finding(untrained, renamed, named_keys=bool(keys.named)))
    return findings
