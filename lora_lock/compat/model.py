"""The base's side: the modules of the model transformers builds (runtime names), from checkpoint names and shapes.

PEFT matches ``target_modules`` against ``model.named_modules()`` and loads adapter keys into the built model, so
the engine works on runtime names: :func:`lora_lock.runtime.runtime_view` renames and fuses the checkpoint's
tensors the way the target transformers does, and this module turns those parameters into PEFT's view of modules
(kind, in/out features, quantization), adding an ``lm_head`` tied to the input embedding when the checkpoint
leaves it out. A module that is a plain rename of a checkpoint module keeps what :mod:`lora_lock.inspect.modules`
read for it (packed quantized layouts included); converted modules (fused experts) are described from their
runtime shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from lora_lock.compat.keys import OUTPUT_HEADS
from lora_lock.findings import Finding
from lora_lock.inspect.checkpoint import Checkpoint
from lora_lock.inspect.model_config import ModelFacts
from lora_lock.inspect.modules import BaseModule, Kind, base_modules, module_of
from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.runtime import RuntimeView, Stack, runtime_view

_EMBEDDING_PREFERENCE = ("embed_tokens", "wte", "word_embeddings", "embed_in", "shared", "tok_embeddings")


@dataclass(frozen=True)
class RuntimeModel:
    """The base as PEFT meets it: modules and parameters under runtime names, and the rules that produced them."""

    modules: dict[str, BaseModule]
    #: runtime parameter name → tensor (shape, dtype); fused expert tensors included
    params: dict[str, TensorInfo]
    rules: str
    notes: tuple[Finding, ...]
    #: runtime module → parameter leaf names it holds directly (``weight``, ``bias``, ``gate_up_proj`` …)
    param_names: dict[str, frozenset[str]]
    #: prefixes transformers may add or strip at load (the ``base_model_prefix``, when the checkpoint's names
    #: lack it); None: unknown architecture, any leading prefix (one segment added, one or two stripped)
    movable_prefixes: tuple[str, ...] | None = None


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


def _group(params: Iterable[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name in params:
        module, param = module_of(name)
        out.setdefault(module, set()).add(param)
    return out


def _describe(checkpoint: Checkpoint, facts: ModelFacts, path: str, tensors: dict[str, TensorInfo]) -> BaseModule:
    """A converted module, described from its runtime tensors as :func:`base_modules` describes stored ones."""
    named = {name: replace(info, name=name) for name, info in tensors.items()}
    try:
        found = base_modules(replace(checkpoint, tensors=named), facts).get(path)
    except StopIteration:  # a quant state renamed away from its shard: describe it as a plain tensor
        found = None
    if found is not None:
        return found
    first = next(iter(tensors.values()))
    return BaseModule(path, Kind.OTHER, None, None, first.shape, first.dtype)


def _modules(checkpoint: Checkpoint, facts: ModelFacts, view: RuntimeView) -> dict[str, BaseModule]:
    stored = base_modules(checkpoint, facts)
    tensors = checkpoint.tensors
    if not view.transforms or (
        not view.fused
        and view.tensors.keys() == tensors.keys()
        and all(info is tensors[name] for name, info in view.tensors.items())
    ):
        return stored  # nothing renamed or reshaped: the checkpoint's modules are the runtime modules
    by_module: dict[str, dict[str, TensorInfo]] = {}
    for name, info in view.tensors.items():
        module, _ = module_of(name)
        by_module.setdefault(module, {})[name] = info
    out: dict[str, BaseModule] = {}
    for module, tensors in by_module.items():
        origins = {module_of(o)[0] for name in tensors for o in view.origin.get(name, (name,))}
        source = next(iter(origins)) if len(origins) == 1 else None
        plain = (
            source is not None
            and source in stored
            and all(
                (o := view.origin.get(name, (name,))) is not None
                and len(o) == 1
                and o[0] in checkpoint.tensors
                and tuple(checkpoint.tensors[o[0]].shape) == tuple(info.shape)
                for name, info in tensors.items()
            )
        )
        if plain and source is not None:
            base = stored[source]
            out[module] = base if source == module else replace(base, path=module)
        else:
            out[module] = _describe(checkpoint, facts, module, tensors)
    return out


def runtime_model(
    checkpoint: Checkpoint, facts: ModelFacts, model_config: Mapping[str, Any], stack: Stack
) -> RuntimeModel:
    """The base's modules under the names ``stack``'s transformers gives them, with the rules applied."""
    view = runtime_view(model_config, checkpoint.tensors, stack)
    modules = with_tied_head(_modules(checkpoint, facts, view), facts)
    names = _group(view.tensors)
    prefix = view.base_model_prefix
    movable: tuple[str, ...] | None = None
    if prefix is not None:
        # transformers moves the base-model prefix only when the checkpoint was saved without (or with) it for
        # another class; a checkpoint that already has it is loaded under the names it has
        has_prefix = any(name.startswith(prefix + ".") for name in view.tensors)
        movable = () if not prefix or has_prefix else (prefix + ".",)
    return RuntimeModel(
        modules=modules,
        params=view.tensors,
        rules=view.rules,
        notes=view.notes,
        param_names={k: frozenset(v) for k, v in names.items()},
        movable_prefixes=movable,
    )


def containers(modules: Iterable[str]) -> set[str]:
    """Every module path that holds others (``a.b`` for ``a.b.c``): what ``named_modules`` lists besides them."""
    out: set[str] = set()
    for path in modules:
        head = path
        while "." in head:
            head = head.rpartition(".")[0]
            if head in out:
                break
            out.add(head)
    return out


# --- prefix alignment --------------------------------------------------------------------------------------------


def _shortest_first(item: tuple[str, int]) -> tuple[int, str]:
    """Candidates are tried shortest prefix first, then by name, so ties resolve the same way on every run."""
    return len(item[0]), item[0]


def _add_scores(base_paths: set[str], wanted: set[str]) -> dict[str, int]:
    """Prefix to add → how many adapter paths it turns into base paths (a base's first segment)."""
    scores: dict[str, int] = {}
    for name in base_paths:
        head, dot, rest = name.partition(".")
        if dot and rest in wanted:
            scores[head + "."] = scores.get(head + ".", 0) + 1
    return scores


def _strip_scores(paths: list[str], base_paths: set[str]) -> dict[str, int]:
    """Prefix to strip → how many adapter paths it turns into base paths (an adapter's first one or two segments)."""
    scores: dict[str, int] = {}
    for path in paths:
        parts = path.split(".")
        for k in range(1, min(2, len(parts) - 1) + 1):
            strip = ".".join(parts[:k]) + "."
            if path[len(strip) :] in base_paths:
                scores[strip] = scores.get(strip, 0) + 1
    return scores


def align(
    adapter_paths: Iterable[str], base_paths: set[str], movable: tuple[str, ...] | None = None
) -> tuple[str, str]:
    """Find (strip, add) so that ``add + path[len(strip):]`` names base modules for the most adapter modules.

    transformers adds or strips the base-model prefix on load (``gpt2`` stores ``h.0.attn`` for
    ``transformer.h.0.attn``), so the adapter's module names and the base file's names may differ by it.
    ``movable``: the only prefixes that may be added or stripped (None: any one leading segment or two).
    """
    paths = sorted(set(adapter_paths))
    if not paths:
        return "", ""
    best = ("", "")
    best_score = sum(1 for p in paths if p in base_paths)
    if best_score == len(paths):
        return best
    # Each candidate's score counted in one pass over the names (O(N)), not one pass per candidate (O(N²): a
    # crafted adapter with 16k distinct leading names took minutes). transformers adds or strips the base-model
    # prefix; it never swaps one for another, so a candidate adds a base's first segment or strips an adapter's
    # first one or two.
    add_scores = _add_scores(base_paths, set(paths))
    strip_scores = _strip_scores(paths, base_paths)
    candidates = [("", add, n) for add, n in sorted(add_scores.items(), key=_shortest_first)]
    candidates += [(strip, "", n) for strip, n in sorted(strip_scores.items(), key=_shortest_first)]
    for strip, add, score in candidates:
        if movable is not None and (strip or add) not in movable:
            continue
        if score > best_score:
            best, best_score = (strip, add), score
    return best


def to_base(path: str, alignment: tuple[str, str]) -> str:
    """An adapter-namespace module path → the base's (runtime) name under ``alignment``."""
    strip, add = alignment
    return add + path[len(strip) :] if path.startswith(strip) else path


def to_model(path: str, alignment: tuple[str, str]) -> str:
    """A base (runtime) module path → the adapter's namespace under ``alignment``."""
    strip, add = alignment
    return strip + path[len(add) :] if path.startswith(add) else path
