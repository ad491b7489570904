"""Tokenizer identity: file digests and a behavioural fingerprint, with the ``tokenizers`` library (no torch).

Files can be reformatted without changing behaviour, and behaviour can change with byte-identical files (a newer
``tokenizers`` release). So the lock keeps both: the digests of the files and the hash of the token ids of a
fixed multilingual canary text. Token ids and text are never printed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_lock.errors import InputError, library_failure
from lora_lock.hashing import sha256_bytes
from lora_lock.inspect.checkpoint import read_json
from lora_lock.sources.fence import check_name, read_text
from lora_lock.text import brief

if TYPE_CHECKING:
    from tokenizers import Tokenizer

FULL_TOKENIZER_FILE = "tokenizer.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"
#: The transformers release whose loading rules are modelled here; used when the lock records none.
MODELLED_TRANSFORMERS = "5.23.0"
_VERSIONED = re.compile(r"^tokenizer\..+\.json$")
_NAMED_TEMPLATE = re.compile(r"^additional_chat_templates/[^/]+\.jinja$")

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
    """What the lock records of a tokenizer: its files, vocabulary size, special-token ids, and digests of the
    chat template and of the canary text's token ids (the fingerprint), with the file that produced them."""

    files: tuple[str, ...]
    vocab_size: int | None
    special_tokens: dict[str, int]
    chat_template: str | None  # digest
    fingerprint: str | None  # digest
    fingerprint_tokens: int | None
    fingerprint_file: str = FULL_TOKENIZER_FILE  # the fast tokenizer file transformers loads


def tokenizer_files(names: Iterable[str]) -> tuple[str, ...]:
    """The names among a source's file set that transformers may read for the tokenizer: the fixed names,
    versioned fast tokenizers (``tokenizer.<version>.json``, chosen by ``fast_tokenizer_files``) and the named
    chat templates of ``additional_chat_templates/``."""
    return tuple(sorted(n for n in names if n in TOKENIZER_FILES or _VERSIONED.match(n) or _NAMED_TEMPLATE.match(n)))


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _version_key(text: str) -> tuple[int, ...] | None:
    return tuple(int(p) for p in text.split(".")) if re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6}){0,5}", text) else None


def fast_tokenizer_file(config: dict[str, Any], where: Path, transformers_version: str | None) -> str:
    """The fast tokenizer file transformers loads (``get_fast_tokenizer_file``): among ``fast_tokenizer_files``,
    the last of the string-sorted ``tokenizer.<version>.json`` before the first version newer than transformers;
    ``tokenizer.json`` when there is none."""
    listed = config.get("fast_tokenizer_files")
    if listed is None:
        return FULL_TOKENIZER_FILE
    if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed) or len(listed) > 256:
        raise InputError(f"{where}: field `fast_tokenizer_files` must be a short list of file names")
    current = _version_key(transformers_version or MODELLED_TRANSFORMERS) or (0,)
    by_version: dict[str, str] = {}
    for name in listed:
        found = re.search(r"tokenizer\.(.*)\.json", name)
        if found is not None:
            by_version[found.group(1)] = name
    chosen = FULL_TOKENIZER_FILE
    for version in sorted(by_version):
        key = _version_key(version)
        if key is None:
            raise InputError(
                f"{where}: field `fast_tokenizer_files` names {brief(by_version[version])}, whose version "
                f"{brief(version)} is not a plain release number",
                hint="lora-lock cannot tell which tokenizer file transformers would load; remove the entry",
            )
        if key > current:
            break
        chosen = by_version[version]
    check_name(chosen, f"{where}: field `fast_tokenizer_files`")
    return chosen


def _digest_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8", "surrogatepass"))


def chat_template_digest(root: Path, names: Iterable[str], config: dict[str, Any]) -> str | None:
    """The digest of the chat template(s) transformers uses: ``chat_template.jinja`` and the named templates of
    ``additional_chat_templates/`` take priority over ``chat_template`` in tokenizer_config.json; one default
    template is a string, several are a name → template mapping."""
    names = set(names)
    templates: dict[str, str] = {}
    if CHAT_TEMPLATE_FILE in names:
        templates["default"] = read_text(root / CHAT_TEMPLATE_FILE, "template")
    for name in sorted(n for n in names if _NAMED_TEMPLATE.match(n)):
        templates[name.removeprefix(f"{CHAT_TEMPLATE_DIR}/").removesuffix(".jinja")] = read_text(
            root / name, "template"
        )
    template: Any = config.get("chat_template")
    if len(templates) == 1 and "default" in templates:
        template = templates["default"]
    elif templates:
        template = templates
    if isinstance(template, str):
        return _digest_text(template)
    if template is None:
        return None
    try:  # a list (or mapping) of named templates: digest its canonical JSON
        canonical = json.dumps(template, sort_keys=True, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InputError(f"{root / 'tokenizer_config.json'}: field `chat_template` cannot be read") from exc
    return _digest_text(canonical)


def read_tokenizer_facts(
    root: Path, names: Iterable[str] | None = None, transformers_version: str | None = None
) -> TokenizerFacts | None:
    """Facts of the tokenizer in ``root`` as transformers loads it; ``None`` when it holds no tokenizer files at
    all. ``names``: the directory's file set, already through the fence (default: listed here, strictly)."""
    if names is None:
        from lora_lock.sources.fence import resolve_fence
        from lora_lock.sources.fileset import list_local

        names = list_local(root, fence=resolve_fence(root), allow_symlinks=False)
    names = tuple(names)
    files = tokenizer_files(names)
    if not any(f != "generation_config.json" for f in files):
        return None
    config: dict[str, Any] = {}
    if "tokenizer_config.json" in files:
        config = read_json(root / "tokenizer_config.json", "tokenizer-config")
    chat = chat_template_digest(root, files, config)
    fast = fast_tokenizer_file(config, root / "tokenizer_config.json", transformers_version)
    present = fast in files or fast in set(names)
    if fast != FULL_TOKENIZER_FILE and not present:
        raise InputError(
            f"{root / 'tokenizer_config.json'}: field `fast_tokenizer_files` makes transformers load {brief(fast)}, "
            "which is not in the directory",
            hint="add the file, or remove the entry from `fast_tokenizer_files`",
        )
    run = _run_canary(root, fast, config) if present else _Canary()
    return TokenizerFacts(
        files=files,
        vocab_size=run.vocab_size,
        special_tokens=dict(sorted(run.special.items())),
        chat_template=chat,
        fingerprint=run.fingerprint,
        fingerprint_tokens=run.tokens,
        fingerprint_file=fast,
    )


@dataclass(frozen=True)
class _Canary:
    """What running the fast tokenizer tells: its vocabulary size, the digest and length of the canary's token
    ids, and the ids of the special tokens tokenizer_config.json names (all empty without a fast tokenizer)."""

    vocab_size: int | None = None
    fingerprint: str | None = None
    tokens: int | None = None
    special: dict[str, int] = field(default_factory=dict)


def _run_canary(root: Path, fast: str, config: dict[str, Any]) -> _Canary:
    """Load the fast tokenizer file ``fast`` with the ``tokenizers`` library and encode :data:`CANARY`."""
    from tokenizers import Tokenizer

    path = root / fast
    content = read_text(path, "tokenizer")
    try:
        tok = Tokenizer.from_str(content)
        vocab_size = tok.get_vocab_size(with_added_tokens=True)
        ids = tok.encode(CANARY, add_special_tokens=True).ids
    except BaseException as exc:  # bare ``Exception`` for a malformed file, a pyo3 panic for a runaway regex
        if not library_failure(exc):
            raise
        raise InputError(f"{path}: the tokenizers library cannot load or run it ({str(exc)[:300]})") from exc
    return _Canary(
        vocab_size=vocab_size,
        fingerprint=sha256_bytes(",".join(map(str, ids)).encode()),
        tokens=len(ids),
        special=_special_ids(root, tok, config),
    )


def _special_ids(root: Path, tok: Tokenizer, config: dict[str, Any]) -> dict[str, int]:
    """The ids of the special tokens tokenizer_config.json names that the vocabulary holds."""
    special: dict[str, int] = {}
    for key in _SPECIAL_KEYS:
        text = _token_text(config.get(key))
        if text is not None:
            try:
                token_id = tok.token_to_id(text)
            except UnicodeEncodeError as exc:
                raise InputError(f"{root / 'tokenizer_config.json'}: field `{key}` is not valid Unicode text") from exc
            if token_id is not None:
                special[key] = token_id
    return special
