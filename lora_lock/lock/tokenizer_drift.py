"""The tokenizer category of ``verify``: the locked tokenizer facts vs the tokenizer as it is now.

A missing tokenizer file is one finding (``TOKENIZER-FILE-MISSING``) and, when it is the file the facts are read
from, one ``TOKENIZER-VOCAB`` saying the facts cannot be read — not a vocabulary "changed to None", special ids
"changed to absent" and a canary that "splits differently"; the behaviour checks are then not run (the probe
would load some other tokenizer, or none, and report that instead of the missing file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lora_lock.findings import Category, Finding, Severity
from lora_lock.hashing import Digest
from lora_lock.inspect.tokenizer import FULL_TOKENIZER_FILE, read_tokenizer_facts
from lora_lock.lock.drift import REGENERATE, compare_values
from lora_lock.lock.model import Tokenizer
from lora_lock.lock.snapshot import with_tokenizer_facts
from lora_lock.lock.values import FileSet


def _text(digest: Digest | None) -> str | None:
    """A locked digest as the world's facts spell it (None when the lock has none)."""
    return None if digest is None else str(digest)


def facts_unreadable(locked: Tokenizer, now: Tokenizer) -> bool:
    """The lock has the tokenizer's facts and today's files cannot give them (the fingerprinted file is gone).
    ``now``: the section as observed now."""
    return locked.fingerprint is not None and now.fingerprint is None


def fact_findings(tok: Tokenizer, now: Tokenizer, file_findings: Sequence[Finding]) -> list[Finding]:
    """Vocabulary, special ids, chat template and behaviour, after the file table's ``file_findings``.
    ``tok``: the locked section; ``now``: the section as observed now."""
    out = list(file_findings)
    if facts_unreadable(tok, now):
        name = tok.fingerprint_file if tok.fingerprint_file is not None else FULL_TOKENIZER_FILE
        out.append(
            Finding(
                "TOKENIZER-VOCAB",
                Category.TOKENIZER,
                Severity.ERROR,
                f"the tokenizer's vocabulary cannot be read: {name}, the file transformers loads it from, is "
                f"missing (locked: {tok.vocab_size} tokens); its special ids and behaviour are not "
                "compared either",
                subject="vocab-size",
                expected=str(tok.vocab_size),
                actual=f"{name} missing",
                hint=f"restore {name}; " + REGENERATE,
            )
        )
        return out
    old_vocab, new_vocab = tok.vocab_size, now.vocab_size
    if old_vocab != new_vocab:
        grew = isinstance(old_vocab, int) and isinstance(new_vocab, int) and new_vocab > old_vocab
        out.append(
            Finding(
                "TOKENIZER-VOCAB",
                Category.TOKENIZER,
                Severity.ERROR,
                f"vocabulary size changed: {old_vocab} → {new_vocab}",
                subject="vocab-size",
                expected=str(old_vocab),
                actual=str(new_vocab),
                hint=(
                    f"the vocabulary grew by {new_vocab - old_vocab} tokens: if they were appended (the canary "
                    "still tokenizes the same), the existing ids keep their meaning, but the adapter never saw "
                    "the new ones and the base needs an embedding row for each (resize the embeddings and save "
                    "them with the adapter, or drop the added tokens); " + REGENERATE
                )
                if grew and isinstance(old_vocab, int) and isinstance(new_vocab, int)
                else "the adapter was trained with another tokenizer; token ids no longer mean the same",
            )
        )
    out += compare_values(
        "TOKENIZER-SPECIAL",
        Category.TOKENIZER,
        "special token id",
        tok.special_tokens or {},
        now.special_tokens or {},
    )
    if tok.chat_template != now.chat_template:
        out.append(
            Finding(
                "TOKENIZER-CHAT-TEMPLATE",
                Category.TOKENIZER,
                Severity.ERROR,
                "the chat template changed",
                subject="chat-template",
                expected=str(_text(tok.chat_template)),
                actual=str(_text(now.chat_template)),
                hint="prompts are now formatted differently from training; " + REGENERATE,
            )
        )
    if tok.fingerprint != now.fingerprint:
        files_same = not any(f.code.endswith(("-CHANGED", "-MISSING", "-EXTRA")) for f in out)
        out.append(
            Finding(
                "TOKENIZER-BEHAVIOUR",
                Category.TOKENIZER,
                Severity.ERROR,
                f"the tokenizer splits the canary text differently ({tok.fingerprint_tokens} → "
                f"{now.fingerprint_tokens} tokens)",
                subject="fingerprint",
                expected=str(_text(tok.fingerprint)),
                actual=str(_text(now.fingerprint)),
                hint="the files are unchanged, so the tokenizers library changed behaviour"
                if files_same
                else "the tokenizer was replaced or edited; " + REGENERATE,
            )
        )
    return out


def standalone_findings(
    locked: Tokenizer,
    root: Path,
    names: Sequence[str],
    file_findings: Sequence[Finding],
    version: str | None,
) -> list[Finding] | None:
    """The tokenizer category on its own, when reading the rest of the world failed (a base shard is missing):
    its facts come from its own files. None when they cannot be read either (the category stays unchecked)."""
    from lora_lock.errors import InputError

    try:
        facts = read_tokenizer_facts(root, names, version)
    except InputError:
        return None
    return fact_findings(locked, with_tokenizer_facts(Tokenizer(files=FileSet()), facts), file_findings)
