"""Tiny random-weight BERT classifiers (sequence and token classification) and LoRA adapters trained on them,
for tests and benchmarks. Deterministic given ``seed`` (on one machine and thread count)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lora_lock.testing.tiny import _save_model, _seeded, _tokenizer_facts, encode

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


def build_tiny_bert(out_dir: str | Path, tokenizer_dir: str | Path, *, task: str, seed: int) -> Path:
    """Save a random-weight BERT with a sequence- or token-classification head of :data:`NUM_LABELS` classes, or
    an extractive question-answering head (two outputs: the span's start and end)."""
    import torch
    import transformers
    from transformers import BertConfig

    out, tok_dir = Path(out_dir), Path(tokenizer_dir)
    n_vocab, bos, eos, pad = _tokenizer_facts(tok_dir)
    config_class: Any = BertConfig
    config = config_class(
        vocab_size=n_vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=256,
        num_labels=2 if task == "QUESTION_ANS" else NUM_LABELS,
        pad_token_id=pad,
        initializer_range=0.1,
    )
    with _seeded(seed), torch.no_grad():
        model = getattr(transformers, AUTO[task])(config)
    return _save_model(model, out, tok_dir, bos, eos, pad)


def train_classifier_lora(base_dir: str | Path, out_dir: str | Path, *, task: str, seed: int, steps: int = 20) -> Path:
    """A LoRA (r=8, alpha=16) on BERT's ``query`` and ``value``, trained with the class loss, or the span loss of
    question answering (PEFT keeps the trained head in ``modules_to_save``)."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    base, out = Path(base_dir), Path(out_dir)
    model: Any = getattr(transformers, AUTO[task]).from_pretrained(str(base), local_files_only=True)
    model.name_or_path = str(base)
    config = LoraConfig(task_type=task, r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"])
    with _seeded(seed):
        peft_model = get_peft_model(model, config)
        peft_model.train()
        optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(steps):
            for text, label in TRAIN:
                ids = encode(base, text)
                if task == "QUESTION_ANS":  # a span of each sentence, placed by its class
                    span = {"start_positions": torch.tensor([label + 1]), "end_positions": torch.tensor([label + 3])}
                    loss = peft_model(input_ids=ids, **span).loss
                else:
                    labels = torch.tensor([label]) if task == "SEQ_CLS" else ids % NUM_LABELS
                    loss = peft_model(input_ids=ids, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    peft_model.eval()
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    config_path = out / "adapter_config.json"
    saved: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    for key in ("target_modules", "modules_to_save"):
        if isinstance(saved.get(key), list):
            saved[key] = sorted(saved[key])
    saved["base_model_name_or_path"] = str(base)
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True), encoding="utf-8")
    return out


def build_tiny_t5(out_dir: str | Path, tokenizer_dir: str | Path, *, seed: int) -> Path:
    """Save a random-weight ``T5ForConditionalGeneration`` (d_model 64, 2 + 2 layers) with the tiny tokenizer."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    out, tok_dir = Path(out_dir), Path(tokenizer_dir)
    n_vocab, bos, eos, pad = _tokenizer_facts(tok_dir)
    config_class: Any = T5Config
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
    with _seeded(seed), torch.no_grad():
        model = T5ForConditionalGeneration(config)
    return _save_model(model, out, tok_dir, bos, eos, pad)


def train_seq2seq_lora(base_dir: str | Path, out_dir: str | Path, *, seed: int, steps: int = 20) -> Path:
    """A LoRA (r=8, alpha=16) on T5's attention ``q`` and ``v``, trained to copy a few sentences."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import T5ForConditionalGeneration

    base, out = Path(base_dir), Path(out_dir)
    model: Any = T5ForConditionalGeneration.from_pretrained(str(base), local_files_only=True)
    model.name_or_path = str(base)
    config = LoraConfig(task_type="SEQ_2_SEQ_LM", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q", "v"])
    with _seeded(seed):
        peft_model = get_peft_model(model, config)
        peft_model.train()
        optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(steps):
            for text, _label in TRAIN:
                ids = encode(base, text)
                loss = peft_model(input_ids=ids, labels=ids).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    peft_model.eval()
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    config_path = out / "adapter_config.json"
    saved: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(saved.get("target_modules"), list):
        saved["target_modules"] = sorted(saved["target_modules"])
    saved["base_model_name_or_path"] = str(base)
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True), encoding="utf-8")
    return out
