"""A static model of the names transformers and PEFT use at runtime (no torch, transformers or peft imports).

transformers 5 renames and fuses checkpoint tensors while it builds a model, and PEFT matches ``target_modules``
and adapter keys against the modules of the *built* model, converting old adapter keys on load. This package
reproduces both from tables generated from the libraries (``scripts/gen_rule_tables.py``):

* :func:`runtime_view` — checkpoint tensors → runtime parameters (names, shapes, origins, fused experts);
* :func:`installed_stack`, :func:`parse_stack`, :func:`lock_stack` — which versions' rules apply;
* :mod:`lora_lock.runtime.adapter` — PEFT's adapter-key conversion and per-expert → fused target conversion.
"""

from __future__ import annotations

from lora_lock.runtime.adapter import (
    AdapterConversion,
    MoeConversion,
    MoeRules,
    adapter_key_conversion,
    convert_adapter_keys,
    convert_moe_targets,
    moe_rules,
)
from lora_lock.runtime.rename import Transform, apply_renames, rename_key
from lora_lock.runtime.stack import Stack, installed_stack, lock_stack, parse_stack, release
from lora_lock.runtime.view import RuntimeView, config_identity, resolve_model, runtime_view

__all__ = [
    "AdapterConversion",
    "MoeConversion",
    "MoeRules",
    "RuntimeView",
    "Stack",
    "Transform",
    "adapter_key_conversion",
    "apply_renames",
    "config_identity",
    "convert_adapter_keys",
    "convert_moe_targets",
    "installed_stack",
    "lock_stack",
    "moe_rules",
    "parse_stack",
    "release",
    "rename_key",
    "resolve_model",
    "runtime_view",
]
