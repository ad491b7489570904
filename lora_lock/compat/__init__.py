"""Does an adapter fit a base, as the pinned transformers and PEFT load it? One way in: :func:`fit`.

The stages follow the data in one direction (see :mod:`lora_lock.compat.engine`): checkpoint names → the runtime
model transformers builds → PEFT's adapter-key conversion → PEFT's target matching → per-module shapes → saved
modules → silent drops → identity → the verdict (:class:`Prediction`).
"""

from __future__ import annotations

from lora_lock.compat.engine import Fit, fit
from lora_lock.compat.identity import identity_findings
from lora_lock.compat.keys import (
    IMPLICIT_HEADS,
    OUTPUT_HEADS,
    LoraModule,
    split_adapter_tensors,
    split_keys,
    strip_peft_prefix,
)
from lora_lock.compat.model import RuntimeModel, align, runtime_model, to_base, to_model, with_tied_head
from lora_lock.compat.saved import writes_into_base
from lora_lock.compat.shapes import ModuleGroup
from lora_lock.compat.targets import is_targeted, rank_for
from lora_lock.compat.verdict import Prediction

__all__ = [
    "IMPLICIT_HEADS",
    "OUTPUT_HEADS",
    "Fit",
    "LoraModule",
    "ModuleGroup",
    "Prediction",
    "RuntimeModel",
    "align",
    "fit",
    "identity_findings",
    "is_targeted",
    "rank_for",
    "runtime_model",
    "split_adapter_tensors",
    "split_keys",
    "strip_peft_prefix",
    "to_base",
    "to_model",
    "with_tied_head",
    "writes_into_base",
]
