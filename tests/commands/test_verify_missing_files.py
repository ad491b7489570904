"""A missing file is reported as what it is: a missing base shard leaves the tokenizer and adapter checked (their
files are intact), and a deleted ``tokenizer.json`` is one clear finding, with the behaviour checks not run,
rather than a vocabulary "changed to None" and a probe failure blamed on the prompts or on compat."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from lora_lock._cli import main
from lora_lock.commands.generate import generate


def _shard(base: Path) -> None:
    """Split ``model.safetensors`` into two shards with an index, as ``save_pretrained`` does for large models."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(base / "model.safetensors"))
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2]}
    halves["model-00002-of-00002.safetensors"] = names[len(names) // 2 :]
    weight_map = {}
    for shard, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, str(base / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, shard))
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
    (base / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    (base / "model.safetensors").unlink()


@pytest.fixture
def project(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    return root


def _verify(capsys: pytest.CaptureFixture[str], lock: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["verify", str(lock), "--format", "json", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    report: dict[str, Any] = json.loads(out)
    return code, report


def test_a_missing_base_shard_leaves_tokenizer_and_adapter_checked(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _shard(project / "base")
    lock = project / "lora.lock"
    assert generate([project / "adapter"], project / "base", lock, probe=False).written
    (project / "base" / "model-00002-of-00002.safetensors").unlink()
    code, report = _verify(capsys, lock)
    assert code == 1
    missing = [f for f in report["findings"] if f["code"] == "BASE-FILE-MISSING"]
    assert [f["subject"] for f in missing] == ["model-00002-of-00002.safetensors"]
    assert report["checked"]["base"] == "fail"
    assert report["checked"]["tokenizer"] == "pass"
    assert report["checked"]["adapter"] == "pass"
    # What needs the base's weights could not be checked: said as such, never "pass".
    assert report["checked"]["compat"] == "error"
    # A changed tokenizer is still found while the shard is missing.
    config = project / "base" / "tokenizer_config.json"
    doc = json.loads(config.read_text(encoding="utf-8"))
    doc["chat_template"] = "{{ messages }}"
    config.write_text(json.dumps(doc), encoding="utf-8")
    code, report = _verify(capsys, lock)
    assert report["checked"]["tokenizer"] == "fail"
    assert {"TOKENIZER-FILE-CHANGED", "TOKENIZER-CHAT-TEMPLATE"} <= {f["code"] for f in report["findings"]}


def test_a_deleted_tokenizer_json_is_one_clear_finding(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = project / "lora.lock"
    assert generate([project / "adapter"], project / "base", lock).written
    (project / "base" / "tokenizer.json").unlink()
    code, report = _verify(capsys, lock)
    assert code == 1
    messages = " ".join(f["message"] + " " + f.get("hint", "") for f in report["findings"])
    assert "None" not in messages and "tokenizes to nothing" not in messages and "empty prompts" not in messages
    codes = [f["code"] for f in report["findings"] if f["severity"] == "error"]
    assert sorted(codes) == ["TOKENIZER-FILE-MISSING", "TOKENIZER-VOCAB"], report["findings"]
    vocab = next(f for f in report["findings"] if f["code"] == "TOKENIZER-VOCAB")
    assert "tokenizer.json" in vocab["message"] and "cannot be read" in vocab["message"]
    not_run = next(f for f in report["findings"] if f["code"] == "EFFECT-NOT-RUN")
    assert "tokenizer.json is missing" in not_run["message"]
    assert report["checked"]["effect"] == "skipped"
    assert report["checked"]["compat"] == "pass"


def test_an_appended_vocabulary_gets_the_append_hint(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = project / "lora.lock"
    assert generate([project / "adapter"], project / "base", lock, probe=False).written
    from tokenizers import AddedToken, Tokenizer

    path = project / "base" / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    tok.add_tokens([AddedToken("<tool_call>", special=False), AddedToken("</tool_call>", special=False)])
    tok.save(str(path))
    code, report = _verify(capsys, lock, "--only", "tokenizer")
    assert code == 1
    vocab = next(f for f in report["findings"] if f["code"] == "TOKENIZER-VOCAB")
    assert vocab["message"] == "vocabulary size changed: 1000 → 1002"
    assert "grew by 2 tokens" in vocab["hint"] and "embedding row" in vocab["hint"]
