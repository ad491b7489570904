"""The base model as the static engine reads it: config.json and checkpoint headers, or GGUF metadata.

It lives in ``compat`` rather than ``inspect`` because a GGUF base is read through the name mapping of
:mod:`lora_lock.compat.gguf` (llama.cpp tensors renamed to transformers parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_lock.compat.gguf import GGUFBase, gguf_files, read_gguf_base
from lora_lock.errors import InputError
from lora_lock.inspect.adapter import Adapter
from lora_lock.inspect.checkpoint import Checkpoint, read_checkpoint, read_json
from lora_lock.inspect.model_config import ModelFacts, read_model_facts
from lora_lock.sources.resolve import Resolved


@dataclass(frozen=True)
class BaseView:
    """A base model as the static engine sees it."""

    source: Resolved
    facts: ModelFacts
    checkpoint: Checkpoint
    gguf: GGUFBase | None = None  # llama.cpp weights, their tensors renamed to the transformers parameters
    #: config.json as read (it selects the runtime rules); for GGUF, the architecture its metadata names
    model_config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def read_base(source: Resolved) -> BaseView:
    """The base at ``source``: its GGUF weights when it has them, else config.json and the checkpoint headers."""
    ggufs = gguf_files(source)
    if ggufs is not None:
        gguf = read_gguf_base(source, ggufs)
        identity: dict[str, Any] = {"model_type": gguf.facts.model_type}
        if gguf.facts.architecture:
            identity["architectures"] = [gguf.facts.architecture]
        return BaseView(source=source, facts=gguf.facts, checkpoint=gguf.checkpoint, gguf=gguf, model_config=identity)
    config = source.path / "config.json"
    if not config.is_file():
        raise InputError(f"{source.path}: no config.json; this does not look like a model directory")
    facts = read_model_facts(config)
    doc = read_json(config)  # already read and checked once; small, and the fence allows it
    return BaseView(
        source=source,
        facts=facts,
        checkpoint=read_checkpoint(source.path, source.remote),
        model_config=doc if isinstance(doc, Mapping) else {},
    )


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
