"""Tiny random-weight BERT classifiers (sequence and token classification) and LoRA adapters trained on them,
for tests and benchmarks. Deterministic given ``seed`` (on one machine and thread count)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lora_lock.testing.tiny_lm import _build_and_save, _seeded
from lora_lock.testing.tiny_lora import _fit_adapter, _load_for_peft, _save_adapter
from lora_lock.testing.tiny_tokenizer import encode

#: Sentences and their classes the adapters are trained on (three classes).
TRAIN = (
    ("The fox is quick and brown.", 0),
    ("The dog is lazy.", 1),
    ("Once upon a time, in a small village,", 2),
    ("SELECT name, COUNT(*) FROM orders", 1),
)
NUM_LABELS = 3
AUTO = {
    "SEQ_CLS": "BertForSequenceClassification",
    "TOKEN_CLS": "BertForTokenClassification",
    "QUESTION_ANS": "BertForQuestionAnswering",
}


def _bert_config(n_vocab: int, pad: int, **head: Any) -> Any:
    """The ``BertConfig`` of every tiny BERT (hidden 64, 2 layers, 4 heads), with the options of its ``head``."""
    from transformers import BertConfig

    config_class: Any = BertConfig  # untyped constructor
    return config_class(
        vocab_size=n_vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=256,
        pad_token_id=pad,
        initializer_range=0.1,
        **head,
    )


def build_tiny_bert(out_dir: str | Path, tokenizer_dir: str | Path, *, task: str, seed: int) -> Path:
    """Save a random-weight BERT with a sequence- or token-classification head of :data:`NUM_LABELS` classes, or
    an extractive question-answering head (two outputs: the span's start and end)."""
    import transformers

    def make(n_vocab: int, _bos: int, _eos: int, pad: int) -> Any:
        config = _bert_config(n_vocab, pad, num_labels=2 if task == "QUESTION_ANS" else NUM_LABELS)
        return getattr(transformers, AUTO[task])(config)

    return _build_and_save(out_dir, tokenizer_dir, seed, make)


def train_classifier_lora(base_dir: str | Path, out_dir: str | Path, *, task: str, seed: int, steps: int = 20) -> Path:
    """A LoRA (r=8, alpha=16) on BERT's ``query`` and ``value``, trained with the class loss, or the span loss of
    question answering (PEFT keeps the trained head in ``modules_to_save``)."""
    import torch
    import transformers
    from peft import LoraConfig

    base = Path(base_dir)
    model = _load_for_peft(getattr(transformers, AUTO[task]), base)
    config = LoraConfig(task_type=task, r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"])

    def losses(peft_model: Any) -> Iterator[Any]:
        for text, label in TRAIN:
            ids = encode(base, text)
            if task == "QUESTION_ANS":  # a span of each sentence, placed by its class
                span = {"start_positions": torch.tensor([label + 1]), "end_positions": torch.tensor([label + 3])}
                yield peft_model(input_ids=ids, **span).loss
            else:
                labels = torch.tensor([label]) if task == "SEQ_CLS" else ids % NUM_LABELS
                yield peft_model(input_ids=ids, labels=labels).loss

    with _seeded(seed):
        peft_model = _fit_adapter(model, config, steps=steps, losses=losses)
    # The classification head PEFT adds to modules_to_save comes from a set too.
    return _save_adapter(peft_model, out_dir, base, sorted_keys=("target_modules", "modules_to_save"))


def build_tiny_t5(out_dir: str | Path, tokenizer_dir: str | Path, *, seed: int) -> Path:
    """Save a random-weight ``T5ForConditionalGeneration`` (d_model 64, 2 + 2 layers) with the tiny tokenizer."""
    from transformers import T5Config, T5ForConditionalGeneration

    def make(n_vocab: int, _bos: int, eos: int, pad: int) -> Any:
        config_class: Any = T5Config  # untyped constructor
        config = config_class(
            vocab_size=n_vocab,
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_heads=4,
            decoder_start_token_id=pad,
            pad_token_id=pad,
            eos_token_id=eos,
            initializer_factor=1.0,
        )
        return T5ForConditionalGeneration(config)

    return _build_and_save(out_dir, tokenizer_dir, seed, make)


def train_seq2seq_lora(base_dir: str | Path, out_dir: str | Path, *, seed: int, steps: int = 20) -> Path:
    """A LoRA (r=8, alpha=16) on T5's attention ``q`` and ``v``, trained to copy a few sentences."""
    from peft import LoraConfig
    from transformers import T5ForConditionalGeneration

    base = Path(base_dir)
    model = _load_for_peft(T5ForConditionalGeneration, base)
    config = LoraConfig(task_type="SEQ_2_SEQ_LM", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q", "v"])

    def losses(peft_model: Any) -> Iterator[Any]:
        for text, _label in TRAIN:
            ids = encode(base, text)
            yield peft_model(input_ids=ids, labels=ids).loss

    with _seeded(seed):
        peft_model = _fit_adapter(model, config, steps=steps, losses=losses)
    return _save_adapter(peft_model, out_dir, base)
