"""PEFT's side of transformers 5: adapter-key conversion on load and per-expert → fused target conversion.

Modelled on PEFT's ``transformers_weight_conversion`` (from PEFT 0.19, with transformers 5):

* **adapter keys** — only LoRA adapters, only keys containing ``.lora_``, and only when transformers has a
  conversion entry for the base's ``model_type`` (PEFT looks it up by ``model_type`` alone, so a mapping filed
  under a class name, e.g. Qwen2-VL's, converts nothing). The transforms are PEFT's preamble (strip
  ``base_model.model.``, insert the adapter name), the model's renamings, and the converters PEFT derives from
  the model's expert converters. A rename that only stripped a prefix is undone, as PEFT does.
* **MoE targets** — ``target_modules`` naming per-expert projections become ``target_parameters`` on the fused
  tensors, rank and alpha multiplied for fused pairs; a half pair is refused with PEFT's message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lora_lock import userregex
from lora_lock.errors import Unmodelled
from lora_lock.findings import Category, Finding, Severity
from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.runtime import rename
from lora_lock.runtime.stack import Stack, release
from lora_lock.runtime.tables import PeftTable, peft_table, transformers_table
from lora_lock.runtime.view import Groups, config_identity, convert_group, resolve_model

#: The first PEFT release that converts adapter keys for transformers 5 (``transformers_weight_conversion``).
PEFT_CONVERSION_SINCE = (0, 19)
CODE_ADAPTER_UNMODELLED = "RUNTIME-UNMODELLED"


@dataclass(frozen=True)
class AdapterConversion:
    """The renames and converters PEFT applies to an adapter's ``.lora_`` keys for one base."""

    transforms: tuple[rename.Transform, ...]
    model_type: str
    adapter_name: str
    rules: str


def _peft_applies(stack: Stack) -> bool:
    tf = release(stack.transformers) or release(transformers_table().version) or (0,)
    pf = release(stack.peft) or release(peft_table().version) or (0,)
    return tf[0] >= 5 and pf[:2] >= PEFT_CONVERSION_SINCE


def adapter_key_conversion(
    config: Mapping[str, Any], stack: Stack, peft_type: str = "LORA"
) -> AdapterConversion | None:
    """What PEFT does to adapter keys on this base, or None when it converts nothing.

    None when the stack predates the conversion (transformers < 5 or PEFT < 0.19), the adapter is not LoRA, or
    transformers has no conversion entry under the base's ``model_type`` (PEFT's only lookup).
    """
    if not isinstance(peft_type, str) or peft_type.upper() != "LORA" or not _peft_applies(stack):
        return None
    _, model_type = config_identity(config if isinstance(config, Mapping) else {})
    table = transformers_table()
    if model_type is None or table.mappings.get(model_type) is None:
        return None
    ptable = peft_table()
    model_transforms, _, _ = resolve_model(config, table)
    out = [rename.Transform(ptable.transforms[i]) for i in ptable.preamble]
    by_spec = {id(spec): str(i) for i, spec in enumerate(table.transforms)}
    for t in model_transforms:
        if t.kind == "convert":
            derived = ptable.derived_converters.get(by_spec.get(id(t.spec), ""), [])
            out.extend(rename.Transform(ptable.transforms[i]) for i in derived)
        else:
            out.append(t)
    rules = f"peft {stack.peft or ptable.version} adapter-key conversion for model_type {model_type}"
    return AdapterConversion(tuple(out), model_type, ptable.adapter_name, rules)


@dataclass(frozen=True)
class ConvertedKeys:
    """Adapter tensors as PEFT hands them to the model after conversion (PEFT-serialised names)."""

    tensors: dict[str, TensorInfo]
    #: converted key → the adapter keys it was built from
    origin: dict[str, tuple[str, ...]]
    #: converted keys that differ from the stored ones
    changed: frozenset[str]
    notes: tuple[Finding, ...] = ()
    #: what PEFT raises while converting (a fused pair with one half missing), or None
    error: str | None = None


def _rreplace_once(text: str, old: str, new: str) -> str:
    head, sep, tail = text.rpartition(old)
    return head + new + tail if sep else text


def _serialised(key: str, adapter_name: str) -> str:
    """PEFT's ``_convert_to_peft_serialized_keys`` for one key."""
    if not key.startswith("base_model."):
        key = f"base_model.model.{key}"
    suffix = f".{adapter_name}"
    if key.endswith(suffix):
        return key.removesuffix(suffix)
    head, dot, last = key.rpartition(".")
    if dot and head.endswith(suffix):
        return f"{head.removesuffix(suffix)}.{last}"
    return key


@dataclass
class _Converting:
    """The converted keys as they are built up: each final key's tensor and the adapter keys it came from."""

    adapter_name: str
    out: dict[str, TensorInfo] = field(default_factory=dict)
    origin: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: list[Finding] = field(default_factory=list)

    def keep(self, key: str, info: TensorInfo) -> None:
        """Pass a tensor through under its stored key (a converted key of that name wins)."""
        self.out.setdefault(key, info)
        self.origin.setdefault(key, (key,))


def _rename_lora(tensors: Mapping[str, TensorInfo], conversion: AdapterConversion, acc: _Converting) -> Groups:
    """Rename the ``.lora_`` keys in PEFT's order; keys a converter gathers are grouped for it."""
    name = conversion.adapter_name
    state = rename.RenameState()
    groups: Groups = {}
    for key in sorted((k for k in tensors if ".lora_" in k), key=rename.natural_key):
        info = tensors[key]
        if len(key) > 1024:
            acc.out[key], acc.origin[key] = info, (key,)
            continue
        renamed, conv, source = rename.rename_key(key, conversion.transforms, state)
        if renamed not in tensors and key.endswith(_rreplace_once(renamed, f".{name}", "")):
            renamed, conv, source = key, None, None  # PEFT undoes a rename that only stripped a prefix
        if conv is not None and source is not None:
            groups.setdefault((renamed, id(conv)), (conv, []))[1].append((key, source, info))
            continue
        final = _serialised(renamed, name)
        acc.out.setdefault(final, replace(info, name=final))
        acc.origin.setdefault(final, (key,))
    return groups


def _missing_half(conv: rename.Transform, members: list[tuple[str, str, TensorInfo]]) -> str | None:
    """PEFT collects each source pattern's tensors and concatenates them: a pattern with none (``gate_proj``
    without ``up_proj``) is an empty list, which torch.cat refuses."""
    present = {source for _, source, _ in members}
    if len(conv.sources) > 1 and any(s not in present for s in conv.sources):
        return "ValueError: torch.cat(): expected a non-empty list of Tensors"
    return None


def _unmodelled_note(layer_name: str, conv: rename.Transform, count: int, exc: Unmodelled) -> Finding:
    return Finding(
        CODE_ADAPTER_UNMODELLED,
        Category.COMPAT,
        Severity.WARNING,
        f"PEFT converts {count} adapter tensor(s) into {layer_name} by "
        f"{conv.describe()}; this cannot be modelled statically ({exc})",
        subject=layer_name,
        hint="the probe tier loads the adapter and confirms",
    )


def _convert_groups(groups: Groups, config: Mapping[str, Any], acc: _Converting) -> str | None:
    """Run each converter on its group; returns what PEFT raises converting (the first group missing a half)."""
    error: str | None = None
    for (layer_name, _), (conv, members) in groups.items():
        error = error or _missing_half(conv, members)
        try:
            produced = convert_group(conv, layer_name, members, config)
        except Unmodelled as exc:
            acc.notes.append(_unmodelled_note(layer_name, conv, len(members), exc))
            for key, _, info in members:
                acc.keep(key, info)
            continue
        for key, (shape, first, origins) in produced.items():
            final = _serialised(key, acc.adapter_name)
            acc.out[final] = TensorInfo(final, first.dtype, shape, first.file, 0, 0)
            acc.origin[final] = origins
    return error


def convert_adapter_keys(
    tensors: Mapping[str, TensorInfo],
    conversion: AdapterConversion | None,
    config: Mapping[str, Any] | None = None,
) -> ConvertedKeys:
    """Apply PEFT's conversion to an adapter's tensors; with ``conversion`` None, the keys are kept."""
    if conversion is None:
        return ConvertedKeys(dict(tensors), {k: (k,) for k in tensors}, frozenset())
    acc = _Converting(conversion.adapter_name)
    for key, info in tensors.items():
        if ".lora_" not in key:
            acc.out[key], acc.origin[key] = info, (key,)
    groups = _rename_lora(tensors, conversion, acc)
    error = _convert_groups(groups, config or {}, acc)
    changed = frozenset(k for k, src in acc.origin.items() if src != (k,))
    return ConvertedKeys(
        dict(sorted(acc.out.items())), dict(sorted(acc.origin.items())), changed, tuple(acc.notes), error
    )


@dataclass(frozen=True)
class MoeRules:
    """PEFT's per-expert → fused tables for one base (``_MOE_TARGET_MODULE_MAPPING`` / ``_MOE_FUSED_TARGETS``)."""

    family: str
    #: per-expert (transformers 4) module name → fused parameter (or module) name on transformers 5
    target_module_mapping: dict[str, str]
    #: fused parameter → the per-expert names that must all be targeted
    fused_targets: dict[str, tuple[str, ...]]


def moe_rules(config: Mapping[str, Any], stack: Stack) -> MoeRules | None:
    """The MoE conversion PEFT applies to this base's LoRA configs, or None (no conversion on this stack/base)."""
    if not _peft_applies(stack):
        return None
    _, model_type = config_identity(config if isinstance(config, Mapping) else {})
    if model_type is None or transformers_table().mappings.get(model_type) is None:
        return None
    ptable: PeftTable = peft_table()
    family = ptable.model_to_conversion_pattern.get(model_type)
    if family is None:
        return None
    mapping = ptable.moe_target_module_mapping.get(family)
    fused = ptable.moe_fused_targets.get(family)
    if not mapping or not fused:
        return None
    return MoeRules(family, dict(mapping), {k: tuple(v) for k, v in fused.items()})


@dataclass(frozen=True)
class MoeConversion:
    """A LoRA config after PEFT's MoE conversion, or the refusal PEFT raises (``error``)."""

    target_modules: frozenset[str]
    target_parameters: frozenset[str]
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    #: a string target_modules that needs the model's module types ("all-linear") and was not resolved
    unresolved: bool = False


def _resolve_string_targets(pattern: str, rules: MoeRules, runtime_names: Iterable[str]) -> set[str] | None:
    """PEFT's ``_resolve_string_target_modules`` for a regex; None for "all-linear" (it needs module types).

    The pattern is the adapter author's: it runs with a time limit (``userregex``), and an invalid or runaway
    pattern is an InputError, as PEFT would raise (or hang) on it.
    """
    if pattern.lower() == "all-linear":
        return None
    where = "adapter_config.json target_modules"

    def hits(key: str) -> bool:
        return userregex.fullmatch(pattern, key, where) is not None

    names = [n for n in runtime_names if len(n) <= 1024]
    modules = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
    matched = {k.rsplit(".", 1)[-1] for k in sorted(modules | set(names)) if hits(k)}
    containers: dict[str, set[str]] = {}
    for n in names:
        head, _, leaf = n.rpartition(".")
        containers.setdefault(leaf, set()).add(head)
    for old, new in rules.target_module_mapping.items():
        if old not in matched and any(hits(f"{c}.{old}") for c in sorted(containers.get(new, ()))):
            matched.add(old)
    return matched


def convert_moe_targets(
    target_modules: str | Iterable[str] | None,
    target_parameters: Iterable[str] | None,
    r: int,
    lora_alpha: int,
    rules: MoeRules,
    runtime_names: Iterable[str] = (),
) -> MoeConversion:
    """PEFT's ``_convert_peft_config_moe`` on a config's values; ``runtime_names`` resolve a regex target."""
    params = set(target_parameters or ())
    if isinstance(target_modules, str):
        resolved = _resolve_string_targets(target_modules, rules, runtime_names)
        if resolved is None:
            return MoeConversion(frozenset({target_modules}), frozenset(params), unresolved=True)
        if not resolved:
            return MoeConversion(frozenset({target_modules}), frozenset(params))
        modules = resolved
    else:
        modules = set(target_modules or ())
    remaining: set[str] = set()
    matched: dict[str, set[str]] = {new: set() for new in rules.fused_targets}
    for target in sorted(modules):
        hit = next(
            (
                (old, new)
                for old, new in rules.target_module_mapping.items()
                if target == old or target.endswith(f".{old}")
            ),
            None,
        )
        if hit is None:
            remaining.add(target)
            continue
        params.add(hit[1])
        if hit[1] in rules.fused_targets:
            matched.setdefault(hit[1], set()).add(hit[0])
    rank: dict[str, int] = {}
    alpha: dict[str, int] = {}
    for new, required in rules.fused_targets.items():
        present = matched.get(new, set())
        if 0 < len(present) < len(required):
            missing = ", ".join(sorted(set(required) - present))
            error = (
                f"Cannot convert PEFT target(s) {', '.join(sorted(present))} without also targeting "
                f"{missing} because they are fused into {new}."
            )
            return MoeConversion(frozenset(modules), frozenset(params), error=error)
        if len(present) == len(required) and len(required) > 1:
            rank[rf".*\.{re.escape(new)}"] = r * len(required)
            alpha[rf".*\.{re.escape(new)}"] = lora_alpha * len(required)
    return MoeConversion(frozenset(remaining), frozenset(params), rank, alpha)
