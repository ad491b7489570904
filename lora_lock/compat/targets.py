"""PEFT's matching: which modules and parameters of the built model a LoRA config wraps, or what PEFT raises.

Mirrors ``peft/tuners/tuners_utils.py`` (``check_target_module_exists``, ``inject_adapter``, ``_inject_parameters``,
``_maybe_include_all_linear_layers``) and, on transformers 5, ``convert_peft_config_for_transformers`` (per-expert
``target_modules`` become ``target_parameters`` on the fused tensors, or are refused). Matching a list is a set
lookup of each module path's dot suffixes, so a 100k-entry ``target_modules`` over 16k modules stays linear; user
regexes run under :mod:`lora_lock.userregex`'s time limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lora_lock import userregex
from lora_lock.compat.keys import IMPLICIT_HEADS, OUTPUT_HEADS
from lora_lock.compat.model import RuntimeModel, containers, to_model
from lora_lock.errors import InputError
from lora_lock.inspect.adapter import AdapterConfig
from lora_lock.inspect.modules import Kind
from lora_lock.runtime import Stack, convert_moe_targets, moe_rules
from lora_lock.text import brief

LORA_KINDS = (Kind.LINEAR, Kind.CONV1D, Kind.EMBEDDING, Kind.CONV)
#: Longest digit run read as a layer index (a longer one is not a layer index: int() would refuse it anyway).
_MAX_INDEX_DIGITS = 18
_MAX_TARGET_PARAMETERS = 100_000


@dataclass(frozen=True)
class Targets:
    """What PEFT wraps (base-namespace paths) and what it raises while building, if anything."""

    #: modules wrapped with a LoRA layer (``target_modules``)
    modules: tuple[str, ...]
    #: module → its parameters wrapped with ``ParamWrapper`` (``target_parameters``), in PEFT's nesting order
    parameters: dict[str, tuple[str, ...]]
    #: PEFT's exception text when it refuses to build the adapter (None: it builds)
    raises: str | None = None
    #: the rank pattern PEFT adds when it fuses per-expert targets (``.*\.gate_up_proj`` → 2r)
    rank_pattern: dict[str, int] = field(default_factory=dict)
    #: ``target_modules`` after PEFT's MoE conversion (what matching used)
    target_modules: tuple[str, ...] | str | None = None
    converted: bool = False


class NameSet:
    """A list of module names as PEFT matches it: a key matches when it, or a dot-suffix of it, is listed.

    Only suffixes with as many dots as the longest entry can match, so a lookup costs a few set probes however
    long the list is.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self.depth = max((n.count(".") for n in self.names), default=0)

    def match(self, key: str) -> bool:
        """``key in names or any(key.endswith('.' + n) for n in names)``, in O(depth)."""
        if key in self.names:
            return True
        end = len(key)
        for _ in range(self.depth + 1):
            end = key.rfind(".", 0, end)
            if end == -1:
                return False
            if key[end + 1 :] in self.names:
                return True
        return False


def unused_names(names: Iterable[str], modules: Iterable[str]) -> list[str]:
    """The list entries that match no module (``p == t`` or ``p.endswith('.' + t)``): each module's dot-suffixes,
    up to the deepest entry's depth, go into one set, so the cost is modules × depth plus one probe per entry."""
    wanted = list(names)
    depth = max((n.count(".") for n in wanted), default=0)
    known: set[str] = set()
    for path in modules:
        known.add(path)
        end = len(path)
        for _ in range(depth + 1):
            end = path.rfind(".", 0, end)
            if end == -1:
                break
            known.add(path[end + 1 :])
    return sorted(n for n in wanted if n not in known)


def target_parameters(config: AdapterConfig) -> tuple[str, ...]:
    """``target_parameters`` of the adapter config, checked (a list of names, bounded)."""
    value = config.raw.get("target_parameters")
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or len(value) > _MAX_TARGET_PARAMETERS
        or not all(isinstance(v, str) and 0 < len(v) <= 1024 for v in value)
    ):
        raise InputError(
            f"{config.path}: field `target_parameters` must be a list of parameter names, found {brief(value)}"
        )
    return tuple(value)


class _Matcher:
    """``check_target_module_exists`` for one config, compiled once."""

    def __init__(self, config: AdapterConfig, target_modules: tuple[str, ...] | str | None) -> None:
        self.where = str(config.path)
        self.config = config
        self.exclude = config.exclude_modules
        self.exclude_set = NameSet(self.exclude) if isinstance(self.exclude, tuple) else None
        # PEFT reads modules_to_save entries as regex fragments here (no escaping), so do we.
        saved = [m for m in config.modules_to_save if m]
        self.saved = rf"(^|.*\.)(?:{'|'.join(f'(?:{m})' for m in saved)})($|\..*)" if saved else None
        self.targets = target_modules
        self.target_set = NameSet(target_modules) if isinstance(target_modules, tuple) else None

    def excluded(self, key: str) -> bool:
        if self.exclude:
            if self.exclude_set is not None:
                if self.exclude_set.match(key):
                    return True
            elif (
                isinstance(self.exclude, str)
                and userregex.fullmatch(self.exclude, key, f"{self.where}: exclude") is not None
            ):
                return True
        return self.saved is not None and userregex.match(self.saved, key, f"{self.where}: modules_to_save") is not None

    def targeted(self, key: str) -> bool:
        targets = self.targets
        if targets is None:
            return False
        if isinstance(targets, str):
            return userregex.fullmatch(targets, key, f"{self.where}: target_modules") is not None
        assert self.target_set is not None
        if not self.target_set.match(key):
            return False
        return not self.config.layers_to_transform or _in_layers(self.config, key)


def _in_layers(config: AdapterConfig, key: str) -> bool:
    where = str(config.path)
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
    return int(match.group("idx")) in (config.layers_to_transform or ())


def is_targeted(config: AdapterConfig, key: str) -> bool:
    """Whether PEFT would wrap the module named ``key`` (model namespace) with a LoRA layer.

    ``"all-linear"`` is resolved by the caller (it needs module kinds). User patterns run with a time limit
    (:mod:`lora_lock.userregex`): a pathological one is an InputError.
    """
    if config.target_modules == "all-linear":
        matcher = _Matcher(config, None)
        return not matcher.excluded(key)
    matcher = _Matcher(config, config.target_modules)
    return not matcher.excluded(key) and matcher.targeted(key)


def rank_for(config: AdapterConfig, key: str, extra: Mapping[str, int] | None = None) -> int:
    """Per-module rank: the first ``rank_pattern`` key matching ``key`` (PEFT's ``get_pattern_key``), else ``r``."""
    for pattern, rank in (*config.rank_pattern.items(), *(extra or {}).items()):
        if userregex.match(rf"(.*\.)?({pattern})$", key, f"{config.path}: rank_pattern"):
            return rank
    return config.r


def listed_saved(config: AdapterConfig) -> set[str]:
    """The module names PEFT keeps per-adapter copies of: ``modules_to_save`` and the task's implicit heads."""
    return set(config.modules_to_save) | set(IMPLICIT_HEADS.get(config.task_type or "", ()))


def _all_linear(model: RuntimeModel, alignment: tuple[str, str]) -> tuple[str, ...]:
    return tuple(
        sorted(
            to_model(p, alignment)
            for p, m in model.modules.items()
            if m.kind in (Kind.LINEAR, Kind.CONV1D) and p not in OUTPUT_HEADS and m.derived_from is None
        )
    )


def _no_target_message(config: AdapterConfig, targets: Any, excluded: bool) -> str:
    shown = "{" + ", ".join(repr(t) for t in sorted(targets)) + "}" if isinstance(targets, tuple) else repr(targets)
    if excluded:
        text = (
            "No modules were targeted for adaptation. This might be caused by a combination of mismatched target "
            "modules and excluded modules. Please check your `target_modules` and `exclude_modules` configuration. "
            "You may also have only targeted modules that are marked to be saved (`modules_to_save`)."
        )
    else:
        text = f"Target modules {shown} not found in the base model. Please check the target modules and try again."
    if config.layers_to_transform is not None:
        text += f" Note: You specified 'layers_to_transform': {list(config.layers_to_transform)}."
    return "NoMatchingPeftModuleError: " + text


def _param_wrapper_refusal(config: AdapterConfig) -> str | None:
    """``ParamWrapper.__init__``'s refusals (it cannot factor dropout, fan-in-fan-out, bias or DoRA out)."""
    dropout = config.raw.get("lora_dropout")
    if isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and dropout:
        return "ValueError: lora.ParamWrapper does not work with lora_dropout != 0."
    for flag, text in (
        (config.fan_in_fan_out, "fan_in_fan_out"),
        (config.lora_bias, "lora_bias=True"),
        (config.use_dora, "use_dora=True"),
    ):
        if flag:
            return f"ValueError: lora.ParamWrapper does not work with {text}."
    return None


@dataclass(frozen=True)
class _Request:
    """What matching runs on: ``target_modules`` and ``target_parameters`` after PEFT's MoE conversion."""

    target_modules: tuple[str, ...] | str | None
    params: tuple[str, ...]
    rank_pattern: dict[str, int] = field(default_factory=dict)
    converted: bool = False


def _convert_moe(
    config: AdapterConfig,
    model: RuntimeModel,
    alignment: tuple[str, str],
    model_config: Mapping[str, Any],
    stack: Stack,
) -> _Request | Targets:
    """transformers 5's per-expert → fused conversion of the config's targets, or the Targets of its refusal."""
    request = _Request(config.target_modules, target_parameters(config))
    rules = moe_rules(model_config, stack) if config.peft_type == "LORA" else None
    if rules is None or request.target_modules is None:
        return request
    names = [to_model(p, alignment) for p in model.params]
    wanted = request.target_modules
    if wanted == "all-linear":
        # PEFT resolves the shorthand by module type, then adds the v4 expert names the fused tensors replaced
        linear = {p.rpartition(".")[2] for p in _all_linear(model, alignment)}
        wanted = tuple(sorted(linear | set(rules.target_module_mapping)))
    conversion = convert_moe_targets(
        wanted, request.params, config.r, int(config.lora_alpha), rules, runtime_names=names
    )
    if conversion.error is not None:
        return Targets((), {}, raises=f"ValueError: {conversion.error}", target_modules=request.target_modules)
    nothing_resolved = isinstance(wanted, str) and conversion.target_modules == frozenset({wanted})
    if conversion.unresolved or nothing_resolved:
        return request
    return _Request(
        tuple(sorted(conversion.target_modules)),
        tuple(sorted(conversion.target_parameters)),
        dict(conversion.rank_pattern),
        converted=True,
    )


@dataclass(frozen=True)
class _Matched:
    """The modules matching wraps (base namespace), those it cannot wrap, and whether an exclusion applied."""

    wrapped: tuple[str, ...]
    unsupported: tuple[str, ...]
    excluded: bool


def _match_modules(
    matcher: _Matcher, model: RuntimeModel, alignment: tuple[str, str], target_modules: tuple[str, ...] | str | None
) -> _Matched:
    """``inject_adapter``'s walk over the built model's modules."""
    wrapped: list[str] = []
    unsupported: list[str] = []
    excluded = False
    for base_path, module in model.modules.items():
        key = to_model(base_path, alignment)
        if matcher.excluded(key):
            excluded = True
            continue
        if not matcher.targeted(key):
            continue
        if module.kind in LORA_KINDS:
            wrapped.append(base_path)
        else:
            unsupported.append(key)
    if isinstance(target_modules, tuple) and target_modules and not unsupported:
        # a name that matches a module holding others (``self_attn``) makes PEFT try to wrap a container
        holders = containers(model.modules) - set(model.modules)
        unsupported = sorted(k for k in (to_model(h, alignment) for h in holders) if matcher.targeted(k))
    return _Matched(tuple(sorted(wrapped)), tuple(unsupported), excluded)


def _unsupported_message(key: str) -> str:
    return (
        f"ValueError: Target module {key} is not supported. Currently, only the following "
        "modules are supported: `torch.nn.Linear`, `torch.nn.Embedding`, `torch.nn.Conv1d`, `torch.nn.Conv2d`, "
        "`torch.nn.Conv3d`, `transformers.pytorch_utils.Conv1D`, `torch.nn.MultiheadAttention.`."
    )


def _nothing_targeted(
    config: AdapterConfig, target_modules: tuple[str, ...] | str | None, params: tuple[str, ...], excluded: bool
) -> str | None:
    """What PEFT raises when neither a module nor a parameter is wrapped (nothing when nothing was asked for)."""
    if target_modules is None and not params:
        return None if config.target_modules is None else _no_target_message(config, target_modules, excluded)
    if not target_modules and not excluded:
        return (
            "NoMatchingPeftModuleError: No `target_modules` passed but also no `target_parameters` found. "
            "Please check the values for these arguments."
        )
    return _no_target_message(config, target_modules, excluded)


def resolve_targets(
    config: AdapterConfig,
    model: RuntimeModel,
    alignment: tuple[str, str],
    model_config: Mapping[str, Any],
    stack: Stack,
) -> Targets:
    """The modules and parameters PEFT wraps for ``config`` on ``model``, or the error it raises building them."""
    request = _convert_moe(config, model, alignment, model_config, stack)
    if isinstance(request, Targets):
        return request
    target_modules = request.target_modules
    if target_modules == "all-linear":
        target_modules = _all_linear(model, alignment)
    matched = _match_modules(_Matcher(config, target_modules), model, alignment, target_modules)
    if matched.unsupported:
        return Targets(
            matched.wrapped,
            {},
            raises=_unsupported_message(matched.unsupported[0]),
            rank_pattern=request.rank_pattern,
            target_modules=target_modules,
            converted=request.converted,
        )
    wrapped_params = _match_parameters(model, request.params, alignment)
    raises = _param_wrapper_refusal(config) if wrapped_params else None
    if not matched.wrapped and not wrapped_params and raises is None:
        raises = _nothing_targeted(config, target_modules, request.params, matched.excluded)
    return Targets(
        matched.wrapped,
        wrapped_params,
        raises=raises,
        rank_pattern=request.rank_pattern,
        target_modules=target_modules,
        converted=request.converted,
    )


def _match_parameters(
    model: RuntimeModel, params: tuple[str, ...], alignment: tuple[str, str]
) -> dict[str, tuple[str, ...]]:
    """``_inject_parameters``: a parameter ``<module>.<name>`` is wrapped when it or a dot-suffix is listed."""
    if not params:
        return {}
    wanted = NameSet(params)
    out: dict[str, list[str]] = {}
    for name in model.params:
        module, _, leaf = name.rpartition(".")
        if module and wanted.match(to_model(name, alignment)):
            out.setdefault(module, []).append(leaf)
    return {k: tuple(v) for k, v in sorted(out.items())}
