"""Vocabulary vs embeddings: a tokenizer with more tokens than the base has embedding rows gives ids the model
cannot look up (an index error on CPU, out-of-bounds reads on a GPU) the first time a prompt contains one of
them. Common after a fine-tune added special tokens and saved the tokenizer, but not the resized embeddings.

A base with *more* rows than the tokenizer has tokens is normal (vocabularies are padded to a multiple of 64 or
128) and not reported. Static: the token count comes from ``tokenizer.json`` as JSON (no tokenizers import)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Severity

if TYPE_CHECKING:
    from lora_lock.compat.base import BaseView

#: Where transformers models keep the input embedding (the checkpoint's name ends with one of these).
_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight", "shared.weight")


def embedding_rows(base: BaseView) -> int | None:
    """Rows of the base's input embedding, from the checkpoint header (else ``vocab_size`` of its config)."""
    for name, info in sorted(base.checkpoint.tensors.items()):
        if name.endswith(_EMBEDDINGS) and len(info.shape) == 2:
            return int(info.shape[0])
    return base.facts.vocab_size


def tokenizer_size(root: Path, names: Iterable[str]) -> int | None:
    """1 + the highest token id of ``tokenizer.json`` (vocabulary and added tokens); None without that file or
    when it holds no readable vocabulary (other checks say what is wrong with it)."""
    if "tokenizer.json" not in set(names):
        return None
    from lora_lock.inspect.checkpoint import read_json

    try:
        doc = read_json(root / "tokenizer.json", "tokenizer")
    except InputError:
        return None
    ids: list[int] = []
    vocab: Any = doc.get("model", {}).get("vocab") if isinstance(doc.get("model"), dict) else None
    if isinstance(vocab, dict):
        ids += [v for v in vocab.values() if isinstance(v, int) and not isinstance(v, bool)]
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...], ids are positions
        ids.append(len(vocab) - 1)
    added = doc.get("added_tokens")
    if isinstance(added, list):
        ids += [t["id"] for t in added if isinstance(t, dict) and isinstance(t.get("id"), int)]
    return max(ids) + 1 if ids else None


def vocab_finding(tokens: int | None, rows: int | None, where: str) -> list[Finding]:
    """``COMPAT-VOCAB`` when the tokenizer at ``where`` has ids past the base's embedding rows."""
    if tokens is None or rows is None or tokens <= rows:
        return []
    return [
        Finding(
            "COMPAT-VOCAB",
            Category.COMPAT,
            Severity.WARNING,
            f"the tokenizer in {where} has {tokens} tokens, but the base's embedding has {rows} rows: ids "
            f"{rows}–{tokens - 1} ({tokens - rows} tokens, usually added ones) have no embedding, so a prompt "
            "containing one fails (index out of range) or reads out of bounds on a GPU",
            subject="vocab-size",
            expected=f"≤ {rows} tokens",
            actual=f"{tokens} tokens",
            hint="resize the base's embeddings to the tokenizer (resize_token_embeddings) and save them with the "
            "adapter (modules_to_save or save_embedding_layers), or use the tokenizer the base was trained with",
        )
    ]


def check_findings(adapter_root: Path, adapter_files: Iterable[str], base: BaseView) -> list[Finding]:
    """``check``: the base's own tokenizer and one shipped with the adapter, against the base's embedding."""
    rows = embedding_rows(base)
    out = vocab_finding(tokenizer_size(base.source.path, base.source.files), rows, "the base")
    out += vocab_finding(tokenizer_size(adapter_root, adapter_files), rows, "the adapter")
    return out
