"""A tiny random-weight vision-language base (``LlavaForConditionalGeneration``) for tests and benchmarks.

Its language model is a tiny Llama over the tiny BPE tokenizer, its vision tower a one-layer CLIP on 16×16 images;
the probe scores its text path (token ids only). Deterministic given ``seed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_lock.testing.tiny_lm import _build_and_save, _llama_config


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
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    def make(n_vocab: int, bos: int, eos: int, pad: int) -> Any:
        text = _llama_config(
            n_vocab,
            bos,
            eos,
            pad,
            hidden=hidden,
            layers=layers,
            heads=heads,
            kv_heads=kv_heads,
            intermediate=intermediate,
            max_positions=256,
            initializer_range=initializer_range,
        )
        vision = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        )
        # The image placeholder is a token no text here uses (the unknown token's id).
        config_class: Any = LlavaConfig  # its constructor takes the shared config options as keywords
        config = config_class(
            vision_config=vision.to_dict(),
            text_config=text.to_dict(),
            image_token_index=pad,
            initializer_range=initializer_range,
        )
        return LlavaForConditionalGeneration(config)

    return _build_and_save(out_dir, tokenizer_dir, seed, make)
