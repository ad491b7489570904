"""Random-weight tiny causal language models (``LlamaForCausalLM``, ``GPT2LMHeadModel``) and the plumbing every
tiny base builder shares: seeding, the Llama text config, and saving weights, generation config and tokenizer.

torch and transformers are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lora_lock.testing.tiny_tokenizer import _tokenizer_facts, copy_tokenizer


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block and restore the caller's random state afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _save_model(model: Any, out: Path, tokenizer_dir: Path, bos: int, eos: int, pad: int) -> Path:
    from transformers import GenerationConfig

    generation_class: Any = GenerationConfig  # untyped constructor
    model.generation_config = generation_class(
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False, max_new_tokens=16
    )
    model.eval()
    model.save_pretrained(str(out))
    copy_tokenizer(tokenizer_dir, out)
    return out


def _build_and_save(
    out_dir: str | Path, tokenizer_dir: str | Path, seed: int, make: Callable[[int, int, int, int], Any]
) -> Path:
    """Build a base with ``make(vocab size, bos id, eos id, pad id)`` under :func:`_seeded` and save it.

    ``make`` builds the config as well as the model: building a config draws no random numbers, so only the
    weights consume the seeded stream, as when each builder did these steps itself.
    """
    import torch

    out, tok_dir = Path(out_dir), Path(tokenizer_dir)
    n_vocab, bos, eos, pad = _tokenizer_facts(tok_dir)
    with _seeded(seed), torch.no_grad():
        model = make(n_vocab, bos, eos, pad)
    return _save_model(model, out, tok_dir, bos, eos, pad)


def _llama_config(
    vocab_size: int,
    bos: int,
    eos: int,
    pad: int,
    *,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    max_positions: int,
    initializer_range: float,
    tie_word_embeddings: bool = False,
) -> Any:
    """The ``LlamaConfig`` of a tiny Llama: the causal base's own, and the text model of the tiny LLaVA."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        initializer_range=initializer_range,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def _torch_dtype(name: str) -> Any:
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r}")
    return dtype


def build_tiny_llama(
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    *,
    seed: int,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    vocab_size: int | None = None,
    max_positions: int = 256,
    tie_word_embeddings: bool = False,
    initializer_range: float = 0.1,
    dtype: str = "float32",
) -> Path:
    """Save a random-weight ``LlamaForCausalLM`` (safetensors), its configs and the tokenizer into ``out_dir``.

    ``vocab_size`` defaults to the tokenizer's (a larger one pads the embedding, as real bases often do).
    ``initializer_range`` is larger than transformers' 0.02 so the random base's next-token distributions are not
    flat and an adapter can move them visibly.
    """
    from transformers import LlamaForCausalLM

    def make(n_vocab: int, bos: int, eos: int, pad: int) -> Any:
        config = _llama_config(
            vocab_size or n_vocab,
            bos,
            eos,
            pad,
            hidden=hidden,
            layers=layers,
            heads=heads,
            kv_heads=kv_heads,
            intermediate=intermediate,
            max_positions=max_positions,
            initializer_range=initializer_range,
            tie_word_embeddings=tie_word_embeddings,
        )
        return LlamaForCausalLM(config).to(_torch_dtype(dtype))

    return _build_and_save(out_dir, tokenizer_dir, seed, make)


def build_tiny_gpt2(
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    *,
    seed: int,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int | None = None,
    max_positions: int = 256,
    initializer_range: float = 0.1,
    dtype: str = "float32",
) -> Path:
    """Save a random-weight ``GPT2LMHeadModel`` (``Conv1D`` projections, tied head) like :func:`build_tiny_llama`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    def make(n_vocab: int, bos: int, eos: int, pad: int) -> Any:
        config = GPT2Config(
            vocab_size=vocab_size or n_vocab,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=max_positions,
            initializer_range=initializer_range,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        return GPT2LMHeadModel(config).to(_torch_dtype(dtype))

    return _build_and_save(out_dir, tokenizer_dir, seed, make)
