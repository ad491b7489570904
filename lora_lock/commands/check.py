"""``check``: does an adapter fit a base? Static: headers and configs only, never torch."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_lock.compat.engine import Fit, fit
from lora_lock.compat.identity import identity_findings
from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Report, Severity
from lora_lock.inspect.adapter import Adapter, read_adapter
from lora_lock.inspect.checkpoint import Checkpoint, read_checkpoint, read_json
from lora_lock.inspect.model_config import ModelFacts, read_model_facts
from lora_lock.runtime import Stack, installed_stack
from lora_lock.runtime.applied import facts_config, resolve_stack, stack_findings
from lora_lock.sources.resolve import Resolved, resolve
from lora_lock.userregex import per_run

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
    """The base as the static engine sees it: its GGUF files when it is a GGUF base, otherwise its
    ``config.json`` facts and safetensors headers. Raises :class:`InputError` when the directory holds neither."""
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


def static_findings(adapter: Adapter, base: BaseView, stack: Stack | None = None) -> tuple[Fit, list[Finding]]:
    """The compat engine plus the findings that need both sides: identity, quantization, legacy fields.

    ``stack``: the transformers / PEFT versions whose load rules apply (default: the installed ones).
    """
    result = fit(
        adapter.config,
        adapter.weights.tensors.values() if adapter.weights else None,
        base.facts,
        base.checkpoint,
        model_config=base.model_config,
        stack=stack,
    )
    findings = list(result.findings)
    checked_shapes = adapter.weights is not None
    fits = checked_shapes and not any(f.category is Category.COMPAT and f.severity is Severity.ERROR for f in findings)
    config = facts_config(base.facts.architecture, base.facts.model_type)
    findings += stack_findings(stack or installed_stack(), config, result, findings)
    findings += identity_findings(adapter, base.source, fits=fits, facts=base.facts)
    if adapter.weights is None:
        findings.append(
            Finding(
                "ADAPTER-NO-WEIGHTS",
                Category.ADAPTER,
                Severity.WARNING,
                f"{adapter.root}: no adapter_model.safetensors; checked what target_modules selects from the config "
                "alone (ranks and shapes of the trained tensors are not checked)",
                subject=str(adapter.root),
            )
        )
    if base.facts.quantization is not None:
        checked = (
            "LoRA shapes are unchanged by quantization and were checked against the unpacked layer sizes"
            if checked_shapes
            else "the unpacked layer sizes were read, but no adapter tensors were there to check against them"
        )
        findings.append(
            Finding(
                "QUANT-FORMAT",
                Category.QUANTIZATION,
                Severity.INFO,
                f"the base is quantized ({base.facts.quantization.describe()}); {checked}",
                subject="quantization_config",
                actual=base.facts.quantization.describe(),
            )
        )
    for key in adapter.config.legacy_fields:
        findings.append(
            Finding(
                "ADAPTER-LEGACY",
                Category.ADAPTER,
                Severity.WARNING,
                f"{adapter.config.path.name}: field `{key}` is from PEFT's pre-0.3 format and current PEFT ignores it"
                + (
                    " (enable_lora [..] adapted only part of a fused layer; current PEFT adapts all of it)"
                    if key == "enable_lora"
                    else ""
                ),
                subject=key,
            )
        )
    return result, findings


@per_run
def check(
    adapter: str | Path,
    base: str | Path | None = None,
    *,
    allow_symlinks: bool = False,
    stack: Stack | str | None = None,
) -> Report:
    """Static fit check of ``adapter`` against ``base`` (default: the base the adapter config names).

    ``stack``: the transformers / PEFT whose load rules apply, a :class:`~lora_lock.runtime.Stack` or text such as
    ``"transformers==4.57.1,peft==0.17.1"`` (default: the installed versions, read from package metadata).

    Unusable input becomes ``input`` findings (status ``error``); nothing here imports torch. Both sources go
    through the fence (symlinks out of them refused unless ``allow_symlinks``); what the base's file set says on
    its own (a planted adapter, stray weights) is reported in the ``base`` category.
    """
    ran: tuple[Category, ...] = (Category.ADAPTER, Category.COMPAT, Category.QUANTIZATION)
    try:
        chosen = resolve_stack(stack)
        adapter_source = resolve(adapter, what="adapter", allow_symlinks=allow_symlinks)
        adapter_view = read_adapter(adapter_source.path, require_weights=False, remote=adapter_source.remote)
        spec = base if base is not None else default_base_spec(adapter_view)
        base_source = resolve(spec, relative_to=adapter_view.root, what="base", allow_symlinks=allow_symlinks)
        base_view = read_base(base_source)
        gguf = base_view.gguf
        # A GGUF architecture transformers cannot load has no parameter names to check the adapter against.
        _, findings = (
            static_findings(adapter_view, base_view, stack=chosen) if gguf is None or gguf.names else (None, [])
        )
        if gguf is not None:
            from lora_lock.compat.gguf import gguf_findings

            findings += gguf_findings(gguf)
        base_findings = base_file_findings(base_view, base_source.files) if gguf is None else []
        if gguf is None:
            from lora_lock.compat.vocab import check_findings as vocab_findings

            findings += vocab_findings(adapter_source.path, adapter_source.files, base_view)
    except InputError as exc:
        # Nothing could be concluded: every category is "error", never "pass".
        return Report.build([input_finding(exc)], ran=ran, title="lora-lock check", blocked=ran)
    if base_findings:
        ran = (Category.BASE, *ran)
    return Report.build([*base_findings, *findings], ran=ran, title="lora-lock check")


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


def input_finding(exc: InputError) -> Finding:
    """An input error as a report finding: its code (``INPUT-UNUSABLE`` or more precise), message and hint."""
    return Finding(exc.code, Category.INPUT, Severity.ERROR, exc.message, hint=exc.hint)
