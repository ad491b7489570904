"""Checkpoint tensors → the parameters the model transformers builds from them (names and shapes), statically.

The stack decides the rules: transformers 5 applies its load conversions (resolved per architecture from the
generated table); transformers 4 builds checkpoint names, except that from 4.52 the VLM families move their
top-level prefixes (``key_mapping``), which the table approximates with the anchored renames of VLMs whose
transformers 5 rules move a root prefix under ``model.``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lora_lock.errors import Unmodelled
from lora_lock.findings import Category, Finding, Severity
from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.runtime import rename, shapes
from lora_lock.runtime.resolve import Resolved, adapt_tree, resolve_tree
from lora_lock.runtime.stack import Stack, release
from lora_lock.runtime.tables import TransformersTable, transformers_table

#: Longer checkpoint names are kept as they are: real names are a few hundred characters, and the library's
#: ``.*`` patterns would cost quadratic time on a hostile megabyte-long name.
MAX_NAME = 1024
#: transformers 4 releases from this one move VLM prefixes at load (``_checkpoint_conversion_mapping``).
VLM_KEY_MAPPING_SINCE = (4, 52)

CODE_UNKNOWN = "RUNTIME-UNKNOWN-MODEL"
CODE_UNMODELLED = "RUNTIME-UNMODELLED"
CODE_TABLE_AGE = "RUNTIME-TABLE-VERSION"
CODE_APPROX = "RUNTIME-APPROXIMATE"


@dataclass(frozen=True)
class RuntimeView:
    """The model as transformers builds it: runtime parameter names with their shapes and checkpoint origins."""

    tensors: dict[str, TensorInfo]
    origin: dict[str, tuple[str, ...]]
    fused: frozenset[str]
    rules: str
    notes: tuple[Finding, ...]
    #: The transforms applied, in order (empty when none apply); for renaming other names the same way.
    transforms: tuple[rename.Transform, ...] = ()
    architecture: str | None = None
    model_type: str | None = None
    #: The ``base_model_prefix`` of the architecture (e.g. ``model``), when the table knows it.
    base_model_prefix: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _note(
    code: str,
    message: str,
    *,
    severity: Severity = Severity.WARNING,
    subject: str | None = None,
    hint: str | None = None,
    category: Category = Category.COMPAT,
) -> Finding:
    return Finding(code, category, severity, message, subject=subject, hint=hint)


def _str_or_none(value: Any, limit: int = 200) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def config_identity(config: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(architecture class, model_type) from a config.json mapping; hostile values give None."""
    model_type = _str_or_none(config.get("model_type")) if isinstance(config, Mapping) else None
    archs = config.get("architectures") if isinstance(config, Mapping) else None
    arch = None
    if isinstance(archs, list):
        arch = next((a for a in archs[:16] if _str_or_none(a)), None)
    return arch, model_type


def _bind(table: TransformersTable, resolved: list[Resolved]) -> tuple[rename.Transform, ...]:
    return tuple(
        rename.Transform(table.transforms[r.index], r.scope_prefix, r.base_model_prefix)
        for r in resolved
        if 0 <= r.index < len(table.transforms)
    )


def resolve_model(
    config: Mapping[str, Any], table: TransformersTable | None = None
) -> tuple[tuple[rename.Transform, ...], str | None, list[Finding]]:
    """The transforms transformers 5 (the table's release) applies to this config's model, and notes."""
    table = table or transformers_table()
    arch, model_type = config_identity(config)
    notes: list[Finding] = []
    entry = table.architecture(arch) if arch else None
    if entry is not None:
        _, base_prefix, submodels = entry

        def tree_of(cls: str) -> list[list[Any]] | None:
            found = table.architecture(cls)
            return found[2] if found else None

        tree, guessed = adapt_tree(submodels, config, tree_of, table.auto_base_class)
        for path in guessed:
            notes.append(
                _note(
                    CODE_APPROX,
                    f"sub-model {path!r} of {arch} is built from a config type the table "
                    "has no architecture for; only its own class and model_type rules were applied",
                    subject=path,
                )
            )
        return _bind(table, resolve_tree(tree, base_prefix, table.mappings)), base_prefix, notes
    known = model_type is not None and table.known_model_type(model_type)
    if arch is None and not known:
        notes.append(
            _note(
                CODE_UNKNOWN,
                f"config.json model_type {model_type!r} and architectures are unknown to the transformers "
                f"{table.version} rule table; module names are taken from the checkpoint as stored",
                hint="the probe tier (verify with the probe) loads the model and confirms the names",
            )
        )
        return _bind(table, resolve_tree([], "", table.mappings)), None, notes
    why = table.unbuildable.get(arch or "", "not in transformers' auto mappings")
    notes.append(
        _note(
            CODE_APPROX,
            f"architecture {arch or '(none named)'} ({why}): its sub-models are unknown to the rule table, so only "
            f"rules keyed by its class name or model_type {model_type!r} were applied",
            subject=arch,
            hint="the probe tier loads the model and confirms the names",
        )
    )
    root = [["", arch or "", model_type, ""]]
    return _bind(table, resolve_tree(root, "", table.mappings)), None, notes


def _v4_transforms(transforms: tuple[rename.Transform, ...], table: TransformersTable) -> tuple[rename.Transform, ...]:
    """transformers 4.52+ key_mapping, approximated: anchored renames of VLMs that move a root prefix to model.*

    transformers 5's ``legacy`` renames (which fix layouts written by 5.x releases) never applied on 4.x.
    """
    legacy = {id(table.transforms[i]) for i in table.mappings.get("legacy", ())}
    anchored = [
        t
        for t in transforms
        if t.kind == "rename" and id(t.spec) not in legacy and all(s.startswith("^") for s in t.sources)
    ]
    is_vlm = any(t.scope_prefix is None and t.targets and t.targets[0].startswith("model.") for t in anchored)
    return tuple(anchored) if is_vlm else ()


#: (runtime name, converter) → the converter and the checkpoint tensors it gathers: (name, source pattern, tensor).
Groups = dict[tuple[str, int], tuple[rename.Transform, list[tuple[str, str, TensorInfo]]]]


def convert_group(
    conv: rename.Transform,
    layer_name: str,
    members: list[tuple[str, str, TensorInfo]],
    config: Mapping[str, Any],
) -> dict[str, tuple[tuple[int, ...], TensorInfo, tuple[str, ...]]]:
    """One converter on the tensors it gathered for ``layer_name``: produced name → (shape, the first member's
    tensor, the member names it was built from). Raises :class:`Unmodelled` when the shapes cannot be known."""
    data: dict[str, shapes.Value] = {}
    for _, source, info in members:
        existing = data.setdefault(source, [])
        assert isinstance(existing, list)
        existing.append(info.shape)
    result = shapes.apply_ops(conv.ops, data, conv.sources, conv.targets, layer_name=layer_name, config=config)
    full = layer_name.replace("*.", "0.") if "*." in layer_name else layer_name
    split = next((full.partition(k) for k in result if k and k in full), None)
    first = members[0][2]
    origins = tuple(name for name, _, _ in members)
    out: dict[str, tuple[tuple[int, ...], TensorInfo, tuple[str, ...]]] = {}
    for key, value in result.items():
        name = split[0] + key + split[2] if split is not None else key
        out[name] = (shapes._single(value), first, origins)
    return out


@dataclass
class _Built:
    """The runtime tensors as the loader builds them up: each name's tensor, its checkpoint origins, the names
    fused from several tensors, and the notes on what could not be modelled."""

    out: dict[str, TensorInfo] = field(default_factory=dict)
    origin: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fused: set[str] = field(default_factory=set)
    notes: list[Finding] = field(default_factory=list)


def _rename_all(
    tensors: Mapping[str, TensorInfo], transforms: tuple[rename.Transform, ...], built: _Built
) -> tuple[Groups, int]:
    """Rename every tensor in the loader's visiting order; tensors a converter gathers are grouped for it.

    Returns the groups and how many names were too long to rename."""
    state = rename.RenameState()
    groups: Groups = {}
    long_names = 0
    for name in rename.visit_order(tensors, transforms):
        info = tensors[name]
        if len(name) > MAX_NAME:
            long_names += 1
            runtime, conv, source = name, None, None
        else:
            runtime, conv, source = rename.rename_key(name, transforms, state)
        if conv is not None and source is not None:
            groups.setdefault((runtime, id(conv)), (conv, []))[1].append((name, source, info))
            continue
        if runtime not in built.out:  # the loader keeps the first tensor that claims a name
            built.out[runtime] = info if runtime == name else replace(info, name=runtime)
            built.origin[runtime] = (name,)
    return groups, long_names


def _convert_all(groups: Groups, config: Mapping[str, Any], built: _Built) -> None:
    """Run each converter on its group; a group that cannot be modelled keeps its checkpoint names, with a note."""
    for (layer_name, _), (conv, members) in groups.items():
        try:
            produced = convert_group(conv, layer_name, members, config)
        except Unmodelled as exc:
            built.notes.append(
                _note(
                    CODE_UNMODELLED,
                    f"transformers converts {len(members)} checkpoint tensor(s) into "
                    f"{layer_name} by {conv.describe()}, which cannot be modelled statically ({exc}); "
                    "their checkpoint names were kept",
                    subject=layer_name,
                    hint="the probe tier loads the model and confirms the names and shapes",
                )
            )
            for name, _, info in members:
                built.out.setdefault(name, info)
                built.origin.setdefault(name, (name,))
            continue
        for runtime, (shape, first, origins) in produced.items():
            built.out[runtime] = TensorInfo(runtime, first.dtype, shape, first.file, 0, 0)
            built.origin[runtime] = origins
            if len(origins) > 1:
                built.fused.add(runtime)


def apply_transforms(
    tensors: Mapping[str, TensorInfo],
    transforms: tuple[rename.Transform, ...],
    config: Mapping[str, Any],
) -> tuple[dict[str, TensorInfo], dict[str, tuple[str, ...]], frozenset[str], list[Finding]]:
    """Rename and convert checkpoint tensors the way transformers' loader does."""
    built = _Built()
    groups, long_names = _rename_all(tensors, transforms, built)
    _convert_all(groups, config, built)
    if long_names:
        built.notes.append(
            _note(
                CODE_UNMODELLED,
                f"{long_names} checkpoint tensor name(s) longer than {MAX_NAME} characters were not renamed",
            )
        )
    ordered = dict(sorted(built.out.items()))
    return ordered, {k: built.origin[k] for k in ordered}, frozenset(built.fused), built.notes


def _custom_notes(transforms: tuple[rename.Transform, ...]) -> list[Finding]:
    return [
        _note(
            CODE_UNMODELLED,
            f"transformers applies {t.describe()}, a transform this table does not model; "
            "names it touches may differ at runtime",
            hint="the probe tier confirms the names",
        )
        for t in transforms
        if t.kind == "custom"
    ]


def runtime_view(config: Mapping[str, Any], tensors: Mapping[str, TensorInfo], stack: Stack) -> RuntimeView:
    """The runtime parameters transformers (as ``stack`` says) builds from these checkpoint tensors."""
    table = transformers_table()
    arch, model_type = config_identity(config if isinstance(config, Mapping) else {})
    config = config if isinstance(config, Mapping) else {}
    notes: list[Finding] = []
    target = release(stack.transformers)
    table_release = release(table.version) or (0,)
    if target is not None and target[0] < 5:
        full, prefix, _ = resolve_model(config, table)
        transforms = _v4_transforms(full, table) if target[:2] >= VLM_KEY_MAPPING_SINCE else ()
        if transforms:
            rules = (
                f"transformers {stack.transformers} VLM prefix renames (key_mapping since 4.52), approximated "
                f"from the transformers {table.version} table, for {arch} ({model_type})"
            )
            notes.append(
                _note(
                    CODE_APPROX,
                    f"transformers {stack.transformers} renames this VLM's prefixes at load; "
                    f"the rule table comes from transformers {table.version}, so the 4.x renames are "
                    "approximated by its anchored prefix renames",
                    category=Category.ENVIRONMENT,
                )
            )
        else:
            rules = f"none: transformers {stack.transformers} builds checkpoint names"
    else:
        transforms, prefix, notes = resolve_model(config, table)
        shown = stack.transformers or table.version
        rules = f"transformers {shown} load conversions for {arch or '(no architecture)'} ({model_type})"
        if stack.transformers is None:
            rules += f" (transformers version unknown: the table's {table.version} rules)"
        elif target is not None and target[:2] > table_release[:2]:
            notes.append(
                _note(
                    CODE_TABLE_AGE,
                    f"the target transformers {stack.transformers} is newer than the "
                    f"{table.version} the rule table was generated from; conversions added since are not "
                    "modelled",
                    category=Category.ENVIRONMENT,
                    hint="upgrade lora-lock, or confirm with the probe tier",
                )
            )
        elif target is not None and target < table_release:
            notes.append(
                _note(
                    CODE_TABLE_AGE,
                    f"the target transformers {stack.transformers} is older than the "
                    f"{table.version} the rule table was generated from; conversions added after it are "
                    "applied anyway",
                    severity=Severity.INFO,
                    category=Category.ENVIRONMENT,
                )
            )
        notes.extend(_custom_notes(transforms))
    if transforms:
        runtime, origin, fused, apply_notes = apply_transforms(tensors, transforms, config)
    else:  # nothing renames: the checkpoint's names are the runtime names (no per-tensor work on big bases)
        runtime, origin, fused, apply_notes = dict(tensors), {k: (k,) for k in tensors}, frozenset(), []
    return RuntimeView(
        tensors=runtime,
        origin=origin,
        fused=fused,
        rules=rules,
        notes=tuple(notes + apply_notes),
        transforms=transforms,
        architecture=arch,
        model_type=model_type,
        base_model_prefix=prefix,
    )
