"""Tokenizer identity: file digests and a behavioural fingerprint, with the ``tokenizers`` library (no torch).

Files can be reformatted without changing behaviour, and behaviour can change with byte-identical files (a newer
``tokenizers`` release). So the lock keeps both: the digests of the files and the hash of the token ids of a
fixed multilingual canary text. Token ids and text are never printed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError, library_failure
from lora_lock.hashing import prefixed
from lora_lock.inspect.checkpoint import read_json

#: The files transformers reads to build a tokenizer (and the generation defaults that go with it).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)

CANARY_VERSION = 1
#: Version 1 of the canary: scripts, digits, whitespace runs, code, emoji and a chat-like turn. Never change it;
#: add a new version instead (the lock records which one it used).
CANARY = (
    "The quick brown fox jumps over the lazy dog. 1234567890 3.14159 -42\n"
    "\tdef main(x: int) -> int:  return x ** 2  # comment\n"
    "Großes Café in Zürich — naïve façade. ¿Qué tal? Ça va !\n"
    "Привет, мир! Быстрая коричневая лиса.\n"
    "日本語のテキストと漢字、カタカナ。中文句子：你好，世界！\n"
    "한국어 문장입니다. हिन्दी वाक्य। العربية جملة. עברית משפט.\n"
    "Emoji 🦊🚀👩‍💻 and symbols ∑ ∫ √ ≠ ≤ ≥ → ←  multiple   spaces\n"
    "<|user|> What is LoRA? <|assistant|> A low-rank adapter.\n"
)
FINGERPRINT_SCHEME = (
    f"canary v{CANARY_VERSION}; tokenizers Tokenizer.encode(add_special_tokens=True); sha256 of the token ids "
    "joined by ','"
)

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


@dataclass(frozen=True)
class TokenizerFacts:
    files: tuple[str, ...]
    vocab_size: int | None
    special_tokens: dict[str, int]
    chat_template: str | None  # digest
    fingerprint: str | None  # digest
    fingerprint_tokens: int | None


def tokenizer_files(root: Path) -> tuple[str, ...]:
    # ``is_symlink`` keeps broken links and loops in the list, so they are refused loudly, not dropped silently.
    return tuple(name for name in TOKENIZER_FILES if (root / name).is_file() or (root / name).is_symlink())


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def read_tokenizer_facts(root: Path) -> TokenizerFacts | None:
    """Facts of the tokenizer in ``root``; ``None`` when it holds no tokenizer files at all."""
    files = tokenizer_files(root)
    if not any(f != "generation_config.json" for f in files):
        return None
    config: dict[str, Any] = {}
    if "tokenizer_config.json" in files:
        config = read_json(root / "tokenizer_config.json")
    template = config.get("chat_template")
    if "chat_template.jinja" in files:
        jinja = root / "chat_template.jinja"
        try:
            template = jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"{jinja}: cannot read the chat template as UTF-8 text ({exc.__class__.__name__})"
            ) from exc
    chat = None
    if isinstance(template, str):
        chat = prefixed(hashlib.sha256(template.encode("utf-8", "surrogatepass")).hexdigest())
    elif template is not None:  # a list of named templates: digest its canonical JSON
        try:
            canonical = json.dumps(template, sort_keys=True, ensure_ascii=False)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InputError(f"{root / 'tokenizer_config.json'}: field `chat_template` cannot be read") from exc
        chat = prefixed(hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest())

    vocab_size = fingerprint = count = None
    special: dict[str, int] = {}
    if "tokenizer.json" in files:
        from tokenizers import Tokenizer

        path = root / "tokenizer.json"
        try:
            tok = Tokenizer.from_file(str(path))
            vocab_size = tok.get_vocab_size(with_added_tokens=True)
            ids = tok.encode(CANARY, add_special_tokens=True).ids
        except BaseException as exc:  # bare ``Exception`` for a malformed file, a pyo3 panic for a runaway regex
            if not library_failure(exc):
                raise
            raise InputError(f"{path}: the tokenizers library cannot load or run it ({str(exc)[:300]})") from exc
        fingerprint = prefixed(hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest())
        count = len(ids)
        for key in _SPECIAL_KEYS:
            text = _token_text(config.get(key))
            if text is not None:
                try:
                    token_id = tok.token_to_id(text)
                except UnicodeEncodeError as exc:
                    raise InputError(
                        f"{root / 'tokenizer_config.json'}: field `{key}` is not valid Unicode text"
                    ) from exc
                if token_id is not None:
                    special[key] = token_id
    return TokenizerFacts(
        files=files,
        vocab_size=vocab_size,
        special_tokens=dict(sorted(special.items())),
        chat_template=chat,
        fingerprint=fingerprint,
        fingerprint_tokens=count,
    )
