"""Which transforms transformers applies to a model at load, from the generated table (no transformers import).

transformers walks the model's ``PreTrainedModel`` sub-models in ``named_modules`` order; each is looked up by
class name first, then by ``model_type``; a sub-model's transforms are scoped to its module path (relative to
the root's ``base_model_prefix``), the root's apply everywhere, an identifier an ancestor already claimed is
skipped, and the ``legacy`` renames come last. :func:`resolve_tree` follows those steps over the sub-model tree
the generator recorded, so its output is the list ``get_model_conversion_mapping`` returns (the generator checks
that for every buildable architecture).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resolved:
    """One transform as applied to a model: its index in the table and its scope (``None`` = everywhere)."""

    index: int
    scope_prefix: str | None = None
    base_model_prefix: str | None = None


#: One recorded sub-model: module path ("" = the root), class name, model_type, config key it is built from.
Submodel = Sequence[Any]


def _claimed(seen: list[str], module_name: str) -> bool:
    return any(s == "" or module_name.startswith(s + ".") for s in seen)


def resolve_tree(
    submodels: Sequence[Submodel],
    base_model_prefix: str,
    mappings: Mapping[str, Sequence[int]],
    *,
    legacy: bool = True,
) -> list[Resolved]:
    """The transforms for a model whose ``PreTrainedModel`` sub-models are ``submodels`` (in module order)."""
    out: list[Resolved] = []
    seen: dict[str, list[str]] = {}
    for entry in submodels:
        module_name, class_name, model_type = str(entry[0]), str(entry[1]), entry[2]
        if _claimed(seen.get(class_name, []), module_name):
            continue
        conversions = mappings.get(class_name)
        found_via_class = conversions is not None
        if not found_via_class:
            if model_type and _claimed(seen.get(str(model_type), []), module_name):
                continue
            if isinstance(model_type, str):
                conversions = mappings.get(model_type)
        if conversions is None:
            continue
        if module_name == "":
            out.extend(Resolved(i) for i in conversions)
        else:
            scope = module_name.removeprefix(base_model_prefix).removeprefix(".")
            out.extend(Resolved(i, scope, base_model_prefix) for i in conversions)
        seen.setdefault(class_name, []).append(module_name)
        if not found_via_class and isinstance(model_type, str) and model_type:
            seen.setdefault(model_type, []).append(module_name)
    if legacy:
        out.extend(Resolved(i) for i in mappings.get("legacy", ()))
    return out


def subconfig(config: Mapping[str, Any], key: str | None) -> Mapping[str, Any] | None:
    """The sub-config at dotted ``key`` of a config.json mapping ("" = the root), or None when absent."""
    if key is None:
        return None
    node: Any = config
    for part in key.split(".") if key else ():
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None


def adapt_tree(
    submodels: Sequence[Submodel],
    config: Mapping[str, Any],
    tree_of: Callable[[str], Sequence[Submodel] | None],
    auto_base_class: Mapping[str, str],
) -> tuple[list[list[Any]], list[str]]:
    """The recorded tree (built from the default config) adapted to a real config's sub-config model types.

    A sub-model built from a sub-config (``text_config``, ``vision_config``) is the ``AutoModel`` class of that
    sub-config's ``model_type``; when the real config names another type than the default one, the sub-tree is
    replaced by the tree recorded for that class (``tree_of``). Returns the tree and the sub-models that had
    to be guessed.
    """
    out: list[list[Any]] = []
    guessed: list[str] = []
    skip_under: str | None = None
    for entry in submodels:
        path, cls, model_type, key = str(entry[0]), str(entry[1]), entry[2], entry[3]
        if skip_under is not None and path.startswith(skip_under + "."):
            continue
        skip_under = None
        real = subconfig(config, key) if key else None
        real_type = real.get("model_type") if real is not None else None
        if path == "" or not isinstance(real_type, str) or real_type == model_type:
            out.append([path, cls, model_type, key])
            continue
        new_cls = auto_base_class.get(real_type)
        recorded = tree_of(new_cls) if new_cls else None
        if new_cls is None or recorded is None:
            out.append([path, new_cls or cls, real_type, key])
            guessed.append(path)
            skip_under = path
            continue
        for sub in recorded:
            sub_path = f"{path}.{sub[0]}" if sub[0] else path
            sub_key = f"{key}.{sub[3]}" if sub[3] else key
            out.append([sub_path, sub[1], sub[2], sub_key])
        skip_under = path
    return out, guessed
