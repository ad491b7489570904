"""``lora-lock diff OLD NEW``: what changed between two locks, in a reviewer's words."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lora_lock.commands.generate import generate
from lora_lock.lock.diff import diff
from lora_lock.lock.io import read as read_lock
from lora_lock.report.diff import diff_document
from tests.helpers import read_toml, run_cli, write_toml


def read_json(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def lock(repo: Path, output: str, *adapters: str) -> Path:
    result = generate([repo / a for a in adapters or ("adapter",)], repo / "base", repo / output, probe=False)
    assert result.lock is not None, [f.to_dict() for f in result.report.findings]
    read_lock(repo / output)  # parses and validates against the schema
    return repo / output


@pytest.fixture
def repo(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    monkeypatch.chdir(root)
    return root


def grow_vocab(base: Path, vocab: int) -> int:
    """Pad the embedding and the LM head to ``vocab`` rows (as a provider resizing for new tokens would)."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(base / "model.safetensors"))
    config = read_json(base / "config.json")
    old = int(config["vocab_size"])
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        if key in tensors:
            t = tensors[key]
            tensors[key] = np.concatenate([t, np.zeros((vocab - t.shape[0], t.shape[1]), dtype=t.dtype)])
    save_file(tensors, str(base / "model.safetensors"), metadata={"format": "pt"})
    config["vocab_size"] = vocab
    write_json(base / "config.json", config)
    return old


def shrink_rank(adapter: Path, rank: int) -> int:
    """Re-save the adapter at a lower rank (keeping the first ``rank`` components)."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    for key, t in list(tensors.items()):
        if "lora_A" in key:
            tensors[key] = np.ascontiguousarray(t[:rank])
        elif "lora_B" in key:
            tensors[key] = np.ascontiguousarray(t[:, :rank])
    save_file(tensors, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = read_json(adapter / "adapter_config.json")
    old = int(config["r"])
    config["r"] = rank
    write_json(adapter / "adapter_config.json", config)
    return old


def test_diff_of_a_lock_with_itself(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock(repo, "lora.lock")
    rc, out, _ = run_cli(capsys, "diff", "lora.lock", "lora.lock")
    assert rc == 0
    assert "identical" in out
    rc, out, _ = run_cli(capsys, "diff", "lora.lock", "lora.lock", "--format", "json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["identical"] is True and doc["changes"] == []


def test_diff_of_two_locks_of_the_same_inputs(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock(repo, "a.lock")
    lock(repo, "b.lock")
    assert run_cli(capsys, "diff", "a.lock", "b.lock")[0] == 0


def test_diff_after_base_vocab_and_adapter_rank_changed(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock(repo, "old.lock")
    old_vocab = grow_vocab(repo / "base", 1050)
    old_rank = shrink_rank(repo / "adapter", 4)
    lock(repo, "new.lock")

    rc, out, _ = run_cli(capsys, "diff", "old.lock", "new.lock")
    assert rc == 1
    assert f"vocab size {old_vocab} → 1050" in out
    assert "base file model.safetensors changed" in out
    assert "base file config.json changed" in out
    # The module table: each targeted projection's LoRA shapes follow the new rank.
    hidden = read_json(repo / "base" / "config.json")["hidden_size"]
    assert f"q_proj changed in 2 modules: lora-a {old_rank}x{hidden} → 4x{hidden}" in out
    assert f"rank {old_rank} → 4" in out
    assert f"r {old_rank} → 4" in out  # the adapter setting
    assert "adapter adapter file adapter_model.safetensors changed" in out
    # Nothing about the environment or the tokenizer: they did not change.
    assert "environment" not in out and "tokenizer" not in out
    # Sections are grouped by category, in report order.
    headings = [line for line in out.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings == ["base:", "adapter:", "compat:"]

    rc, out, _ = run_cli(capsys, "diff", "old.lock", "new.lock", "--format", "json")
    assert rc == 1
    doc = json.loads(out)
    assert doc["identical"] is False
    vocab = [c for c in doc["changes"] if c["category"] == "base" and c["subject"] == "vocab_size"]
    assert len(vocab) == 1 and vocab[0]["old"] == old_vocab and vocab[0]["new"] == 1050
    modules = [c for c in doc["changes"] if c["category"] == "compat"]
    assert {c["subject"].rpartition(".")[2] for c in modules} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert all(c["old"]["rank"] == old_rank and c["new"]["rank"] == 4 for c in modules)
    # The API gives the same object.
    assert diff_document(diff(repo / "old.lock", repo / "new.lock")) == doc


def test_diff_names_environment_and_tokenizer_changes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock(repo, "old.lock")
    config = read_json(repo / "base" / "tokenizer_config.json")
    config["chat_template"] = "{{ messages }}"
    write_json(repo / "base" / "tokenizer_config.json", config)
    new = lock(repo, "new.lock")
    doc = read_toml(new)
    doc["environment"]["versions"]["transformers"] = "0.0.1"
    write_toml(new, doc)
    rc, out, _ = run_cli(capsys, "diff", "old.lock", "new.lock")
    assert rc == 1
    assert "tokenizer file tokenizer_config.json changed" in out
    assert "chat-template" in out
    old_version = read_toml(repo / "old.lock")["environment"]["versions"]
    assert f"transformers {old_version['transformers']} → 0.0.1" in out


def test_diff_of_added_and_removed_adapters(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock(repo, "one.lock")
    shutil.copytree(repo / "adapter", repo / "second")
    lock(repo, "two.lock", "adapter", "second")
    rc, out, _ = run_cli(capsys, "diff", "one.lock", "two.lock")
    assert rc == 1
    assert "adapter second added" in out
    rc, out, _ = run_cli(capsys, "diff", "two.lock", "one.lock")
    assert rc == 1
    assert "adapter second removed" in out


def rank_pattern(adapter: Path, rank: int) -> None:
    """Layer 0's q_proj at ``rank`` (``rank_pattern``), every other module at the config's r."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    for key, t in list(tensors.items()):
        if ".layers.0.self_attn.q_proj.lora_A" in key:
            tensors[key] = np.ascontiguousarray(t[:rank])
        elif ".layers.0.self_attn.q_proj.lora_B" in key:
            tensors[key] = np.ascontiguousarray(t[:, :rank])
    save_file(tensors, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = read_json(adapter / "adapter_config.json")
    config["rank_pattern"] = {"model.layers.0.self_attn.q_proj": rank}
    write_json(adapter / "adapter_config.json", config)


def test_rows_sharing_a_pattern_are_all_compared(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With rank_pattern, q_proj has two rows (layer 0 at rank 4, layer 1 at r): a change of layer 0's rank shows
    in `diff` and in verify's COMPAT-MODULES, not only as changed files."""
    original = repo / "original"
    shutil.copytree(repo / "adapter", original)
    rank_pattern(repo / "adapter", 4)
    lock(repo, "v4.lock")
    rows = [r for r in read_lock(repo / "v4.lock")["adapter"][0]["modules"] if r["pattern"].endswith("q_proj")]
    assert sorted(r["rank"] for r in rows) == [4, 8]
    shutil.rmtree(repo / "adapter")
    shutil.copytree(original, repo / "adapter")
    rank_pattern(repo / "adapter", 2)
    lock(repo, "v2.lock")

    changes = [c for c in diff(repo / "v4.lock", repo / "v2.lock").changes if c.category.value == "compat"]
    assert len(changes) == 1 and "rank 4" in changes[0].message and "rank 2" in changes[0].message

    rc, out, _ = run_cli(capsys, "verify", "v4.lock", "--only", "compat", "--format", "json")
    modules = [f for f in json.loads(out)["findings"] if f["code"] == "COMPAT-MODULES"]
    assert rc == 1 and len(modules) == 1
    assert "rank 4, lora_A 4x64" in modules[0]["expected"] and "rank 2, lora_A 2x64" in modules[0]["actual"]


def test_a_module_row_that_became_quantized_is_a_compat_change(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every field of a module row counts, `quantized` included (it is not in the printed shapes)."""
    locked = lock(repo, "lora.lock")
    doc = read_toml(locked)
    doc["adapter"][0]["modules"][0]["quantized"] = "bitsandbytes-int8"
    edited = repo / "edited.lock"
    write_toml(edited, doc)
    rc, out, _ = run_cli(capsys, "verify", "edited.lock", "--only", "compat", "--format", "json")
    report = json.loads(out)
    assert rc == 1 and report["checked"]["compat"] == "fail"
    (modules,) = [f for f in report["findings"] if f["code"] == "COMPAT-MODULES"]
    assert "(bitsandbytes-int8)" in modules["expected"] and "(bitsandbytes-int8)" not in modules["actual"]
    changes = [c for c in diff(locked, edited).changes if c.category.value == "compat"]
    assert len(changes) == 1 and "quantized" in changes[0].message
