"""Tiny real bases for the oracle: which class each ``model_type`` is built and loaded as, and the names it saves.

A base is built from its tiny config, saved with ``save_pretrained`` (safetensors; transformers writes the
checkpoint names, reversing its load-time conversions), and described by a :class:`Base`: the runtime module names
the built model has, and for each runtime weight the checkpoint tensor holding the same values (renamed modules), or
none (fused: the checkpoint held it as several tensors, e.g. per-expert MoE weights).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import safe_open
from transformers.models.auto import modeling_auto
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.pytorch_utils import Conv1D

from tests.oracle.tiny_configs import HIDDEN, LAYERS, tiny_config

SEED = 0

# Which head a model is built with, first match wins: the class a user fine-tunes for that kind of model.
_TASK_ORDER = (
    ("IMAGE_TEXT_TO_TEXT", "AutoModelForImageTextToText"),
    ("MULTIMODAL_LM", "AutoModelForMultimodalLM"),
    ("SEQ_TO_SEQ_CAUSAL_LM", "AutoModelForSeq2SeqLM"),
    ("SPEECH_SEQ_2_SEQ", "AutoModelForSpeechSeq2Seq"),
    ("CAUSAL_LM", "AutoModelForCausalLM"),
    ("MASKED_LM", "AutoModelForMaskedLM"),
    ("CTC", "AutoModelForCTC"),
    ("IMAGE_CLASSIFICATION", "AutoModelForImageClassification"),
    ("AUDIO_CLASSIFICATION", "AutoModelForAudioClassification"),
    ("", "AutoModel"),
)
# Encoders are fine-tuned through their masked-LM head, not the causal one some of them also offer.
_ENCODER_FIRST = ("MASKED_LM", "AutoModelForMaskedLM")
TEXT_TASKS = {"AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSeq2SeqLM"}
HEAD_NAMES = ("lm_head", "classifier", "embed_out", "proj_out", "output", "lm_head.decoder", "cls", "score")


def task_for(model_type: str) -> tuple[str, str]:
    """``(auto class name, model class name)`` the oracle builds ``model_type`` as."""
    config_class = CONFIG_MAPPING[model_type]
    order = list(_TASK_ORDER)
    decoder_like = getattr(config_class, "is_decoder", False) or "ForCausalLM" in str(
        modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, "")
    )
    if model_type in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES and (
        not decoder_like or modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, "").endswith("LMHeadModel")
    ):
        order.insert(0, _ENCODER_FIRST)
    for mapping, auto in order:
        names = getattr(modeling_auto, f"MODEL_FOR_{mapping}_MAPPING_NAMES" if mapping else "MODEL_MAPPING_NAMES")
        name = names.get(model_type)
        if name:
            return auto, name if isinstance(name, str) else name[0]
    raise LookupError(f"{model_type}: no auto class")


@dataclass
class Base:
    """A saved tiny base and the facts about its names the adapter scenarios need."""

    model_type: str
    path: Path
    auto: str
    cls: str
    hidden: int
    runtime_modules: dict[str, str]  # runtime module name -> module class name (leaves with weights)
    linear: list[str]  # runtime names of Linear / Conv1D modules
    params3d: list[str]  # runtime names of 3-D parameters (fused MoE experts)
    to_checkpoint: dict[str, str]  # runtime module -> checkpoint module, where the name differs
    fused_sources: list[str] = field(default_factory=list)  # checkpoint weights no runtime weight equals
    head: str | None = None

    @property
    def auto_class(self) -> Any:
        return getattr(transformers, self.auto)


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().to(torch.float32).numpy().tobytes()).hexdigest()


def build_model(model_type: str, hidden: int = HIDDEN, layers: int = LAYERS) -> Any:
    """The tiny model itself (seeded), with its weights made distinct so saved names can be traced by value."""
    _, cls_name = task_for(model_type)
    config = tiny_config(CONFIG_MAPPING[model_type], hidden=hidden, layers=layers)
    torch.manual_seed(SEED)
    model = getattr(transformers, cls_name)(config)
    with torch.no_grad():
        for param in model.parameters():
            # Weights initialised to constants (norms, zero biases) would make tensors indistinguishable by value.
            param.add_(torch.randn_like(param) * 0.02)
    return model.eval()


def save_base(model_type: str, out: Path, hidden: int = HIDDEN, layers: int = LAYERS) -> Base:
    """Build, save and describe the tiny ``model_type`` base in ``out``."""
    auto, cls_name = task_for(model_type)
    model = build_model(model_type, hidden=hidden, layers=layers)
    model.save_pretrained(out)
    return describe(model, model_type, out, auto, cls_name)


def describe(model: Any, model_type: str, out: Path, auto: str, cls_name: str) -> Base:
    """The runtime names of ``model`` and how they map onto the checkpoint names it saved in ``out``."""
    by_value: dict[str, list[str]] = {}
    checkpoint_keys: list[str] = []
    for file in sorted(out.glob("*.safetensors")):
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                checkpoint_keys.append(key)
                by_value.setdefault(_digest(handle.get_tensor(key)), []).append(key)
    runtime_modules: dict[str, str] = {}
    linear: list[str] = []
    for name, module in model.named_modules():
        if not name or not hasattr(module, "weight") or not isinstance(module.weight, torch.Tensor):
            continue
        runtime_modules[name] = type(module).__name__
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            linear.append(name)
    params3d = [n for n, p in model.named_parameters() if p.dim() == 3 and "expert" in n]
    to_checkpoint: dict[str, str] = {}
    claimed: set[str] = set()
    for name, param in model.named_parameters():
        sources = by_value.get(_digest(param), [])
        claimed.update(sources)
        if not name.endswith(".weight") or not sources:
            continue
        module = name.removesuffix(".weight")
        source = sorted(sources, key=lambda s: (s.removesuffix(".weight") != module, s))[0]
        if source.endswith(".weight") and source.removesuffix(".weight") != module:
            to_checkpoint[module] = source.removesuffix(".weight")
    fused = sorted(k for k in checkpoint_keys if k not in claimed and re.search(r"\.experts?\.\d+\.", k))
    head = next((h for h in HEAD_NAMES if h in runtime_modules), None)
    return Base(
        model_type=model_type,
        path=out,
        auto=auto,
        cls=cls_name,
        hidden=int(getattr(model.config.get_text_config(), "hidden_size", 0) or 0),
        runtime_modules=runtime_modules,
        linear=linear,
        params3d=params3d,
        to_checkpoint=to_checkpoint,
        fused_sources=fused,
        head=head,
    )


def load(base: Base) -> Any:
    """The base as a user loads it: the right Auto class, ``from_pretrained`` on the saved directory."""
    return base.auto_class.from_pretrained(str(base.path)).eval()
