"""``check``: does an adapter fit a base? Static: headers and configs only, never torch."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lora_lock.compat import Fit, fit
from lora_lock.errors import InputError
from lora_lock.gguf_fit import GGUFBase, gguf_files, gguf_findings, read_gguf_base
from lora_lock.inspect.adapter import Adapter, read_adapter
from lora_lock.inspect.checkpoint import Checkpoint, read_checkpoint
from lora_lock.inspect.model_config import ModelFacts, read_model_facts
from lora_lock.inspect.modules import base_modules
from lora_lock.models import Category, Finding, Report, Severity
from lora_lock.sources import Resolved, resolve
from lora_lock.userregex import per_run

_SNAPSHOT = re.compile(r"models--(?P<repo>[^/]+)/snapshots/(?P<sha>[0-9a-f]{40})/?$")


@dataclass(frozen=True)
class BaseView:
    """A base model as the static engine sees it."""

    source: Resolved
    facts: ModelFacts
    checkpoint: Checkpoint
    gguf: GGUFBase | None = None  # llama.cpp weights, their tensors renamed to the transformers parameters


def read_base(source: Resolved) -> BaseView:
    ggufs = gguf_files(source)
    if ggufs is not None:
        gguf = read_gguf_base(source, ggufs)
        return BaseView(source=source, facts=gguf.facts, checkpoint=gguf.checkpoint, gguf=gguf)
    config = source.path / "config.json"
    if not config.is_file():
        raise InputError(f"{source.path}: no config.json; this does not look like a model directory")
    return BaseView(
        source=source, facts=read_model_facts(config), checkpoint=read_checkpoint(source.path, source.remote)
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


def static_findings(adapter: Adapter, base: BaseView) -> tuple[Fit, list[Finding]]:
    """The compat engine plus the findings that need both sides: identity, quantization, legacy fields."""
    result = fit(
        adapter.config,
        adapter.weights.tensors.values() if adapter.weights else None,
        base.facts,
        base_modules(base.checkpoint, base.facts),
    )
    findings = list(result.findings)
    fits = not any(f.category is Category.COMPAT and f.severity is Severity.ERROR for f in findings)
    findings += identity_findings(adapter, base.source, fits=fits)
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
        findings.append(
            Finding(
                "QUANT-FORMAT",
                Category.QUANTIZATION,
                Severity.INFO,
                f"the base is quantized ({base.facts.quantization.describe()}); LoRA shapes are unchanged by "
                "quantization and were checked against the unpacked layer sizes",
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


def identity_findings(adapter: Adapter, base: Resolved, *, fits: bool = True) -> list[Finding]:
    """Shapes fitting is not identity: say when the base cannot be confirmed to be the one the adapter names."""
    named = adapter.config.base_model_name_or_path
    if not named:
        return [
            Finding(
                "COMPAT-IDENTITY",
                Category.COMPAT,
                Severity.WARNING,
                "the adapter does not name its base (`base_model_name_or_path` is empty), so only shapes "
                "could be checked",
                subject="base_model_name_or_path",
                hint="shapes fitting is not identity: Llama-3-8B and Mistral-7B share every projection "
                "shape; pin the base with `lora-lock generate`",
            )
        ]
    if base.repo_id is not None:
        named_repo, _, named_rev = named.partition("@")
        wanted_rev = named_rev or adapter.config.revision
        if base.repo_id == named_repo and (not wanted_rev or wanted_rev in (base.revision, base.ref)):
            return []
        actual = f"{base.repo_id}@{base.revision}"
        if base.repo_id == named_repo:
            named = f"{named_repo}@{wanted_rev}"
    else:
        match = _SNAPSHOT.search(base.path.resolve().as_posix())
        if match and match["repo"].replace("--", "/") == named:
            return []
        named_path = Path(named).expanduser()
        try:
            if named_path.exists() and named_path.resolve() == base.path.resolve():
                return []
        except OSError:
            pass
        actual = f"local directory {base.path}"
    return [
        Finding(
            "COMPAT-IDENTITY",
            Category.COMPAT,
            Severity.WARNING,
            f"{'the shapes fit, but ' if fits else ''}the base cannot be confirmed to be `{named}`, the base the "
            "adapter names",
            subject="base_model_name_or_path",
            expected=named,
            actual=actual,
            hint="shapes fitting is not identity (Llama-3-8B and Mistral-7B share every projection shape); "
            "pin the base's commit and digests with `lora-lock generate`",
        )
    ]


@per_run
def check(adapter: str | Path, base: str | Path | None = None, *, allow_symlinks: bool = False) -> Report:
    """Static fit check of ``adapter`` against ``base`` (default: the base the adapter config names).

    Unusable input becomes ``input`` findings (status ``error``); nothing here imports torch. Both sources go
    through the fence (symlinks out of them refused unless ``allow_symlinks``); what the base's file set says on
    its own (a planted adapter, stray weights) is reported in the ``base`` category.
    """
    from lora_lock.observe import base_file_findings

    ran: tuple[Category, ...] = (Category.ADAPTER, Category.COMPAT, Category.QUANTIZATION)
    try:
        adapter_source = resolve(adapter, what="adapter", allow_symlinks=allow_symlinks)
        adapter_view = read_adapter(adapter_source.path, require_weights=False, remote=adapter_source.remote)
        spec = base if base is not None else default_base_spec(adapter_view)
        base_source = resolve(spec, relative_to=adapter_view.root, what="base", allow_symlinks=allow_symlinks)
        base_view = read_base(base_source)
        gguf = base_view.gguf
        # A GGUF architecture transformers cannot load has no parameter names to check the adapter against.
        _, findings = static_findings(adapter_view, base_view) if gguf is None or gguf.names else (None, [])
        if gguf is not None:
            findings += gguf_findings(gguf)
        base_findings = base_file_findings(base_view, base_source.files) if gguf is None else []
    except InputError as exc:
        # Nothing could be concluded: every category is "error", never "pass".
        return Report.build([input_finding(exc)], ran=ran, title="lora-lock check", blocked=ran)
    if base_findings:
        ran = (Category.BASE, *ran)
    return Report.build([*base_findings, *findings], ran=ran, title="lora-lock check")


def input_finding(exc: InputError) -> Finding:
    return Finding(exc.code, Category.INPUT, Severity.ERROR, exc.message, hint=exc.hint)
