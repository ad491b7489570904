"""Tiny configs for every architecture of the installed transformers, derived from its own config classes.

Each config class is instantiated with its defaults, turned into a dict, and every size field (hidden sizes, layers,
heads, experts, vocabulary, nested text / vision / audio sub-configs alike) is shrunk by field name; fields the
class derives from those sizes (``layer_types``, ``head_dim`` …) are dropped so ``__init__`` derives them again.
"""

from __future__ import annotations

import copy
from typing import Any

HIDDEN = 32
HEADS = 4
KV_HEADS = 2
FFN = 64
LAYERS = 2
VOCAB = 128
EXPERTS = 4

_HIDDEN_KEYS = {
    "hidden_size",
    "d_model",
    "n_embd",
    "embed_dim",
    "word_embed_proj_dim",
    "projection_dim",
    "text_embed_dim",
    "vision_embed_dim",
    "encoder_hidden_size",
    "decoder_hidden_size",
    "hidden_dim",
    "embedding_size",
    "d_embed",
    "n_embed",
    "dim",
    "emb_dim",
    "model_dim",
    "proj_dim",
    "output_dim",
    "text_hidden_size",
    "vision_hidden_size",
    "audio_hidden_size",
    "out_hidden_size",
    "mm_hidden_size",
    "projector_hidden_size",
}
_FFN_KEYS = {
    "intermediate_size",
    "ffn_dim",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "n_inner",
    "d_ff",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "expert_intermediate_size",
    "ffn_hidden_size",
    "mlp_dim",
    "hidden_ffn_dim",
    "ff_dim",
    "dense_intermediate_size",
    "moe_ffn_hidden_size",
    "intermediate_dim",
    "dim_feedforward",
    "encoder_intermediate_size",
    "decoder_intermediate_size",
}
_LAYER_KEYS = {
    "num_hidden_layers",
    "n_layer",
    "num_layers",
    "n_layers",
    "encoder_layers",
    "decoder_layers",
    "num_decoder_layers",
    "num_encoder_layers",
    "depth",
    "encoder_num_hidden_layers",
    "decoder_num_hidden_layers",
}
_HEAD_KEYS = {
    "num_attention_heads",
    "n_head",
    "n_heads",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "num_heads",
    "encoder_num_attention_heads",
    "decoder_num_attention_heads",
}
_KV_KEYS = {"num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num"}
_HEAD_DIM_KEYS = {"head_dim", "kv_channels", "attention_head_dim", "qk_head_dim", "v_head_dim"}
_EXPERT_KEYS = {"num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_routed_experts"}
_TOPK_KEYS = {"num_experts_per_tok", "top_k", "moe_topk", "num_selected_experts", "moe_top_k"}
_SHARED_EXPERT_KEYS = {"n_shared_experts", "num_shared_experts", "moe_num_shared_experts"}
_VOCAB_KEYS = {"vocab_size", "text_vocab_size"}
# Derived from the sizes above by __init__: drop so the class derives them again for the tiny sizes.
_DERIVED_KEYS = {
    "layer_types",
    "mlp_only_layers",
    "full_attn_idxs",
    "sliding_window_pattern",
    "block_types",
    "attn_layer_indices",
    "decoder_sparse_step",
    "moe_layer_freq",
    "first_k_dense_replace",
    "out_indices",
    "out_features",
    "stage_names",
    "fullatt_block_indexes",
    "deepstack_visual_indexes",
    "vision_feature_layer",
}
_TOKEN_SUFFIXES = ("_token_id", "_token_index", "_token_ids")


def _shrink_tokens(d: dict[str, Any], vocab: int) -> None:
    """Token ids the tiny vocabulary cannot hold move to distinct ids near its end."""
    spare = vocab - 1
    for key in sorted(d):
        value = d[key]
        if not key.endswith(_TOKEN_SUFFIXES) and key not in {"pad_token_id", "bos_token_id", "eos_token_id"}:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and value >= vocab:
            d[key] = spare
            spare -= 1
        elif isinstance(value, list) and all(isinstance(v, int) for v in value):
            fixed = []
            for v in value:
                if v >= vocab:
                    fixed.append(spare)
                    spare -= 1
                else:
                    fixed.append(v)
            d[key] = fixed


def _scale_section(section: list[int], total: int) -> list[int]:
    """An mrope section scaled to ``total`` (sum), keeping its number of parts."""
    parts = len(section)
    base = [max(1, total // parts)] * parts
    base[-1] = total - sum(base[:-1])
    return base


def shrink(d: dict[str, Any], hidden: int = HIDDEN, layers: int = LAYERS) -> dict[str, Any]:
    """A copy of the config dict ``d`` (and its nested sub-configs) with every size field made tiny."""
    out = copy.deepcopy(d)
    head_dim = hidden // HEADS
    for key in list(out):
        value = out[key]
        if isinstance(value, dict):
            if "model_type" in value or any(k in value for k in _HIDDEN_KEYS | _LAYER_KEYS):
                out[key] = shrink(value, hidden, layers)
            elif key in {"rope_parameters", "rope_scaling"}:
                rope = dict(value)
                if isinstance(rope.get("mrope_section"), list):
                    rope["mrope_section"] = _scale_section(rope["mrope_section"], head_dim // 2)
                out[key] = rope
            continue
        if isinstance(value, bool) or (not isinstance(value, (int, list)) and value is not None):
            continue
        if key in _DERIVED_KEYS:
            del out[key]
        elif not isinstance(value, int):
            if key in {"hidden_sizes", "embed_dims", "hidden_dims"} and isinstance(value, list):
                out[key] = [hidden] * len(value)
            elif key in {"depths", "num_layers_per_stage"} and isinstance(value, list):
                out[key] = [1] * len(value)
            continue
        elif key in _HIDDEN_KEYS:
            out[key] = hidden
        elif key in _FFN_KEYS:
            out[key] = FFN
        elif key in _LAYER_KEYS:
            out[key] = layers
        elif key in _HEAD_KEYS:
            out[key] = HEADS
        elif key in _KV_KEYS:
            out[key] = KV_HEADS
        elif key in _HEAD_DIM_KEYS:
            out[key] = head_dim
        elif key in _EXPERT_KEYS:
            out[key] = EXPERTS
        elif key in _TOPK_KEYS:
            out[key] = 2
        elif key in _SHARED_EXPERT_KEYS:
            out[key] = 1
        elif key in _VOCAB_KEYS:
            out[key] = VOCAB
    if isinstance(out.get("vocab_size"), int):
        _shrink_tokens(out, out["vocab_size"])
    return out


def tiny_config(config_class: Any, hidden: int = HIDDEN, layers: int = LAYERS, **overrides: Any) -> Any:
    """A tiny instance of ``config_class``: its defaults with every size shrunk (``overrides`` applied last)."""
    default = config_class()
    d = default.to_dict()
    for key in ("transformers_version", "architectures", "_name_or_path"):
        d.pop(key, None)
    small = shrink(d, hidden, layers)
    small.update(overrides)
    small.pop("model_type", None)
    return config_class(**small)
