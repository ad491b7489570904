"""Checkpoint key → runtime key, exactly as transformers renames at load, from serialised transforms.

A transform carries the compiled source regex the library built (``regex``) and its processed target patterns.
Renaming follows ``core_model_loading``: strip the transform's scope (``base_model_prefix.scope.`` or ``scope.``)
when it has one, search the regex, replace the *first occurrence of the matched text* with the first target
(``\\1`` filled from the group inside the matching branch), and put the scope back. Every renaming applies in
order; then at most one converter. Group renames only fire once their guard pattern was seen (keys are visited
in transformers' natural order, see :func:`natural_key`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

#: Kinds whose renaming this module reproduces; "custom" transforms are reported as not modelled.
RENAME_KINDS = frozenset({"rename", "group_rename", "offset_rename"})


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass(frozen=True)
class Transform:
    """One serialised transformers transform, bound to the scope it was resolved with."""

    spec: Mapping[str, Any]
    scope_prefix: str | None = None
    base_model_prefix: str | None = None

    @cached_property
    def kind(self) -> str:
        """The transform's kind in the rule table (``custom`` when it names none)."""
        return str(self.spec.get("kind", "custom"))

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """The library's compiled source regex (compiled once per transform)."""
        return _compiled(str(self.spec["regex"]))

    @property
    def sources(self) -> list[str]:
        """The source patterns the transform reads."""
        return [str(s) for s in self.spec.get("sources", ())]

    @property
    def targets(self) -> list[str]:
        """The target patterns the transform writes."""
        return [str(t) for t in self.spec.get("targets", ())]

    @property
    def ops(self) -> list[Mapping[str, Any]]:
        """The conversion operations applied to the matched tensors, in order (empty for a plain rename)."""
        return list(self.spec.get("ops", ()))

    def describe(self) -> str:
        """The transform in one line for a message: class, sources → targets, its operations and scope."""
        ops = ", ".join(str(op.get("op")) for op in self.ops)
        scope = f" under {self.scope_prefix!r}" if self.scope_prefix else ""
        text = f"{self.spec.get('class')} {self.sources} -> {self.targets}"
        return text + (f" ({ops})" if ops else "") + scope


@dataclass
class RenameState:
    """What a load remembers between keys: which group renames have seen their guard."""

    active_groups: set[int] = field(default_factory=set)


def _scoped_match(t: Transform, key: str) -> tuple[str | None, str, re.Match[str]] | None:
    prefix: str | None = None
    key_to_match = key
    if t.scope_prefix is not None:
        scope = f"{t.scope_prefix}." if t.scope_prefix != "" else ""
        base = f"{t.base_model_prefix}." if t.base_model_prefix else ""
        if key.startswith(base + scope):
            prefix = base + scope
        elif key.startswith(scope):
            prefix = scope
        else:
            return None
        key_to_match = key.removeprefix(prefix)
    match = t.regex.search(key_to_match)
    if match is None:
        return None
    return prefix, key_to_match, match


def _matching_group(match: re.Match[str]) -> str:
    return next(name for name, val in match.groupdict().items() if val is not None)


def rename_one(t: Transform, key: str, state: RenameState | None = None) -> tuple[str, str | None]:
    """(renamed key, source pattern that matched or None) for one transform, as ``rename_source_key`` does."""
    matched = _scoped_match(t, key)
    if matched is None:
        return key, None
    prefix, key_to_match, match = matched
    group = _matching_group(match)
    group_index = int(group[1:])
    regex = t.regex
    sources, targets = t.sources, t.targets
    if t.kind == "group_rename":
        state = state if state is not None else RenameState()
        if group_index == 0:
            state.active_groups.add(id(t))
        elif id(t) not in state.active_groups:
            return key, None
        replacement = targets[group_index]
        if re.search(r"\\\d", replacement):
            start = regex.groupindex[group]
            replacement = re.sub(r"\\(\d+)", lambda m: match.group(start + int(m.group(1))) or "", replacement)
        source = sources[group_index]
    elif t.kind == "offset_rename":
        index = int(match.group(regex.groupindex[group] + 1))
        replacement = targets[0].replace(r"\1", str(index + int(t.spec.get("offset", 0))))
        source = sources[group_index]
    else:
        replacement = targets[0]
        if r"\1" in replacement:
            replacement = replacement.replace(r"\1", match.group(regex.groupindex[group] + 1) or "")
        source = sources[group_index]
    renamed = key_to_match.replace(match.group(0), replacement, 1)
    if prefix is not None:
        renamed = prefix + renamed
    return renamed, source


def apply_renames(key: str, transforms: Iterable[Transform], state: RenameState | None = None) -> str:
    """``key`` after every renaming of ``transforms`` in turn (converters are skipped), as transformers does."""
    for t in transforms:
        if t.kind in RENAME_KINDS and (t.scope_prefix is not None or t.regex.search(key) is not None):
            key, _ = rename_one(t, key, state)
    return key


def visit_order(names: Iterable[str], transforms: Sequence[Transform]) -> list[str]:
    """The order transformers visits keys in: natural order matters only to group renames (a guard pattern must
    be seen first); without one, plain sorting gives the same result for less work."""
    if any(t.kind == "group_rename" for t in transforms):
        return sorted(names, key=natural_key)
    return sorted(names)


def rename_key(
    key: str, transforms: Sequence[Transform], state: RenameState | None = None
) -> tuple[str, Transform | None, str | None]:
    """All renamings, then the first converter that matches: (runtime key, converter, its source pattern)."""
    key = apply_renames(key, transforms, state)
    for t in transforms:
        if t.kind == "convert":
            renamed, source = rename_one(t, key, state)
            if source is not None:
                return renamed, t, source
    return key, None, None


def natural_key(name: str) -> list[tuple[Any, ...]]:
    """transformers' ``dot_natural_key``: the order keys are visited in at load (numbers numerically).

    Numbers compare by (length without leading zeros, digits), which is numeric order without converting an
    untrusted, possibly enormous digit string to ``int``.
    """
    parts: list[tuple[Any, ...]] = []
    for part in name.split("."):
        if part.isdigit():
            digits = part.lstrip("0")
            parts.append((0, len(digits), digits))
            continue
        text = part.rstrip("0123456789")
        digits = part[len(text) :].lstrip("0")
        parts.append((1, text, len(digits), digits) if part != text else (1, text))
    return parts
