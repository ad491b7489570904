"""The lock's module table in the names PEFT matches: the runtime module names of the model transformers builds.

``generate`` records each adapter's resolved module rows under their runtime names (``module-names =
"runtime"``), with the checkpoint name next to a row whose name transformers changes at load (``checkpoint``),
and the rules that gave the names (``[base] runtime-rules``). ``verify`` and ``diff`` compare rows by runtime
name; a lock written before the table existed (rows named as the checkpoint stores them, no
``module-names``) is compared by checkpoint name instead, so an unchanged world never shows drift there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lora_lock.inspect.modules import pattern_of
from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.lock.model import Adapter, ModuleRow
from lora_lock.runtime import Stack, runtime_view

#: The value of an adapter section's ``module-names`` when its rows carry runtime names.
RUNTIME = "runtime"
#: The parameter names a module's own tensors end with (stripped to get the module's name).
_PARAMETERS = ("weight", "bias")


@dataclass(frozen=True)
class ModuleNames:
    """Checkpoint module patterns → the runtime module patterns transformers builds from them."""

    rules: str
    to_runtime: Mapping[str, str]
    runtime: frozenset[str]
    #: runtime pattern → its one checkpoint pattern (a parameter fused from several has none)
    to_checkpoint: Mapping[str, str] = field(default_factory=dict)

    def runtime_name(self, pattern: str) -> str:
        """The runtime name of a module pattern; a name already in runtime form (or unknown) is kept."""
        if pattern in self.runtime:
            return pattern
        return self.to_runtime.get(pattern, pattern)

    def checkpoint_name(self, runtime: str) -> str | None:
        """The checkpoint name of a runtime module pattern, when exactly one checkpoint module becomes it."""
        return self.to_checkpoint.get(runtime)


def _module(name: str) -> str:
    head, _, leaf = name.rpartition(".")
    return head if head and leaf in _PARAMETERS else name


def module_names(config: Mapping[str, Any], tensors: Mapping[str, TensorInfo], stack: Stack) -> ModuleNames:
    """The runtime model's names for this base under ``stack``'s rules (static: the generated tables only).

    A tensor transformers fuses from several checkpoint tensors (per-expert weights merged into one parameter)
    maps each source module to the fused parameter's name, which is what ``target_parameters`` names.
    """
    view = runtime_view(config, tensors, stack)
    to_runtime: dict[str, str] = {}
    sources: dict[str, set[str]] = {}
    for name in sorted(view.tensors):
        origins = view.origin.get(name, (name,))
        fused = len(origins) > 1
        target = pattern_of(name if fused else _module(name))
        for source in origins:
            to_runtime.setdefault(pattern_of(_module(source)), target)
            sources.setdefault(target, set()).add(pattern_of(_module(source)))
    to_checkpoint = {r: next(iter(s)) for r, s in sorted(sources.items()) if len(s) == 1}
    return ModuleNames(view.rules, dict(sorted(to_runtime.items())), frozenset(sources), to_checkpoint)


def runtime_rows(rows: Iterable[ModuleRow], names: ModuleNames | None) -> tuple[ModuleRow, ...]:
    """Module rows renamed to their runtime names, each keeping its checkpoint name when the two differ."""
    out: list[ModuleRow] = []
    for row in rows:
        runtime = names.runtime_name(row.pattern) if names is not None else row.pattern
        # The engine may give runtime names already: the checkpoint name then comes from the runtime model.
        checkpoint = (
            row.pattern if runtime != row.pattern else names.checkpoint_name(runtime) if names is not None else None
        )
        out.append(replace(row, pattern=runtime, checkpoint=checkpoint if checkpoint != runtime else None))
    return tuple(out)


def is_runtime(section: Adapter) -> bool:
    """Whether an adapter section's rows carry runtime names (absent in locks written before runtime names)."""
    return section.module_names == RUNTIME


def comparable(rows: Sequence[ModuleRow], *, by_checkpoint: bool) -> list[ModuleRow]:
    """Rows ready to compare: named by runtime name (or by checkpoint name, to meet an old lock's rows), without
    the bookkeeping ``checkpoint`` field (PEFT matches the runtime names; a checkpoint renamed under the same
    runtime name loads the same, and the base's digests report the file change itself)."""
    out: list[ModuleRow] = []
    for row in rows:
        pattern = row.checkpoint if by_checkpoint and row.checkpoint is not None else row.pattern
        out.append(replace(row, pattern=pattern, checkpoint=None))
    return out


def aligned(locked: Adapter, now: Adapter) -> tuple[list[ModuleRow], list[ModuleRow]]:
    """The two adapter sections' module rows in one naming: runtime when both record it, else checkpoint."""
    by_checkpoint = not (is_runtime(locked) and is_runtime(now))
    return comparable(locked.modules, by_checkpoint=by_checkpoint), comparable(now.modules, by_checkpoint=by_checkpoint)
