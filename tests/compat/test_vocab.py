"""``COMPAT-VOCAB``: a tokenizer with more tokens than the base has embedding rows, at check and generate time.

The verdict is the real stack's: transformers loads the tokenizer with the added tokens, and the model's
forward on one of their ids fails (an index past the embedding table)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest

from lora_lock.commands.check import check
from lora_lock.commands.generate import generate
from lora_lock.findings import Finding


def _add_tokens(root: Path, *tokens: str) -> None:
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    tok.add_tokens([AddedToken(t, special=False) for t in tokens])
    tok.save(str(root / "tokenizer.json"))


@pytest.fixture
def project(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    return root


def _vocab(findings: Iterable[Finding]) -> list[str]:
    return [f.message for f in findings if f.code == "COMPAT-VOCAB"]


def test_a_fitting_tokenizer_is_not_reported(project: Path) -> None:
    assert _vocab(check(project / "adapter", project / "base").findings) == []


def test_added_tokens_past_the_embedding_are_reported(project: Path) -> None:
    _add_tokens(project / "base", "<tool_call>", "</tool_call>")
    # The real stack: the tokenizer gives the new token an id past the embedding, and the forward fails on it.
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(project / "base")
    model = AutoModelForCausalLM.from_pretrained(project / "base")
    ids = tokenizer("<tool_call>", add_special_tokens=False)["input_ids"]
    assert ids and max(ids) >= model.get_input_embeddings().num_embeddings
    with pytest.raises(IndexError):
        model(torch.tensor([ids]))

    report = check(project / "adapter", project / "base")
    (message,) = _vocab(report.findings)
    assert "the tokenizer in the base has 1002 tokens, but the base's embedding has 1000 rows" in message
    assert report.status.exit_code == 0  # a warning: shapes fit, a prompt with the new tokens fails
    result = generate([project / "adapter"], project / "base", project / "lora.lock", probe=False)
    assert any("the locked tokenizer has 1002 tokens" in m for m in _vocab(result.report.findings))


def test_a_tokenizer_shipped_with_the_adapter_is_checked_too(project: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(project / "base" / name, project / "adapter" / name)
    _add_tokens(project / "adapter", "<|im_start|>", "<|im_end|>", "<|tool|>")
    (message,) = _vocab(check(project / "adapter", project / "base").findings)
    assert "the tokenizer in the adapter has 1003 tokens" in message
