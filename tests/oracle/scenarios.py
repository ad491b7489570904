"""Adapters for a tiny base, as users end up with them: saved by PEFT today, or in the layouts older stacks wrote.

Every scenario returns the adapter directory, or ``None`` when it does not apply to the base (no output head, no
fused experts, checkpoint names equal to runtime names …). PEFT-saved adapters get random ``lora_B`` (and a
perturbed ``modules_to_save`` copy) so whether they landed is visible in the loaded model's values.
Old layouts are derived from the base's own checkpoint names (what transformers' save writes back), never typed in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers.conversion_mapping import get_checkpoint_conversion_mapping

from tests.oracle.bases import SEED, Base, load

RANK = 4
ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
_NOT_TEXT = ("vision", "visual", "image", "audio", "speech", "patch", "projector", "connector", "vqmodel", "vq_model")
_ATTENTION = re.compile(r"(attn|attention)", re.IGNORECASE)


def attention_linears(base: Base) -> list[str]:
    """Runtime names of the Linear / Conv1D modules inside attention blocks."""
    return [n for n in base.linear if _ATTENTION.search(n.rsplit(".", 1)[0])]


def attention_leaves(base: Base) -> list[str]:
    """The attention projections' leaf names (what users write in ``target_modules``)."""
    return sorted({n.rsplit(".", 1)[-1] for n in attention_linears(base)})


def text_attention(base: Base) -> list[str]:
    """Attention projections of the text layers (all of them for a model without text layers)."""
    names = attention_linears(base)
    text = [n for n in names if not any(word in n.lower() for word in _NOT_TEXT)]
    return text or names


def layer_regex(names: list[str]) -> str | None:
    """A regex matching ``names`` with their layer index generalised, restricted to two leaf names."""
    layered = [n for n in names if re.search(r"\.\d+\.", n)]
    if not layered:
        return None
    leaves = sorted({n.rsplit(".", 1)[-1] for n in layered})
    keep = {leaves[0], leaves[-1]}
    patterns = sorted(
        {re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(n)) for n in layered if n.rsplit(".", 1)[-1] in keep}
    )
    return "(" + "|".join(patterns) + ")"


def _save_peft(base: Base, out: Path, **config: Any) -> Path:
    model = load(base)
    torch.manual_seed(SEED + 1)
    peft_model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=2 * RANK, init_lora_weights=False, **config))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "modules_to_save" in name or "lora_" in name:
                # Distinct, nonzero values: a tensor that landed is found by value in the loaded model.
                param.add_(torch.randn_like(param) * 0.1)
    peft_model.save_pretrained(str(out))
    return out


def peft_attn(base: Base, out: Path) -> Path | None:
    """PEFT today, ``target_modules`` = the attention projections by leaf name."""
    leaves = attention_leaves(base)
    return _save_peft(base, out, target_modules=leaves) if leaves else None


def peft_all_linear(base: Base, out: Path) -> Path | None:
    """PEFT today, ``target_modules="all-linear"``."""
    return _save_peft(base, out, target_modules="all-linear") if base.linear else None


def peft_regex(base: Base, out: Path) -> Path | None:
    """PEFT today, a regex ``target_modules`` written for the text layers' runtime names."""
    regex = layer_regex(text_attention(base))
    return _save_peft(base, out, target_modules=regex) if regex else None


def peft_head(base: Base, out: Path) -> Path | None:
    """PEFT today, attention LoRA plus ``modules_to_save`` on the output head."""
    leaves = attention_leaves(base)
    if not leaves or base.head is None:
        return None
    return _save_peft(base, out, target_modules=leaves, modules_to_save=[base.head])


def _expert_parameters(base: Base) -> list[str]:
    return sorted({".".join(n.split(".")[-2:]) for n in base.params3d})


def peft_experts(base: Base, out: Path) -> Path | None:
    """PEFT today, ``target_parameters`` on the fused expert tensors."""
    params = _expert_parameters(base)
    if not params:
        return None
    leaves = attention_leaves(base)
    return _save_peft(base, out, target_modules=leaves or None, target_parameters=params)


# --- layouts older stacks wrote ----------------------------------------------------------------------------------


def _rewrite(src: Path, out: Path, keys: Callable[[str], str], config: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(src / ADAPTER_FILE))
    save_file({keys(k): v.contiguous() for k, v in tensors.items()}, str(out / ADAPTER_FILE))
    data = json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))
    data.update(config)
    (out / CONFIG_FILE).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    return out


def _to_checkpoint_key(base: Base, key: str) -> str:
    """``base_model.model.<runtime module>.<rest>`` with the module renamed to its checkpoint name."""
    prefix = "base_model.model."
    name = key.removeprefix(prefix)
    for runtime in sorted(base.to_checkpoint, key=len, reverse=True):
        if name.startswith(runtime + "."):
            return prefix + base.to_checkpoint[runtime] + name[len(runtime) :]
    return key


def old_attn(base: Base, out: Path, current: Path | None) -> Path | None:
    """The attention adapter as a transformers-4 stack saved it: checkpoint module names, checkpoint leaf names."""
    targets = attention_linears(base)
    if current is None or not any(t in base.to_checkpoint for t in targets):
        return None
    leaves = sorted({base.to_checkpoint.get(t, t).rsplit(".", 1)[-1] for t in targets})
    return _rewrite(current, out, lambda k: _to_checkpoint_key(base, k), {"target_modules": leaves})


def old_regex(base: Base, out: Path, current: Path | None) -> Path | None:
    """A regex written for the checkpoint names of the text layers (what a transformers-4 user wrote)."""
    targets = text_attention(base)
    if current is None or not any(t in base.to_checkpoint for t in targets):
        return None
    regex = layer_regex([base.to_checkpoint.get(t, t) for t in targets])
    if regex is None:
        return None
    return _rewrite(current, out, lambda k: _to_checkpoint_key(base, k), {"target_modules": regex})


def _fused_pairs(model_type: str) -> list[list[str]]:
    """Leaf names transformers fuses together (e.g. ``[w1, w3]``), from its own conversion mapping."""
    pairs = []
    for transform in get_checkpoint_conversion_mapping(model_type) or []:  # type: ignore[no-untyped-call]
        sources = list(getattr(transform, "source_patterns", []) or [])
        if len(sources) > 1 and "expert" in "".join(sources):
            pairs.append([s.removesuffix(".weight").rsplit(".", 1)[-1] for s in sources])
    return pairs


def _per_expert(base: Base, out: Path, leaves: set[str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(SEED + 2)
    tensors: dict[str, torch.Tensor] = {}
    shapes = _checkpoint_shapes(base)
    for key in base.fused_sources:
        module = key.removesuffix(".weight")
        if module.rsplit(".", 1)[-1] not in leaves or not key.endswith(".weight") or len(shapes[key]) != 2:
            continue
        rows, cols = shapes[key]
        tensors[f"base_model.model.{module}.lora_A.weight"] = torch.randn(RANK, cols, generator=generator)
        tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn(rows, RANK, generator=generator)
    save_file(tensors, str(out / ADAPTER_FILE))
    config = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=sorted(leaves)).to_dict()  # type: ignore[no-untyped-call]
    config["target_modules"] = sorted(leaves)
    config["peft_type"] = "LORA"
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return out


def _checkpoint_shapes(base: Base) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(base.path.glob("*.safetensors")):
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def _fused_leaves(base: Base) -> set[str]:
    return {k.removesuffix(".weight").rsplit(".", 1)[-1] for k in base.fused_sources if k.endswith(".weight")}


def old_experts(base: Base, out: Path) -> Path | None:
    """Per-expert LoRA on the checkpoint's expert Linears (``experts.0.w1`` …), every fused pair complete."""
    leaves = _fused_leaves(base)
    return _per_expert(base, out, leaves) if leaves else None


def old_experts_half(base: Base, out: Path) -> Path | None:
    """Per-expert LoRA with one half of a fused pair missing (``w1`` without ``w3``, ``gate_proj`` without ``up``)."""
    leaves = _fused_leaves(base)
    pairs = [p for p in _fused_pairs(base.model_type) if set(p) <= leaves]
    if not pairs:
        return None
    return _per_expert(base, out, leaves - {pairs[0][-1]})
