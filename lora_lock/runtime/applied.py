"""Which loading stack's rules ``check`` and ``verify`` apply, and the report line that says so.

``check`` applies the rules of the stack that will load the adapter: the installed transformers / PEFT (package
metadata only, nothing imported), an explicit ``--stack transformers==X,peft==Y``, or, in ``verify``, the versions
the lock's ``[environment]`` recorded, so a lock made on transformers 4 is judged by transformers 4 rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from lora_lock.findings import Category, Finding, Severity
from lora_lock.runtime import RuntimeView, Stack, installed_stack, parse_stack, runtime_view

CODE_RULES = "COMPAT-RULES"


def resolve_stack(stack: Stack | str | None) -> Stack:
    """``None`` → the installed stack; a ``transformers==X,peft==Y`` text → that stack (bad text: InputError)."""
    if stack is None:
        return installed_stack()
    if isinstance(stack, str):
        return parse_stack(stack)
    return stack


def rules_text(stack: Stack, config: Mapping[str, Any], fit: Any = None, view: RuntimeView | None = None) -> str:
    """What rules the static engine applied: transformers' load conversions for this model, and PEFT's.

    The engine's own account (``fit.prediction.rules``) wins when it gives one; otherwise the runtime model is
    asked with no tensors (the rules depend only on the config and the stack, so this costs no header work).
    """
    prediction = getattr(fit, "prediction", None)
    engine_rules = getattr(prediction, "rules", None)
    if isinstance(engine_rules, tuple) and engine_rules:
        return "; ".join(str(r) for r in engine_rules)
    if isinstance(engine_rules, str) and engine_rules:
        transformers_rules = engine_rules
    else:
        transformers_rules = (view or runtime_view(config, {}, stack)).rules
    peft = f"PEFT {stack.peft} adapter-key conversion" if stack.peft else "PEFT version unknown: current PEFT rules"
    return f"{transformers_rules}; {peft}"


def stack_findings(
    stack: Stack, config: Mapping[str, Any], fit: Any = None, existing: Iterable[Finding] = ()
) -> list[Finding]:
    """The ``COMPAT-RULES`` info line, and the runtime model's notes about the stack (a rule table older than
    the target transformers), each unless the engine already reported it."""
    seen = {(f.code, f.message) for f in existing}
    codes = {code for code, _ in seen}
    view = runtime_view(config, {}, stack)
    out: list[Finding] = []
    if CODE_RULES not in codes:
        out.append(
            Finding(
                CODE_RULES,
                Category.COMPAT,
                Severity.INFO,
                f"rules applied: {rules_text(stack, config, fit, view)} (stack: {stack.describe()})",
                subject="stack",
                actual=stack.describe(),
            )
        )
    for note in view.notes:
        if note.category is Category.ENVIRONMENT and (note.code, note.message) not in seen:
            # Reported with the compat verdict it qualifies (``check`` runs no environment category).
            out.append(replace(note, category=Category.COMPAT))
    return out


def facts_config(architecture: str | None, model_type: str | None) -> dict[str, Any]:
    """The part of config.json that selects a model's rules (its class and ``model_type``)."""
    out: dict[str, Any] = {}
    if architecture:
        out["architectures"] = [architecture]
    if model_type:
        out["model_type"] = model_type
    return out
