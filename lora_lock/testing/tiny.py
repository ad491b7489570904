"""Tiny real example models for tests, the demo and benchmarks: CPU only, seconds, deterministic given a seed.

- :func:`train_bpe_tokenizer` — a byte-level BPE tokenizer trained with ``tokenizers`` on a small built-in
  multilingual corpus, saved so ``transformers.AutoTokenizer`` loads it (with a chat template).
- :func:`build_tiny_llama` / :func:`build_tiny_gpt2` — random-weight ``LlamaForCausalLM`` / ``GPT2LMHeadModel``
  saved as safetensors with config.json, generation_config.json and the tokenizer files.
- :func:`train_lora` — a PEFT LoRA adapter trained a few steps on CPU, so it really changes the model's outputs.
- :func:`adapter_kl` — how much an adapter changes the next-token distributions on a prompt.

They live in :mod:`~lora_lock.testing.tiny_tokenizer`, :mod:`~lora_lock.testing.tiny_lm` and
:mod:`~lora_lock.testing.tiny_lora`; this module gathers them under the one name the tests, the demo and the
benchmarks import (with the private helpers it used to define, for their importers). torch, transformers and peft
are imported inside the functions, so importing this module stays cheap (pytest fixture modules import it in every
session). Nothing here downloads anything or runs remote code.
"""

from __future__ import annotations

from lora_lock.testing.tiny_lm import _save_model as _save_model
from lora_lock.testing.tiny_lm import _seeded as _seeded
from lora_lock.testing.tiny_lm import _torch_dtype as _torch_dtype
from lora_lock.testing.tiny_lm import build_tiny_gpt2, build_tiny_llama
from lora_lock.testing.tiny_lora import _CONV1D_CLASS as _CONV1D_CLASS
from lora_lock.testing.tiny_lora import TRAIN_TEXT, adapter_kl, load_causal_lm, train_lora
from lora_lock.testing.tiny_lora import _conv1d_targets as _conv1d_targets
from lora_lock.testing.tiny_tokenizer import (
    BOS,
    CHAT_TEMPLATE,
    CORPUS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    TOKENIZER_FILES,
    UNK,
    copy_tokenizer,
    encode,
    train_bpe_tokenizer,
)
from lora_lock.testing.tiny_tokenizer import _tokenizer_facts as _tokenizer_facts
from lora_lock.testing.tiny_tokenizer import _write_json as _write_json

__all__ = [
    "BOS",
    "CHAT_TEMPLATE",
    "CORPUS",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "TOKENIZER_FILES",
    "TRAIN_TEXT",
    "UNK",
    "adapter_kl",
    "build_tiny_gpt2",
    "build_tiny_llama",
    "copy_tokenizer",
    "encode",
    "load_causal_lm",
    "train_bpe_tokenizer",
    "train_lora",
]
