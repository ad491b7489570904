"""PEFT's adapter-key conversion, modelled statically, against PEFT's own conversion function.

The function is ``convert_peft_adapter_state_dict_for_transformers``.

Adapter state dicts in the layouts older stacks wrote (VLM ``language_model.model.*``, per-expert MoE LoRA) go
through the real PEFT function on a tiny real model; the static conversion must give the same keys and shapes,
and say None exactly where PEFT converts nothing.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.runtime import (
    Stack,
    adapter_key_conversion,
    convert_adapter_keys,
    convert_moe_targets,
    installed_stack,
    moe_rules,
)
from tests.runtime.test_truth import CASES

pytestmark = pytest.mark.slow
R = 4


def _lora_keys(modules: dict[str, tuple[int, int]]) -> dict[str, tuple[int, ...]]:
    """PEFT-saved keys for LoRA on ``modules`` (name -> (out, in))."""
    out: dict[str, tuple[int, ...]] = {}
    for name, (fan_out, fan_in) in modules.items():
        out[f"base_model.model.{name}.lora_A.weight"] = (R, fan_in)
        out[f"base_model.model.{name}.lora_B.weight"] = (fan_out, R)
    return out


def _real(case: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from peft import LoraConfig
    from peft.utils.transformers_weight_conversion import convert_peft_adapter_state_dict_for_transformers

    cls_name, make = CASES[case]
    with torch.device("meta"):
        model = getattr(transformers, cls_name)(make())
    state = {k: torch.randn(*s) for k, s in shapes.items()}
    out = convert_peft_adapter_state_dict_for_transformers(model, LoraConfig(r=R, lora_alpha=8), state)
    return {k: tuple(v.shape) for k, v in out.items()}


def _static(case: str, shapes: dict[str, tuple[int, ...]]) -> tuple[Any, dict[str, tuple[int, ...]]]:
    config = CASES[case][1]().to_dict()
    conv = adapter_key_conversion(config, installed_stack())
    tensors = {k: TensorInfo(k, "F32", s, "adapter_model.safetensors", 0, 0) for k, s in shapes.items()}
    out = convert_adapter_keys(tensors, conv, config)
    return conv, {k: t.shape for k, t in out.tensors.items()}


def _experts(prefix: str, names: tuple[str, ...], hidden: int, inter: int, n: int = 4) -> dict[str, tuple[int, int]]:
    mods = {}
    for layer in range(2):
        for e in range(n):
            for proj in names:
                down = proj in ("w2", "down_proj")
                mods[f"model.layers.{layer}.{prefix}.experts.{e}.{proj}"] = (hidden, inter) if down else (inter, hidden)
    return mods


SCENARIOS = {
    "llava-old": (
        "llava",
        _lora_keys(
            {
                "language_model.model.layers.0.self_attn.q_proj": (32, 32),
                "language_model.model.layers.1.self_attn.v_proj": (16, 32),
            }
        ),
    ),
    "llava-new": ("llava", _lora_keys({"model.language_model.layers.0.self_attn.q_proj": (32, 32)})),
    "qwen2_vl-old": ("qwen2_vl", _lora_keys({"model.layers.0.self_attn.q_proj": (32, 32)})),
    "vit-old": ("vit", _lora_keys({"vit.encoder.layer.0.attention.attention.query": (32, 32)})),
    "mixtral-experts": ("mixtral", _lora_keys(_experts("block_sparse_moe", ("w1", "w2", "w3"), 32, 48))),
    "qwen3_moe-experts": ("qwen3_moe", _lora_keys(_experts("mlp", ("gate_proj", "up_proj", "down_proj"), 32, 24))),
    "llama": ("llama", _lora_keys({"model.layers.0.self_attn.q_proj": (32, 32)})),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_static_adapter_conversion_equals_peft(scenario: str) -> None:
    case, shapes = SCENARIOS[scenario]
    real = _real(case, shapes)
    conv, static = _static(case, shapes)
    assert static == real, sorted(set(static) ^ set(real))[:8]
    if real == shapes:
        assert conv is None or set(static) == set(shapes)


def test_qwen2_vl_mapping_is_keyed_by_class_so_peft_converts_nothing() -> None:
    config = CASES["qwen2_vl"][1]().to_dict()
    assert adapter_key_conversion(config, installed_stack()) is None
    assert adapter_key_conversion(CASES["llava"][1]().to_dict(), installed_stack()) is not None


def test_no_adapter_conversion_before_peft_0_19_or_on_transformers_4() -> None:
    config = CASES["llava"][1]().to_dict()
    assert adapter_key_conversion(config, Stack("5.23.0", "0.18.1", "explicit")) is None
    assert adapter_key_conversion(config, Stack("4.57.1", "0.21.2", "explicit")) is None


def test_moe_target_conversion_equals_peft() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from peft import LoraConfig
    from peft.utils.transformers_weight_conversion import convert_peft_config_for_transformers

    cls_name, make = CASES["mixtral"]
    with torch.device("meta"):
        model = getattr(transformers, cls_name)(make())
    rules = moe_rules(model.config.to_dict(), installed_stack())
    assert rules is not None
    names = [n for n, _ in model.named_parameters()]
    for targets in (["w1", "w3", "w2", "q_proj"], ["w1", "q_proj"], ["w2"]):
        cfg = LoraConfig(r=R, lora_alpha=8, target_modules=list(targets))
        try:
            convert_peft_config_for_transformers(cfg, model=model, conversions=None)
            real_error = None
        except ValueError as exc:
            real_error = str(exc)
        ours = convert_moe_targets(targets, None, R, 8, rules, names)
        assert ours.error == real_error
        if real_error is None:
            # PEFT types these fields optional; after a successful conversion they are set.
            assert set(ours.target_modules) == set(cast("list[str]", cfg.target_modules))
            assert set(ours.target_parameters) == set(cast("list[str]", cfg.target_parameters))
            rank_pattern, alpha_pattern = (
                cast("dict[str, int]", cfg.rank_pattern),
                cast("dict[str, int]", cfg.alpha_pattern),
            )
            assert ours.rank_pattern == dict(rank_pattern) and ours.alpha_pattern == dict(alpha_pattern)
    assert moe_rules(CASES["qwen2_moe"][1]().to_dict(), installed_stack()) is None
