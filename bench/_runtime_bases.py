"""Header-only, size-real bases whose runtime names differ from their checkpoint names (transformers 5).

* ``Qwen3-MoE`` — shaped like Qwen/Qwen3-30B-A3B (config.json of that repo): 48 layers × 128 experts, 18 867
  tensors, 61 GB in 16 shards. transformers 5 fuses each layer's per-expert ``gate_proj``/``up_proj``/
  ``down_proj`` into ``mlp.experts.gate_up_proj`` / ``mlp.experts.down_proj`` parameters at load.
* ``Llava-1.5-7B`` — shaped like llava-hf/llava-1.5-7b-hf in its original layout (``language_model.model.*``,
  ``vision_tower.vision_model.*``, ``multi_modal_projector.*``): a CLIP ViT-L/14-336 tower and a Llama-2-7B text
  model, 14 GB in 3 shards. transformers 5 moves the prefixes to ``model.language_model.*`` etc. at load.

Data sections are sparse holes (``truncate``), as in ``bench/_bases.py``; adapters are shaped from the runtime
model (:func:`lora_lock.runtime.runtime_view`), i.e. as PEFT on transformers 5 saves them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _adapters import write_sparse_safetensors

BF16 = "BF16"
STAMP = ".built-runtime-v1"
Table = dict[str, tuple[str, tuple[int, ...]]]


def qwen3_moe_config() -> dict[str, Any]:
    """Qwen/Qwen3-30B-A3B's config.json (the fields the model is built from)."""
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "attention_bias": False,
        "bos_token_id": 151643,
        "decoder_sparse_step": 1,
        "eos_token_id": 151645,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 6144,
        "max_position_embeddings": 40960,
        "max_window_layers": 48,
        "mlp_only_layers": [],
        "model_type": "qwen3_moe",
        "moe_intermediate_size": 768,
        "norm_topk_prob": True,
        "num_attention_heads": 32,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "num_hidden_layers": 48,
        "num_key_value_heads": 4,
        "output_router_logits": False,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "router_aux_loss_coef": 0.001,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    }


def qwen3_moe_tensors(cfg: Mapping[str, Any]) -> Table:
    h, heads, kv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    moe, experts = cfg["moe_intermediate_size"], cfg["num_experts"]
    out: Table = {"model.embed_tokens.weight": (BF16, (cfg["vocab_size"], h))}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out[p + "input_layernorm.weight"] = (BF16, (h,))
        out[p + "post_attention_layernorm.weight"] = (BF16, (h,))
        out[p + "self_attn.q_proj.weight"] = (BF16, (heads * hd, h))
        out[p + "self_attn.k_proj.weight"] = (BF16, (kv * hd, h))
        out[p + "self_attn.v_proj.weight"] = (BF16, (kv * hd, h))
        out[p + "self_attn.o_proj.weight"] = (BF16, (h, heads * hd))
        out[p + "self_attn.q_norm.weight"] = (BF16, (hd,))
        out[p + "self_attn.k_norm.weight"] = (BF16, (hd,))
        out[p + "mlp.gate.weight"] = (BF16, (experts, h))
        for e in range(experts):
            q = f"{p}mlp.experts.{e}."
            out[q + "gate_proj.weight"] = (BF16, (moe, h))
            out[q + "up_proj.weight"] = (BF16, (moe, h))
            out[q + "down_proj.weight"] = (BF16, (h, moe))
    out["model.norm.weight"] = (BF16, (h,))
    out["lm_head.weight"] = (BF16, (cfg["vocab_size"], h))
    return out


def llava_config() -> dict[str, Any]:
    """llava-hf/llava-1.5-7b-hf's config.json (sub-configs spelled out: transformers 5 fills no defaults here)."""
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_token_index": 32000,
        "model_type": "llava",
        "pad_token_id": 32001,
        "projector_hidden_act": "gelu",
        "text_config": {
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "max_position_embeddings": 4096,
            "model_type": "llama",
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 32,
            "rms_norm_eps": 1e-05,
            "torch_dtype": "float16",
            "vocab_size": 32064,
        },
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "vision_config": {
            "hidden_size": 1024,
            "image_size": 336,
            "intermediate_size": 4096,
            "model_type": "clip_vision_model",
            "num_attention_heads": 16,
            "num_hidden_layers": 24,
            "patch_size": 14,
            "projection_dim": 768,
            "vocab_size": 32000,
        },
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": 32064,
    }


def llava_tensors(cfg: Mapping[str, Any]) -> Table:
    t, v = cfg["text_config"], cfg["vision_config"]
    h, inter, vocab = t["hidden_size"], t["intermediate_size"], t["vocab_size"]
    out: Table = {"language_model.model.embed_tokens.weight": (BF16, (vocab, h))}
    for n in range(t["num_hidden_layers"]):
        p = f"language_model.model.layers.{n}."
        out[p + "input_layernorm.weight"] = (BF16, (h,))
        out[p + "post_attention_layernorm.weight"] = (BF16, (h,))
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[p + f"self_attn.{proj}.weight"] = (BF16, (h, h))
        out[p + "mlp.gate_proj.weight"] = (BF16, (inter, h))
        out[p + "mlp.up_proj.weight"] = (BF16, (inter, h))
        out[p + "mlp.down_proj.weight"] = (BF16, (h, inter))
    out["language_model.model.norm.weight"] = (BF16, (h,))
    out["language_model.lm_head.weight"] = (BF16, (vocab, h))
    vh, vi, patch = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    positions = (v["image_size"] // patch) ** 2 + 1
    vp = "vision_tower.vision_model."
    out[vp + "embeddings.class_embedding"] = (BF16, (vh,))
    out[vp + "embeddings.patch_embedding.weight"] = (BF16, (vh, 3, patch, patch))
    out[vp + "embeddings.position_embedding.weight"] = (BF16, (positions, vh))
    out[vp + "pre_layrnorm.weight"] = (BF16, (vh,))  # sic: CLIP's own spelling
    out[vp + "pre_layrnorm.bias"] = (BF16, (vh,))
    for n in range(v["num_hidden_layers"]):
        p = f"{vp}encoder.layers.{n}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[p + f"self_attn.{proj}.weight"] = (BF16, (vh, vh))
            out[p + f"self_attn.{proj}.bias"] = (BF16, (vh,))
        for norm in ("layer_norm1", "layer_norm2"):
            out[p + f"{norm}.weight"] = (BF16, (vh,))
            out[p + f"{norm}.bias"] = (BF16, (vh,))
        out[p + "mlp.fc1.weight"] = (BF16, (vi, vh))
        out[p + "mlp.fc1.bias"] = (BF16, (vi,))
        out[p + "mlp.fc2.weight"] = (BF16, (vh, vi))
        out[p + "mlp.fc2.bias"] = (BF16, (vh,))
    out[vp + "post_layernorm.weight"] = (BF16, (vh,))
    out[vp + "post_layernorm.bias"] = (BF16, (vh,))
    out["multi_modal_projector.linear_1.weight"] = (BF16, (h, vh))
    out["multi_modal_projector.linear_1.bias"] = (BF16, (h,))
    out["multi_modal_projector.linear_2.weight"] = (BF16, (h, h))
    out["multi_modal_projector.linear_2.bias"] = (BF16, (h,))
    return out


SPECS: dict[str, tuple[str, Any, Any, int]] = {
    "Qwen3-MoE": ("Qwen/Qwen3-30B-A3B", qwen3_moe_config, qwen3_moe_tensors, 16),
    "Llava-1.5-7B": ("llava-hf/llava-1.5-7b-hf", llava_config, llava_tensors, 3),
}


def _nbytes(shape: Sequence[int]) -> int:
    n = 2
    for d in shape:
        n *= d
    return n


def write_base(root: Path, config: Mapping[str, Any], tensors: Table, shards: int) -> Path:
    """config.json plus ``shards`` sparse safetensors shards in model order, with an index when sharded."""
    root.mkdir(parents=True, exist_ok=True)
    total = sum(_nbytes(s) for _, s in tensors.values())
    per_shard = total / shards
    groups: list[Table] = [{}]
    filled = 0
    for name, (dtype, shape) in tensors.items():
        if groups[-1] and filled + _nbytes(shape) > per_shard and len(groups) < shards:
            groups.append({})
            filled = 0
        groups[-1][name] = (dtype, shape)
        filled += _nbytes(shape)
    (root / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    weight_map: dict[str, str] = {}
    for k, group in enumerate(groups, 1):
        fname = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        write_sparse_safetensors(root / fname, group)
        weight_map.update(dict.fromkeys(group, fname))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return root


def make_runtime_base(root: Path, key: str) -> tuple[Path, str]:
    """The header-only base ``key`` under ``root``, built once: (directory, Hub name it imitates)."""
    name, config_of, tensors_of, shards = SPECS[key]
    base = root / "base"
    if (root / STAMP).is_file():
        return base, name
    if root.exists():
        shutil.rmtree(root)
    config = config_of()
    write_base(base, config, tensors_of(config), shards)
    (root / STAMP).write_text("ok\n")
    return base, name


def write_runtime_adapter(
    adapter_dir: Path, base_dir: Path, *, base_name: str, targets: Sequence[str], r: int = 16
) -> dict[str, int]:
    """A LoRA adapter as PEFT on transformers 5 saves it: keys under the *runtime* module names of the base."""
    from lora_lock.inspect.checkpoint import read_checkpoint
    from lora_lock.runtime import installed_stack, runtime_view

    config = json.loads((base_dir / "config.json").read_text())
    view = runtime_view(config, read_checkpoint(base_dir).tensors, installed_stack())
    tensors: dict[str, tuple[str, Sequence[int]]] = {}
    for name, info in view.tensors.items():
        module, _, leaf = name.rpartition(".")
        if leaf != "weight" or module.rpartition(".")[2] not in targets or len(info.shape) != 2:
            continue
        out_f, in_f = info.shape
        tensors[f"base_model.model.{module}.lora_A.weight"] = (BF16, (r, in_f))
        tensors[f"base_model.model.{module}.lora_B.weight"] = (BF16, (out_f, r))
    adapter = {
        "base_model_name_or_path": base_name,
        "bias": "none",
        "inference_mode": True,
        "lora_alpha": 2 * r,
        "lora_dropout": 0.0,
        "peft_type": "LORA",
        "r": r,
        "target_modules": sorted(targets),
        "task_type": "CAUSAL_LM",
    }
    adapter_dir.mkdir(parents=True, exist_ok=True)
    (adapter_dir / "adapter_config.json").write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")
    size = write_sparse_safetensors(adapter_dir / "adapter_model.safetensors", tensors)
    return {"tensors": len(tensors), "bytes": size}
