"""A tiny random-weight vision-language base (``LlavaForConditionalGeneration``) for tests and benchmarks.

Its language model is a tiny Llama over the tiny BPE tokenizer, its vision tower a one-layer CLIP on 16×16 images;
the probe scores its text path (token ids only). Deterministic given ``seed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_lock.testing.tiny import _save_model, _seeded, _tokenizer_facts


def build_tiny_llava(
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    *,
    seed: int,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    initializer_range: float = 0.1,
) -> Path:
    """Save a random-weight ``LlavaForConditionalGeneration`` (safetensors), its config and the tokenizer."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    out, tok_dir = Path(out_dir), Path(tokenizer_dir)
    n_vocab, bos, eos, pad = _tokenizer_facts(tok_dir)
    text = LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        initializer_range=initializer_range,
        rms_norm_eps=1e-6,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8
    )
    # The image placeholder is a token no text here uses (the unknown token's id).
    config_class: Any = LlavaConfig  # its constructor takes the shared config options as keywords
    config = config_class(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_index=pad,
        initializer_range=initializer_range,
    )
    with _seeded(seed), torch.no_grad():
        model = LlavaForConditionalGeneration(config)
    return _save_model(model, out, tok_dir, bos, eos, pad)
