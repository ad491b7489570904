"""A tiny random-weight BERT encoder (``BertModel``, no head) and a ``FEATURE_EXTRACTION`` LoRA trained on it, for
tests and benchmarks. Deterministic given ``seed`` (on one machine and thread count)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lora_lock.testing.tiny import _save_model, _seeded, _tokenizer_facts, encode
from lora_lock.testing.tiny_cls import NUM_LABELS, TRAIN


def build_tiny_encoder(out_dir: str | Path, tokenizer_dir: str | Path, *, seed: int) -> Path:
    """Save a random-weight ``BertModel`` (hidden 64, 2 layers, 4 heads) with the tiny tokenizer: what
    ``AutoModel`` loads for an embedding model."""
    import torch
    from transformers import BertConfig, BertModel

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
        pad_token_id=pad,
        initializer_range=0.1,
    )
    with _seeded(seed), torch.no_grad():
        model = BertModel(config)
    return _save_model(model, out, tok_dir, bos, eos, pad)


def train_embedding_lora(base_dir: str | Path, out_dir: str | Path, *, seed: int, steps: int = 2) -> Path:
    """A ``FEATURE_EXTRACTION`` LoRA (r=8, alpha=16) on BERT's ``query`` and ``value``, trained so that each
    sentence's mean-pooled embedding points towards a fixed random direction of its class (cosine loss): its
    ``lora_B`` is non-zero and it moves every embedding."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertModel

    base, out = Path(base_dir), Path(out_dir)
    model: Any = BertModel.from_pretrained(str(base), local_files_only=True)
    model.name_or_path = str(base)
    config = LoraConfig(
        task_type="FEATURE_EXTRACTION", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"]
    )
    with _seeded(seed):
        targets = torch.randn(NUM_LABELS, int(model.config.hidden_size))
        peft_model = get_peft_model(model, config)
        peft_model.train()
        optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(steps):
            for text, label in TRAIN:
                ids = encode(base, text)
                pooled = peft_model(input_ids=ids).last_hidden_state[0].mean(0)
                loss: Any = 1 - torch.nn.functional.cosine_similarity(pooled, targets[label], dim=0)
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
