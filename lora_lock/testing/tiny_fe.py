"""A tiny random-weight BERT encoder (``BertModel``, no head) and a ``FEATURE_EXTRACTION`` LoRA trained on it, for
tests and benchmarks. Deterministic given ``seed`` (on one machine and thread count)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lora_lock.testing.tiny_cls import NUM_LABELS, TRAIN, _bert_config
from lora_lock.testing.tiny_lm import _build_and_save, _seeded
from lora_lock.testing.tiny_lora import _fit_adapter, _load_for_peft, _save_adapter
from lora_lock.testing.tiny_tokenizer import encode


def build_tiny_encoder(out_dir: str | Path, tokenizer_dir: str | Path, *, seed: int) -> Path:
    """Save a random-weight ``BertModel`` (hidden 64, 2 layers, 4 heads) with the tiny tokenizer: what
    ``AutoModel`` loads for an embedding model."""
    from transformers import BertModel

    def make(n_vocab: int, _bos: int, _eos: int, pad: int) -> Any:
        return BertModel(_bert_config(n_vocab, pad))

    return _build_and_save(out_dir, tokenizer_dir, seed, make)


def train_embedding_lora(base_dir: str | Path, out_dir: str | Path, *, seed: int, steps: int = 2) -> Path:
    """A ``FEATURE_EXTRACTION`` LoRA (r=8, alpha=16) on BERT's ``query`` and ``value``, trained so that each
    sentence's mean-pooled embedding points towards a fixed random direction of its class (cosine loss): its
    ``lora_B`` is non-zero and it moves every embedding."""
    import torch
    from peft import LoraConfig
    from transformers import BertModel

    base = Path(base_dir)
    model = _load_for_peft(BertModel, base)
    config = LoraConfig(
        task_type="FEATURE_EXTRACTION", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"]
    )

    def losses(peft_model: Any) -> Iterator[Any]:
        for text, label in TRAIN:
            pooled = peft_model(input_ids=encode(base, text)).last_hidden_state[0].mean(0)
            yield 1 - torch.nn.functional.cosine_similarity(pooled, targets[label], dim=0)

    with _seeded(seed):
        # Drawn before the adapter's initial weights, from the same seeded stream.
        targets = torch.randn(NUM_LABELS, int(model.config.hidden_size))
        peft_model = _fit_adapter(model, config, steps=steps, losses=losses)
    return _save_adapter(peft_model, out_dir, base)
