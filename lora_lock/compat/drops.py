"""The silent cliff, in words: adapter tensors PEFT would drop without a word, targeted modules left untrained,
targets that match nothing, and keys PEFT cannot place — each with counts, layers and a hint at the cause."""

from __future__ import annotations

from collections import defaultdict

from lora_lock.compat.keys import LoraModule
from lora_lock.compat.model import to_base, to_model
from lora_lock.compat.shapes import where
from lora_lock.compat.targets import Targets, unused_names
from lora_lock.findings import Category, Finding, Severity
from lora_lock.inspect.adapter import AdapterConfig
from lora_lock.inspect.model_config import ModelFacts
from lora_lock.inspect.modules import BaseModule, layer_indices, pattern_of


def target_findings(
    config: AdapterConfig,
    modules: dict[str, BaseModule],
    alignment: tuple[str, str],
    targets: Targets,
) -> list[Finding]:
    """What PEFT says about ``target_modules`` itself: it raises (nothing matched, an unsupported module, a refused
    conversion), or it ignores names that match nothing."""
    if targets.raises is not None:
        return [raises_finding(config, targets.raises)]
    names = targets.target_modules if targets.converted else config.target_modules
    if names is None or isinstance(names, str):
        return []
    unused = unused_names(names, (to_model(p, alignment) for p in modules))
    if not unused:
        return []
    return [
        Finding(
            "COMPAT-TARGET-UNUSED",
            Category.COMPAT,
            Severity.WARNING,
            f"target_modules names {', '.join(unused)}, which match no module of this base; PEFT ignores them",
            subject="target_modules",
            expected="names of modules in this base",
            actual=", ".join(unused),
            hint="harmless if the adapter was trained on this base; otherwise the adapter's base had other module "
            "names (e.g. remote-code Phi's Wqkv vs today's q_proj/k_proj/v_proj)",
        )
    ]


def raises_finding(config: AdapterConfig, raises: str) -> Finding:
    """PEFT refuses to build the adapter: quote what it will say."""
    targets = config.target_modules
    if raises.startswith("NoMatchingPeftModuleError"):
        shown = _names(targets) if targets is not None else "(none)"
        return Finding(
            "COMPAT-NO-TARGET",
            Category.COMPAT,
            Severity.ERROR,
            f"target_modules {shown} match no module of this base: PEFT refuses to load the adapter ({raises})",
            subject="target_modules",
            expected="at least one matching module",
            actual="none",
            hint="the base's module names differ from the adapter's base (another architecture, or names "
            "transformers renamed since the adapter was made: PEFT matches the names of the built model)",
        )
    return Finding(
        "COMPAT-PEFT-REFUSES",
        Category.COMPAT,
        Severity.ERROR,
        f"PEFT refuses to build this adapter on this base: {raises}",
        subject="target_modules",
        expected="a configuration PEFT can build",
        actual=raises.partition(":")[0],
        hint="target both halves of a fused pair (or re-train on the fused layout)"
        if "Cannot convert" in raises
        else "PEFT fuses per-expert LoRA pairs (gate_proj + up_proj, w1 + w3) into one tensor and this adapter holds "
        "only one half of a pair"
        if "torch.cat" in raises
        else "adjust target_modules / target_parameters in adapter_config.json",
    )


def _names(targets: tuple[str, ...] | str) -> str:
    return repr(targets) if isinstance(targets, str) else "[" + ", ".join(targets) + "]"


def unmatched_findings(
    unmatched: list[str],
    lora: dict[str, LoraModule],
    modules: dict[str, BaseModule],
    alignment: tuple[str, str],
    facts: ModelFacts,
) -> list[Finding]:
    """The finding for adapter modules PEFT would match to no base module: ``COMPAT-NO-MATCH`` (an error) when
    none match, so the adapter does nothing, otherwise one listing the modules whose tensors are dropped, each
    pattern with a hint on the likely renaming. No finding when every module matches."""
    if not unmatched:
        return []
    total = len(lora)
    tensors = sum(len(lora[p].parts) for p in unmatched)
    by_pattern: dict[str, list[str]] = defaultdict(list)
    for path in unmatched:
        by_pattern[pattern_of(path)].append(path)
    parts = []
    hints = []
    for pattern, paths in sorted(by_pattern.items()):
        parts.append(f"{pattern} {where(paths)}")
        hints.append(_unmatched_hint(paths, modules, alignment, facts))
    if len(unmatched) == total:
        code = "COMPAT-NO-MATCH"
        message = (
            f"none of the adapter's {total} LoRA modules exist in this base: PEFT would load it without an "
            f"error and the adapter would have no effect at all ({'; '.join(parts)})"
        )
    else:
        code = "COMPAT-UNMATCHED"
        message = (
            f"PEFT would load this adapter and silently ignore {len(unmatched)} of its {total} LoRA modules "
            f"({tensors} tensors): {'; '.join(parts)}"
        )
    subject = next(iter(sorted(by_pattern))) if len(by_pattern) == 1 else None
    return [
        Finding(
            code,
            Category.COMPAT,
            Severity.ERROR,
            message,
            subject=subject,
            expected="every adapter module present in the base",
            actual=f"{len(unmatched)} of {total} missing",
            hint="; ".join(sorted(set(hints))),
        )
    ]


def _unmatched_hint(
    paths: list[str], modules: dict[str, BaseModule], alignment: tuple[str, str], facts: ModelFacts
) -> str:
    layers = [i[0] for i in map(layer_indices, paths) if i]
    n_layers = facts.num_hidden_layers
    if layers and n_layers is not None and min(layers) >= n_layers:
        return f"the adapter was trained on a base with at least {max(layers) + 1} layers; this base has {n_layers}"
    parent = to_base(paths[0].rpartition(".")[0], alignment)
    renamed = _renamed_as(paths[0], modules, alignment)
    if renamed is not None:
        old = to_base(paths[0], alignment).split(".")
        new = renamed.split(".")
        change = ", ".join(f"`{a}` → `{b}`" for a, b in zip(old, new, strict=False) if a != b) or "paths differ"
        return (
            f"modules were renamed ({change}); the base has them under the new names: another transformers "
            "release or architecture variant than the adapter's base"
        )
    siblings = sorted({m.rpartition(".")[2] for m in modules if m.rpartition(".")[0] == parent})
    if siblings:
        return (
            f"this base has {', '.join(siblings[:8])} at {parent}: the modules were renamed, so the adapter's "
            "base is another architecture or transformers version"
        )
    return "this base has no such modules: the adapter was trained on another architecture"


def _renamed_as(path: str, modules: dict[str, BaseModule], alignment: tuple[str, str]) -> str | None:
    """The one base module that looks like ``path`` renamed (same leaf and layer, a segment or two differ)."""
    leaf = path.rpartition(".")[2]
    layers = layer_indices(path)
    parts = path.split(".")

    def renamed(other: str) -> bool:
        """Same shape of path, the same layer index in the same place, one or two segments named otherwise."""
        theirs = other.split(".")
        if len(theirs) != len(parts) or theirs[-1] != leaf or layer_indices(other) != layers:
            return False
        differ = [(a, b) for a, b in zip(parts, theirs, strict=True) if a != b]
        return 0 < len(differ) <= 2 and not any(a.isdigit() or b.isdigit() for a, b in differ)

    candidates = [m for m in modules if renamed(m)]
    return candidates[0] if len(candidates) == 1 else None


def named_keys_finding(keys: list[str]) -> Finding:
    """``ADAPTER-KEYS``: tensor keys that still carry an adapter name, which PEFT's load never matches."""
    example = keys[0]
    return Finding(
        "ADAPTER-KEYS",
        Category.ADAPTER,
        Severity.ERROR,
        f"{len(keys)} tensor key(s) still carry an adapter name (e.g. `{example}`): PEFT inserts the adapter name "
        "itself when loading, so these tensors load nowhere",
        subject=example,
        expected="base_model.model.<module>.lora_A.weight",
        actual=example,
        hint="save the adapter with PeftModel.save_pretrained(), which removes the adapter name from the keys",
    )


def untrained_finding(untrained: list[str], renamed: bool, *, named_keys: bool = False) -> Finding:
    """``COMPAT-UNTRAINED``: base modules ``target_modules`` selects that the adapter holds no weights for (PEFT
    would wrap them with a zero ``lora_B``), grouped by pattern."""
    by_pattern: dict[str, list[str]] = defaultdict(list)
    for path in untrained:
        by_pattern[pattern_of(path)].append(path)
    parts = [f"{pattern} {where(paths)}" for pattern, paths in sorted(by_pattern.items())]
    return Finding(
        "COMPAT-UNTRAINED",
        Category.COMPAT,
        Severity.ERROR,
        f"target_modules selects {len(untrained)} base modules the adapter has no weights for: PEFT would give them "
        f"a zero lora_B, so the adapter does nothing there ({'; '.join(parts)})",
        subject=next(iter(sorted(by_pattern))) if len(by_pattern) == 1 else None,
        expected="trained weights for every targeted module",
        actual=f"{len(untrained)} without weights",
        hint=_untrained_hint(renamed, named_keys),
    )


def _untrained_hint(renamed: bool, named_keys: bool) -> str:
    if named_keys:
        return "the weights are there but their keys still carry the adapter name (see ADAPTER-KEYS); re-save them"
    if renamed:
        return "the adapter's tensors for these modules are saved under other names (renamed modules): not loaded"
    return "the base has more layers or other modules than the adapter's base; use the base it was trained on"


def dropped_finding(what: str, paths: list[str], tensors: int, hint: str) -> Finding:
    """Adapter tensors PEFT loads into nothing, for a reason other than a missing module: ``what`` says which."""
    by_pattern: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        by_pattern[pattern_of(path)].append(path)
    parts = [f"{pattern} {where(p)}" for pattern, p in sorted(by_pattern.items())]
    return Finding(
        "COMPAT-DROPPED",
        Category.COMPAT,
        Severity.ERROR,
        f"PEFT would load this adapter and silently drop {tensors} of its tensors: {what} ({'; '.join(parts)})",
        subject=next(iter(sorted(by_pattern))) if len(by_pattern) == 1 else None,
        expected="every adapter tensor loaded",
        actual=f"{tensors} dropped",
        hint=hint,
    )
