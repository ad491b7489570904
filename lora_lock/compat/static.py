"""The static findings that need both sides, adapter and base: the compat engine plus identity, quantization,
legacy fields and the runtime stack's rules."""

from __future__ import annotations

from lora_lock.compat.base import BaseView
from lora_lock.compat.engine import Fit, fit
from lora_lock.compat.identity import identity_findings
from lora_lock.findings import Category, Finding, Severity
from lora_lock.inspect.adapter import Adapter
from lora_lock.runtime import Stack, installed_stack
from lora_lock.runtime.applied import facts_config, stack_findings


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
    findings += _side_notes(adapter, base, checked_shapes=checked_shapes)
    return result, findings


def _side_notes(adapter: Adapter, base: BaseView, *, checked_shapes: bool) -> list[Finding]:
    """What the fit leaves unsaid: no adapter weights, a quantized base, pre-0.3 PEFT fields."""
    out: list[Finding] = []
    if adapter.weights is None:
        out.append(
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
        out.append(
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
        out.append(
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
    return out
