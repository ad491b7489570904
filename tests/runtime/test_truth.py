"""The runtime view against the model transformers really builds.

For tiny real models of the families people fine-tune, the checkpoint is written two ways: by ``save_pretrained``
(which reverts transformers' load conversions, i.e. the layout older stacks wrote: ``language_model.model.*``,
per-expert ``w1/w2/w3``, ViT's ``attention.attention.query``...) and with the runtime names (a model loaded and
saved without reverting). ``runtime_view`` on the stored headers must give exactly the names and shapes of
``from_pretrained(...).named_parameters()`` (plus persistent buffers), and transformers must have loaded every
stored tensor (no missing or unexpected keys) for the case to count.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lora_lock.inspect.checkpoint import read_checkpoint
from lora_lock.runtime import installed_stack, runtime_view

pytestmark = pytest.mark.slow

TEXT = {
    "vocab_size": 96,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
MOE = {"num_local_experts": 4, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 24}
VISION_CLIP = {
    "model_type": "clip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 16,
    "patch_size": 8,
}


def _cfg(model_type: str, **kwargs: Any) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **kwargs)


#: name → (architecture class, config factory)
CASES: dict[str, tuple[str, Callable[[], Any]]] = {
    "llama": ("LlamaForCausalLM", lambda: _cfg("llama", **TEXT)),
    "gpt2": ("GPT2LMHeadModel", lambda: _cfg("gpt2", vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
    "gpt_neox": ("GPTNeoXForCausalLM", lambda: _cfg("gpt_neox", **TEXT, tie_word_embeddings=False)),
    "mixtral": ("MixtralForCausalLM", lambda: _cfg("mixtral", **TEXT, **MOE)),
    "qwen3_moe": ("Qwen3MoeForCausalLM", lambda: _cfg("qwen3_moe", **TEXT, **MOE, head_dim=8)),
    "olmoe": ("OlmoeForCausalLM", lambda: _cfg("olmoe", **TEXT, **MOE)),
    "qwen2_moe": (
        "Qwen2MoeForCausalLM",
        lambda: _cfg("qwen2_moe", **TEXT, **MOE, shared_expert_intermediate_size=24),
    ),
    "llava": (
        "LlavaForConditionalGeneration",
        lambda: _cfg(
            "llava",
            text_config={"model_type": "llama", **TEXT},
            vision_config=VISION_CLIP,
            image_token_index=95,
            projector_hidden_act="gelu",
        ),
    ),
    # a sub-config type other than the default (SigLIP tower, Qwen2 text): the table swaps in those classes' trees
    "llava_siglip": (
        "LlavaForConditionalGeneration",
        lambda: _cfg(
            "llava",
            text_config={"model_type": "qwen2", **TEXT},
            vision_config={**VISION_CLIP, "model_type": "siglip_vision_model"},
            image_token_index=95,
            projector_hidden_act="gelu",
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
        ),
    ),
    "qwen2_vl": (
        "Qwen2VLForConditionalGeneration",
        lambda: _cfg(
            "qwen2_vl",
            text_config={
                "model_type": "qwen2_vl_text",
                **TEXT,
                "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
            },
            vision_config={
                "depth": 2,
                "embed_dim": 32,
                "hidden_size": 32,
                "num_heads": 4,
                "mlp_ratio": 2,
                "patch_size": 4,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
            },
            vision_start_token_id=90,
            vision_end_token_id=91,
            image_token_id=92,
            video_token_id=93,
        ),
    ),
    "gemma3": (
        "Gemma3ForConditionalGeneration",
        lambda: _cfg(
            "gemma3",
            text_config={"model_type": "gemma3_text", **TEXT, "head_dim": 8, "sliding_window": 16},
            vision_config={
                "model_type": "siglip_vision_model",
                "hidden_size": 32,
                "intermediate_size": 48,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "image_size": 16,
                "patch_size": 4,
            },
            mm_tokens_per_image=4,
            image_token_index=95,
            boi_token_index=93,
            eoi_token_index=94,
        ),
    ),
    "vit": (
        "ViTForImageClassification",
        lambda: _cfg(
            "vit",
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=16,
            patch_size=8,
            num_labels=3,
        ),
    ),
    "t5": (
        "T5ForConditionalGeneration",
        lambda: _cfg("t5", vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4),
    ),
    "bert": (
        "BertForSequenceClassification",
        lambda: _cfg(
            "bert",
            vocab_size=96,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            num_labels=2,
        ),
    ),
}


def _expected(model: Any) -> dict[str, tuple[int, ...]]:
    """Parameters (tied ones once) and the persistent buffers: what a checkpoint of this model holds."""
    state = set(model.state_dict())
    out = {name: tuple(p.shape) for name, p in model.named_parameters()}
    out.update({name: tuple(b.shape) for name, b in model.named_buffers() if name in state})
    return out


@pytest.fixture(scope="session")
def truth_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, dict[str, Path]]]:
    """Each case saved in the legacy (reverted) layout and in the runtime layout; built once per session."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("runtime-truth")
    out: dict[str, tuple[str, dict[str, Path]]] = {}
    for name, (cls_name, make) in CASES.items():
        cls = getattr(transformers, cls_name)
        torch.manual_seed(0)
        model = cls(make())
        legacy = root / name / "legacy"
        model.save_pretrained(legacy)
        loaded = cls.from_pretrained(legacy)
        loaded._weight_conversions = []  # save exactly the runtime names
        runtime = root / name / "runtime"
        loaded.save_pretrained(runtime)
        out[name] = (cls_name, {"legacy": legacy, "runtime": runtime})
    return out


@pytest.mark.parametrize("layout", ["legacy", "runtime"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_runtime_view_equals_the_built_model(
    truth_models: dict[str, tuple[str, dict[str, Path]]], case: str, layout: str
) -> None:
    import transformers

    cls_name, dirs = truth_models[case]
    path = dirs[layout]
    model, info = getattr(transformers, cls_name).from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    expected = _expected(model)

    config = json.loads((path / "config.json").read_text())
    stored = read_checkpoint(path).tensors
    view = runtime_view(config, stored, installed_stack())
    got = {name: t.shape for name, t in view.tensors.items()}
    assert got == expected, (view.rules, sorted(set(got) ^ set(expected))[:12])
    assert all(t.name == name for name, t in view.tensors.items())
    assert set(view.origin) == set(view.tensors)
    assert {n for names in view.origin.values() for n in names} == set(stored)
    assert not [n for n in view.notes if n.code == "RUNTIME-UNMODELLED"], view.notes


def test_fused_experts_come_from_per_expert_tensors(truth_models: dict[str, tuple[str, dict[str, Path]]]) -> None:
    """Mixtral's legacy w1/w3 experts become one [E, 2*I, H] parameter built from 2*E checkpoint tensors."""
    _, dirs = truth_models["mixtral"]
    config = json.loads((dirs["legacy"] / "config.json").read_text())
    view = runtime_view(config, read_checkpoint(dirs["legacy"]).tensors, installed_stack())
    name = "model.layers.0.mlp.experts.gate_up_proj"
    assert view.tensors[name].shape == (4, 2 * 48, 32)
    assert name in view.fused
    assert len(view.origin[name]) == 8
    assert all(".block_sparse_moe.experts." in n for n in view.origin[name])
    assert "mixtral" in view.rules and "MixtralForCausalLM" in view.rules


def test_legacy_layernorm_gamma_beta_names_are_renamed(
    truth_models: dict[str, tuple[str, dict[str, Path]]], tmp_path: Path
) -> None:
    """Checkpoints of the TF era store ``LayerNorm.gamma/beta``; transformers' ``legacy`` renames load them."""
    import shutil

    import transformers
    from safetensors.torch import load_file, save_file

    cls_name, dirs = truth_models["bert"]
    shutil.copy(dirs["runtime"] / "config.json", tmp_path / "config.json")
    state = load_file(dirs["runtime"] / "model.safetensors")
    old = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in state.items()
    }
    assert any(".gamma" in k for k in old)
    save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model, info = getattr(transformers, cls_name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    config = json.loads((tmp_path / "config.json").read_text())
    view = runtime_view(config, read_checkpoint(tmp_path).tensors, installed_stack())
    assert {n: t.shape for n, t in view.tensors.items()} == _expected(model)
