"""Probe prompts: the built-in default set and the user's ``--probe-prompts FILE`` (no torch here)."""

from __future__ import annotations

import json
from pathlib import Path

from lora_lock.errors import InputError
from lora_lock.hashing import sha256_bytes

#: The default probe set. Short, varied (instruction, code, facts, multilingual, chat-like) so that an adapter
#: trained on almost anything moves at least some of them. Never edit in place: the lock records their digest.
DEFAULT_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Question: What is 17 + 25?\nAnswer:",
    "Once upon a time, in a small village,",
    "Translate to German: The weather is nice today.\n",
    "User: Summarize the benefits of exercise in one sentence.\nAssistant:",
    "SELECT name, COUNT(*) FROM orders",
    "Les modèles de langage sont",
)


def read_prompts(path: Path) -> tuple[str, ...]:
    """Prompts from a ``.jsonl`` file (objects with a ``prompt`` string) or a text file (one prompt per line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the probe prompts: {exc}") from exc
    prompts: list[str] = []
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise InputError(f"{path}:{number}: not valid JSON") from exc
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                raise InputError(f"{path}:{number}: field `prompt` must be a string")
            prompts.append(item["prompt"])
    else:
        # Lines end at "\n" only (as in the JSONL readers): str.splitlines would also split on U+2028, form feeds…
        prompts = [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
    if not prompts:
        raise InputError(f"{path}: no probe prompts in the file", hint="one prompt per line, or JSONL with `prompt`")
    return tuple(prompts)


def prompts_digest(prompts: tuple[str, ...]) -> str:
    """The ``sha256:`` digest of the prompt list as JSON: the lock ties the fingerprints to the prompts used."""
    return sha256_bytes(json.dumps(list(prompts), ensure_ascii=False).encode("utf-8"))
