"""LoRA adapters trained a few steps on CPU on the tiny bases, so they really change the outputs, and the training
and saving steps every tiny adapter builder shares (torch, transformers and peft are imported inside the
functions, so importing this module stays cheap)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from lora_lock.testing.tiny_lm import _seeded, _torch_dtype
from lora_lock.testing.tiny_tokenizer import encode

#: The text :func:`train_lora` fits by default: short and repetitive, so a few steps move the outputs clearly.
TRAIN_TEXT = (
    "The adapter says: the fox is quick and the dog is lazy. The adapter says: the fox is quick and the dog is lazy. "
    "Le renard est rapide. Der Fuchs ist schnell. The adapter says: the fox is quick and the dog is lazy."
)

#: transformers modules whose weight is stored ``[in, out]`` (PEFT needs ``fan_in_fan_out=True`` for them).
_CONV1D_CLASS = "Conv1D"


def _fit_adapter(
    model: Any,
    config: Any,
    *,
    steps: int,
    losses: Callable[[Any], Iterable[Any]],
    learning_rate: float = 1e-2,
    weight_decay: float = 0.01,
) -> Any:
    """Wrap ``model`` in a PEFT model of ``config`` and train it for ``steps`` rounds; in eval mode on return.

    Each round takes one AdamW step for every loss ``losses(peft_model)`` yields, so it must yield them lazily,
    each computed after the previous step. ``weight_decay`` defaults to torch's own. The caller runs this under
    :func:`_seeded` and may draw from that stream first (the adapter's initial weights come after its draws).
    """
    import torch
    from peft import get_peft_model

    peft_model = get_peft_model(model, config)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    for _ in range(steps):
        for loss in losses(peft_model):
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    peft_model.eval()
    return peft_model


def _save_adapter(
    peft_model: Any, out_dir: str | Path, base_dir: str | Path, sorted_keys: Sequence[str] = ("target_modules",)
) -> Path:
    """Save a trained adapter with PEFT's ``save_pretrained`` and make its adapter_config.json reproducible.

    PEFT saves module lists such as target_modules from a set, so their order varies between processes; sort the
    ``sorted_keys`` lists (PEFT reads them back as sets) so the same inputs give byte-identical files, and record
    ``base_dir`` as given. Same format as PEFT's own writer.
    """
    out, base = Path(out_dir), Path(base_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    config_path = out / "adapter_config.json"
    saved: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    for key in sorted_keys:
        if isinstance(saved.get(key), list):
            saved[key] = sorted(saved[key])
    saved["base_model_name_or_path"] = str(base)
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True), encoding="utf-8")
    return out


def _load_for_peft(model_class: Any, base_dir: str | Path) -> Any:
    """Load a local base with ``model_class`` so that PEFT records ``str(base_dir)`` as its base model."""
    base = Path(base_dir)
    model: Any = model_class.from_pretrained(str(base), local_files_only=True)
    model.name_or_path = str(base)  # what PEFT writes as base_model_name_or_path
    return model


def load_causal_lm(base_dir: str | Path, dtype: str = "float32") -> Any:
    """Load a local base with ``AutoModelForCausalLM`` (``AutoModelForImageTextToText`` for a vision-language
    base, as the probe does; local files only, no remote code), in eval mode."""
    import transformers

    from lora_lock.probe.tasks import auto_class_name

    auto: Any = getattr(transformers, auto_class_name(Path(base_dir)))
    model: Any = auto.from_pretrained(
        str(base_dir), dtype=_torch_dtype(dtype), local_files_only=True, trust_remote_code=False
    )
    model.eval()
    return model


def _conv1d_targets(model: Any, target_modules: Sequence[str] | str) -> bool:
    """Whether the modules ``target_modules`` names are transformers ``Conv1D`` layers (weight ``[in, out]``)."""
    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    for name, module in model.named_modules():
        leaf = name.rpartition(".")[2]
        if (leaf in names or name in names) and type(module).__name__ == _CONV1D_CLASS:
            return True
    return False


def train_lora(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    target_modules: Sequence[str] | str,
    r: int = 8,
    alpha: int = 16,
    steps: int = 20,
    seed: int,
    use_dora: bool = False,
    use_rslora: bool = False,
    modules_to_save: Sequence[str] | None = None,
    rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, int] | None = None,
    init_lora_weights: bool | str = True,
    learning_rate: float = 1e-2,
    text: str = TRAIN_TEXT,
    max_tokens: int = 64,
    fan_in_fan_out: bool | None = None,
    bias: str = "none",
) -> Path:
    """Train a LoRA adapter on ``base_dir`` for ``steps`` AdamW steps on ``text`` and save it to ``out_dir``.

    The adapter is saved with PEFT's ``save_pretrained`` (adapter_model.safetensors + adapter_config.json) and its
    ``base_model_name_or_path`` is ``str(base_dir)``. The default learning rate is high on purpose: after a few
    steps KL(adapted ‖ base) on a prompt is clearly above zero. ``fan_in_fan_out`` defaults to whether the targets
    are ``Conv1D`` layers (GPT-2). Deterministic given ``seed`` (on one machine and thread count).
    """
    from peft import LoraConfig

    base = Path(base_dir)
    model = load_causal_lm(base)
    model.name_or_path = str(base)  # what PEFT writes as base_model_name_or_path
    targets: list[str] | str = target_modules if isinstance(target_modules, str) else list(target_modules)
    if fan_in_fan_out is None:
        fan_in_fan_out = _conv1d_targets(model, targets)
    init: Any = init_lora_weights  # peft types it as a Literal of method names
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=targets,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        rank_pattern=dict(rank_pattern or {}),
        alpha_pattern=dict(alpha_pattern or {}),
        use_dora=use_dora,
        use_rslora=use_rslora,
        init_lora_weights=init,
        fan_in_fan_out=fan_in_fan_out,
        bias=bias,  # type: ignore[arg-type]  # peft types it as a Literal
    )
    ids = encode(base, text)[:, :max_tokens]
    with _seeded(seed):
        peft_model = _fit_adapter(
            model,
            config,
            steps=steps,
            losses=lambda m: [m(input_ids=ids, labels=ids).loss],
            learning_rate=learning_rate,
            weight_decay=0.0,
        )
    return _save_adapter(peft_model, out_dir, base)


def adapter_kl(base_dir: str | Path, adapter_dir: str | Path, prompt: str = "The quick brown fox") -> float:
    """Mean over the prompt's positions of KL(adapted ‖ base) of the next-token distributions (fp32, nats)."""
    import torch
    from peft import PeftModel

    model: Any = PeftModel.from_pretrained(load_causal_lm(base_dir), str(adapter_dir), is_trainable=False)
    model.eval()
    ids = encode(base_dir, prompt)
    with torch.no_grad():
        adapted = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
        with model.disable_adapter():
            plain = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
    kl = (adapted.exp() * (adapted - plain)).sum(-1).mean()
    return float(kl.item())
