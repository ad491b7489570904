"""Generate the runtime-name rule tables shipped in ``lora_lock/runtime/data/`` from the installed libraries.

Dev environment only: this script imports transformers, peft and torch. The static side (``lora_lock.runtime``)
reads the JSON it writes and never imports them. Nothing here is written by hand per architecture: every rule
comes from the library that owns it.

* ``transformers.json`` — every entry of transformers' checkpoint conversion mapping (the identifiers it looks
  up by class name or ``model_type``, aliases resolved as the library resolves them, plus ``legacy``), each
  transform with the patterns and compiled regex exactly as the library builds them and its operations with
  their parameters; for every architecture class of the auto mappings, the tree of ``PreTrainedModel``
  sub-models that ``get_model_conversion_mapping`` walks (module path, class, ``model_type`` and the config key
  it is built from), found by building the model on the meta device; the base class ``AutoModel`` builds for
  each ``model_type``.
* ``peft.json`` — PEFT's own tables: its copy of ``_MODEL_TO_CONVERSION_PATTERN``, ``_MOE_TARGET_MODULE_MAPPING``,
  ``_MOE_FUSED_TARGETS``, the adapter-key renames ``build_peft_weight_mapping`` puts in front of the model's
  transforms, and for each converter of the transformers table the converters PEFT derives from it.

Usage: ``python scripts/gen_rule_tables.py [--out DIR] [--check]`` (``make rule-tables``). ``--check`` also
verifies that the static resolver reproduces ``get_model_conversion_mapping`` for every buildable class.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "lora_lock" / "runtime" / "data"
FORMAT = 1

#: Transform classes whose renaming the static side models (anything else is recorded as "custom").
KNOWN_TRANSFORMS = {
    "WeightRenaming": "rename",
    "PrefixChange": "rename",
    "GroupWeightRename": "group_rename",
    "Inkling2IndexOffsetWeightRename": "offset_rename",
    "WeightConverter": "convert",
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        items = [_jsonable(v) for v in value]
        return items if all(i is not _SKIP for i in items) else _SKIP
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items_d = {k: _jsonable(v) for k, v in value.items()}
        return items_d if all(v is not _SKIP for v in items_d.values()) else _SKIP
    return _SKIP


_SKIP = object()


def serialise_op(op: Any) -> dict[str, Any]:
    """An operation as its class name and its JSON-representable parameters."""
    out: dict[str, Any] = {"op": type(op).__name__}
    params = {}
    for cls in type(op).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if hasattr(op, slot):
                params[slot] = getattr(op, slot)
    params.update(getattr(op, "__dict__", {}))
    for key in sorted(params):
        if key.startswith("_"):
            continue
        value = _jsonable(params[key])
        if value is not _SKIP:
            out[key] = value
    return out


def serialise_transform(transform: Any) -> dict[str, Any]:
    """A transform as the static side needs it: kind, processed patterns, the compiled regex, operations."""
    cls = type(transform).__name__
    out: dict[str, Any] = {
        "class": cls,
        "kind": KNOWN_TRANSFORMS.get(cls, "custom"),
        "sources": list(transform.source_patterns),
        "targets": list(transform.target_patterns),
        "regex": transform.compiled_sources.pattern,
    }
    if cls == "Inkling2IndexOffsetWeightRename":
        out["offset"] = transform.offset
    if hasattr(transform, "operations"):
        out["ops"] = [serialise_op(op) for op in transform.operations]
    return out


class Interner:
    """Deduplicates serialised transforms into one list; a mapping entry refers to them by index."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._index: dict[str, int] = {}

    @property
    def lists(self) -> list[Any]:
        return [item["list"] for item in self.items]

    def add_list(self, items: list[Any]) -> int:
        return self.add({"list": items})

    def add(self, item: dict[str, Any]) -> int:
        key = json.dumps(item, sort_keys=True)
        if key not in self._index:
            self._index[key] = len(self.items)
            self.items.append(item)
        return self._index[key]


def _auto_classes() -> dict[str, str]:
    """Every architecture class named by transformers' auto mappings → the model_type it is registered under."""
    from transformers.models.auto import modeling_auto

    classes: dict[str, str] = {}
    for name in sorted(dir(modeling_auto)):
        if not (name.startswith("MODEL") and name.endswith("MAPPING_NAMES")):
            continue
        table = getattr(modeling_auto, name)
        if not isinstance(table, dict):
            continue
        for model_type, cls in sorted(table.items()):
            for cname in cls if isinstance(cls, (list, tuple)) else (cls,):
                classes.setdefault(cname, model_type)
    return dict(sorted(classes.items()))


def _config_paths(config: Any, depth: int = 0, prefix: str = "") -> dict[int, str]:
    """id(sub-config) → its dotted attribute path under ``config`` ("" is the root)."""
    from transformers import PretrainedConfig

    found = {id(config): prefix} if depth == 0 else {}
    if depth > 3:
        return found
    attributes = vars(config)
    for key in sorted(attributes):
        value = attributes[key]
        if isinstance(value, PretrainedConfig):
            path = f"{prefix}.{key}" if prefix else key
            found.setdefault(id(value), path)
            for sub_id, sub_path in _config_paths(value, depth + 1, path).items():
                found.setdefault(sub_id, sub_path)
    return found


def build_meta(cname: str, model_type: str) -> Any:
    """The architecture built from its default config on the meta device (no weights allocated)."""
    import torch
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = getattr(transformers, cname)
    config = CONFIG_MAPPING[model_type]()
    with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):
        return cls._from_config(config)


def architecture_entry(model: Any) -> dict[str, Any]:
    """The sub-model tree ``get_model_conversion_mapping`` walks, in its order."""
    from transformers.modeling_utils import PreTrainedModel

    paths = _config_paths(model.config)
    submodels = []
    for module_name, sub in model.named_modules():
        if not isinstance(sub, PreTrainedModel):
            continue
        config_key = paths.get(id(sub.config))
        submodels.append([module_name, type(sub).__name__, sub.config.model_type, config_key])
    return {"base_model_prefix": model.base_model_prefix, "submodels": submodels}


def transformers_table(check: bool) -> tuple[dict[str, Any], list[str]]:
    import transformers
    from transformers.conversion_mapping import _build_checkpoint_conversion_mapping, get_model_conversion_mapping
    from transformers.models.auto import modeling_auto

    interner = Interner()
    raw = _build_checkpoint_conversion_mapping()
    mappings = {key: [interner.add(serialise_transform(t)) for t in raw[key]] for key in sorted(raw)}

    architectures: dict[str, Any] = {}
    unbuildable: dict[str, str] = {}
    problems: list[str] = []
    for cname, model_type in _auto_classes().items():
        if not hasattr(transformers, cname):
            unbuildable[cname] = "not exported by transformers"
            continue
        try:
            model = build_meta(cname, model_type)
        except Exception as exc:
            unbuildable[cname] = f"default config does not build ({type(exc).__name__})"
            continue
        try:
            entry = architecture_entry(model)
        except Exception as exc:
            unbuildable[cname] = f"sub-models not readable ({type(exc).__name__})"
            continue
        entry["model_type"] = model.config.model_type
        architectures[cname] = entry
        if check:
            expected = [serialise_transform(t) for t in get_model_conversion_mapping(model)]
            scopes = [[t.scope_prefix, t.base_model_prefix] for t in get_model_conversion_mapping(model)]
            problems.extend(_check_resolution(cname, entry, mappings, interner.items, expected, scopes))
        del model

    # Compact form: the root entry is implied by the class; sub-model trees are shared between the heads of a type.
    trees = Interner()
    compact: dict[str, list[Any]] = {}
    for cname, entry in architectures.items():
        root, *rest = entry["submodels"]
        if root != ["", cname, entry["model_type"], ""]:
            problems.append(f"{cname}: root sub-model entry is {root}")
        compact[cname] = [entry["model_type"], entry["base_model_prefix"], trees.add_list(rest)]

    auto_base = {mt: (c if isinstance(c, str) else c[0]) for mt, c in sorted(modeling_auto.MODEL_MAPPING_NAMES.items())}
    table = {
        "format": FORMAT,
        "generated_from": {"transformers": transformers.__version__},
        "transforms": interner.items,
        "mappings": mappings,
        "architectures": compact,
        "trees": trees.lists,
        "unbuildable": unbuildable,
        "auto_base_class": auto_base,
    }
    return table, problems


def _check_resolution(
    cname: str,
    entry: dict[str, Any],
    mappings: dict[str, list[int]],
    transforms: list[dict[str, Any]],
    expected: list[dict[str, Any]],
    scopes: list[list[Any]],
) -> list[str]:
    """The static resolver must pick the same transforms, in the same order and scope, as the library."""
    sys.path.insert(0, str(ROOT))
    from lora_lock.runtime import resolve

    got = resolve.resolve_tree(entry["submodels"], entry["base_model_prefix"], mappings)  # the full tree
    got_items = [transforms[r.index] for r in got]
    got_scopes = [[r.scope_prefix, r.base_model_prefix] for r in got]
    if got_items != expected or got_scopes != scopes:
        return [f"{cname}: static resolution differs from get_model_conversion_mapping"]
    return []


def peft_table(raw_mappings: dict[str, list[int]]) -> dict[str, Any]:
    import peft
    from peft import LoraConfig
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
    from peft.utils import transformers_weight_conversion as twc
    from transformers.conversion_mapping import _build_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming

    interner = Interner()
    lora = LoraConfig()
    # The renames PEFT puts in front of any model's transforms (prefix stripping, adapter name insertion).
    probe = WeightRenaming("lora_lock_probe_source", "lora_lock_probe_target")
    preamble_objs = twc.build_peft_weight_mapping([probe], adapter_name="default", peft_config=lora)
    preamble = [interner.add(serialise_transform(t)) for t in preamble_objs if t is not probe]

    # For every converter of the transformers table: what PEFT derives from it for LoRA keys.
    raw = _build_checkpoint_conversion_mapping()
    derived: dict[str, list[int]] = {}
    for key in sorted(raw):
        for transform, index in zip(raw[key], raw_mappings[key], strict=True):
            if not isinstance(transform, WeightConverter) or str(index) in derived:
                continue
            built = twc.build_peft_weight_mapping([transform], adapter_name="default", peft_config=lora)
            derived[str(index)] = [interner.add(serialise_transform(t)) for t in built[len(preamble_objs) - 1 :]]
    derived = {k: v for k, v in sorted(derived.items(), key=lambda kv: int(kv[0])) if v}

    return {
        "format": FORMAT,
        "generated_from": {"peft": peft.__version__, "transformers": md.version("transformers")},
        "adapter_name": "default",
        "model_to_conversion_pattern": dict(sorted(twc._MODEL_TO_CONVERSION_PATTERN.items())),
        "moe_target_module_mapping": {k: dict(v) for k, v in sorted(twc._MOE_TARGET_MODULE_MAPPING.items())},
        "moe_fused_targets": {k: {n: list(t) for n, t in v.items()} for k, v in sorted(twc._MOE_FUSED_TARGETS.items())},
        "prefixes": dict(sorted((str(k.value), v) for k, v in PEFT_TYPE_TO_PREFIX_MAPPING.items())),
        "transforms": interner.items,
        "preamble": preamble,
        "derived_converters": derived,
    }


def dump(obj: Any) -> str:
    """Deterministic JSON: sorted keys, compact separators, trailing newline."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"


def generate(out: Path, *, check: bool = False) -> list[str]:
    """Write both tables into ``out``; returns the resolver disagreements found with ``check``."""
    import transformers

    transformers.logging.set_verbosity_error()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    table, problems = transformers_table(check)
    ptable = peft_table(table["mappings"])
    out.mkdir(parents=True, exist_ok=True)
    for name, obj in (("transformers.json", table), ("peft.json", ptable)):
        tmp = out / f".{name}.tmp"
        tmp.write_text(dump(obj), encoding="utf-8")
        tmp.replace(out / name)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="verify the static resolver against the library")
    args = parser.parse_args(argv)
    problems = generate(args.out, check=args.check)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
