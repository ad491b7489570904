"""The base model as the static engine reads it: config.json and checkpoint headers, or GGUF metadata.

It lives in ``compat`` rather than ``inspect`` because a GGUF base is read through the name mapping of
:mod:`lora_lock.compat.gguf` (llama.cpp tensors renamed to transformers parameters).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_lock.errors import InputError
from lora_lock.findings import Finding
from lora_lock.inspect.adapter import Adapter
from lora_lock.inspect.checkpoint import Checkpoint, read_checkpoint, read_json
from lora_lock.inspect.model_config import ModelFacts, read_model_facts
from lora_lock.sources.resolve import Resolved

if TYPE_CHECKING:
    from lora_lock.compat.gguf import GGUFBase


@dataclass(frozen=True)
class BaseView:
    """A base model as the static engine sees it."""

    source: Resolved
    facts: ModelFacts
    checkpoint: Checkpoint
    gguf: GGUFBase | None = None  # llama.cpp weights, their tensors renamed to the transformers parameters
    #: config.json as read (it selects the runtime rules); for GGUF, the architecture its metadata names
    model_config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _may_be_gguf(source: Resolved) -> bool:
    """False when the base cannot be a GGUF base: a directory with no ``.gguf`` name in it, locally or on the Hub.
    The GGUF reader is imported only otherwise (``check`` on a safetensors base never needs it); what is GGUF and
    what is refused stays :func:`lora_lock.compat.gguf.gguf_files`' to say."""
    root = source.path
    try:
        if not root.is_dir():
            return True
        names = os.listdir(root)
    except OSError:  # gguf_files says what is wrong with the directory
        return True
    remote = source.remote.names if source.remote is not None else ()
    return any(n.lower().endswith(".gguf") for group in (names, remote) for n in group)


def read_base(source: Resolved) -> BaseView:
    """The base at ``source``: its GGUF weights when it has them, else config.json and the checkpoint headers.
    Raises :class:`InputError` when the directory holds neither."""
    ggufs = None
    if _may_be_gguf(source):
        from lora_lock.compat.gguf import gguf_files

        ggufs = gguf_files(source)
    if ggufs is not None:
        from lora_lock.compat.gguf import read_gguf_base

        gguf = read_gguf_base(source, ggufs)
        identity: dict[str, Any] = {"model_type": gguf.facts.model_type}
        if gguf.facts.architecture:
            identity["architectures"] = [gguf.facts.architecture]
        return BaseView(source=source, facts=gguf.facts, checkpoint=gguf.checkpoint, gguf=gguf, model_config=identity)
    config = source.path / "config.json"
    if not config.is_file():
        raise InputError(f"{source.path}: no config.json; this does not look like a model directory")
    doc = read_json(config)  # read once: the facts and the runtime rules both come from it
    facts = read_model_facts(config, doc)
    return BaseView(
        source=source,
        facts=facts,
        checkpoint=read_checkpoint(source.path, source.remote),
        model_config=doc,
    )


def base_file_findings(base: BaseView, names: tuple[str, ...]) -> list[Finding]:
    """What a base's file set says on its own: an adapter planted in it, weights only some loaders read."""
    from lora_lock.sources.fileset import planted_adapter, planted_finding, stray_weights_finding

    out: list[Finding] = []
    planted = planted_adapter(names)
    if planted:
        out.append(planted_finding(base.source.label, planted))
    stray = stray_weights_finding(base.source.label, names, base.checkpoint.files)
    if stray is not None:
        out.append(stray)
    return out


def default_base_spec(adapter: Adapter) -> str:
    """The base the adapter config names, with its ``revision`` when it has one (``org/name@rev``)."""
    name = adapter.config.base_model_name_or_path
    if not name:
        raise InputError(
            f"{adapter.config.path}: field `base_model_name_or_path` is empty, so the base must be given",
            hint="pass --base DIR or --base org/name@revision",
        )
    revision = adapter.config.revision
    if revision and "@" not in name and not Path(name).expanduser().is_dir():
        return f"{name}@{revision}"
    return name
