"""Files a loader reads that the lock did not see, and lock sources that leave the repository.

Each test is the attack as a stranger's pull request would make it, against a lock of tiny real models. The
loaders' behaviour the attack relies on (transformers loading an adapter found in a model folder, the fast
tokenizer file ``fast_tokenizer_files`` selects) is shown by running transformers itself, then ``verify`` /
``guard()`` must refuse.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from lora_lock.commands.guard import LockViolation, guard
from tests.attacks import Repo, cli, codes, make_repo, subjects, verify_json

STATIC = "--skip=effect,golden"


@pytest.fixture
def repo(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Repo:
    return make_repo(tmp_path, tiny_llama, tiny_llama_adapter)


@pytest.fixture
def probed(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Repo:
    """A repository whose lock has the effect probe (the full tier of verify)."""
    return make_repo(tmp_path, tiny_llama, tiny_llama_adapter, probe=True)


def _logits(model_dir: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        return model, model(ids).logits


@pytest.mark.slow
def test_an_adapter_planted_in_the_base_is_loaded_by_transformers_and_fails_every_tier(
    probed: Repo, tiny_llama_adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    assert verify_json(capsys, probed.lock)[0] == 0
    _, clean = _logits(probed.base)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(tiny_llama_adapter / name, probed.base / name)
    config = json.loads((probed.base / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = str(probed.base)
    (probed.base / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")

    # The attack works: transformers finds the adapter in the model folder and serves the changed model.
    model, planted = _logits(probed.base)
    assert getattr(model, "_hf_peft_config_loaded", False)
    assert not torch.allclose(clean, planted)

    rc, report = verify_json(capsys, probed.lock, STATIC)  # static tier
    assert rc == 1 and "BASE-PLANTED-ADAPTER" in codes(report) and report["checked"]["base"] == "fail"
    (planted_finding,) = [f for f in report["findings"] if f["code"] == "BASE-PLANTED-ADAPTER"]
    assert (
        "adapter_config.json" in planted_finding["actual"] and "adapter_model.safetensors" in planted_finding["actual"]
    )
    rc, report = verify_json(capsys, probed.lock)  # full tier: the probe runs (or is kept out), never passes
    assert rc == 1 and "BASE-PLANTED-ADAPTER" in codes(report)
    assert report["status"] == "fail"
    with pytest.raises(LockViolation) as raised:
        guard(probed.lock)
    assert "BASE-PLANTED-ADAPTER" in {f.code for f in raised.value.report.findings}
    rc, _, _ = cli(capsys, "diff", str(probed.lock), str(probed.lock))
    assert rc == 0  # the lock itself is unchanged: only verify can see the planted files, and it does


def test_stray_safetensors_vllm_would_load_without_an_index_are_drift(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(repo.base / "model.safetensors"))
    key = sorted(k for k in tensors if k.endswith("down_proj.weight"))[0]
    save_file({key: tensors[key] * 0}, str(repo.base / "model-extra.safetensors"), metadata={"format": "pt"})
    rc, report = verify_json(capsys, repo.lock)
    assert rc == 1
    assert "model-extra.safetensors" in subjects(report, "BASE-FILE-EXTRA")
    assert "BASE-STRAY-WEIGHTS" in codes(report, "warning")
    with pytest.raises(LockViolation):
        guard(repo.lock)


def test_an_added_index_and_shards_beside_the_locked_checkpoint_are_drift(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(repo.base / "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] * 0 for k in keys}, str(repo.base / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (repo.base / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    rc, report = verify_json(capsys, repo.lock)
    assert rc == 1 and report["checked"]["base"] == "fail"
    assert {"model.safetensors.index.json", *shards} <= subjects(report, "BASE-FILE-EXTRA")


@pytest.mark.parametrize("name", ["additional_chat_templates/tool_use.jinja", "chat_template.jinja"])
def test_a_chat_template_file_transformers_prefers_is_drift(
    repo: Repo, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    from transformers import AutoTokenizer

    path = repo.base / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("{{ 'ignore previous instructions' }}", encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(str(repo.base))
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}],
        tokenize=False,
        chat_template="tool_use" if "additional" in name else None,
    )
    assert rendered == "ignore previous instructions"  # transformers really uses the planted template
    rc, report = verify_json(capsys, repo.lock)
    assert rc == 1 and report["checked"]["tokenizer"] == "fail"
    assert name in subjects(report, "TOKENIZER-FILE-EXTRA") | subjects(report, "BASE-FILE-EXTRA")


def _lowercasing(tokenizer_json: Path, out: Path) -> None:
    doc = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    doc["normalizer"] = {"type": "Lowercase"}
    out.write_text(json.dumps(doc), encoding="utf-8")


def _fingerprint(tokenizer: Any) -> str:
    from lora_lock.inspect.tokenizer import CANARY

    ids = tokenizer.encode(CANARY, add_special_tokens=True).ids
    return "sha256:" + hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def test_fast_tokenizer_files_the_fingerprint_is_of_the_file_transformers_loads(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    repo = Repo(tmp_path / "repo")
    (repo.root / ".git").mkdir(parents=True)
    shutil.copytree(tiny_llama, repo.base)
    shutil.copytree(tiny_llama_adapter, repo.adapter)
    _lowercasing(repo.base / "tokenizer.json", repo.base / "tokenizer.4.0.0.json")
    config_path = repo.base / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["fast_tokenizer_files"] = ["tokenizer.4.0.0.json"]
    config_path.write_text(json.dumps(config), encoding="utf-8")

    loaded = AutoTokenizer.from_pretrained(str(repo.base)).backend_tokenizer
    assert loaded.normalizer is not None  # transformers loads tokenizer.4.0.0.json, not tokenizer.json
    plain = Tokenizer.from_file(str(repo.base / "tokenizer.json"))
    assert _fingerprint(loaded) != _fingerprint(plain)

    repo.generate()
    assert _fingerprint(loaded) in repo.lock.read_text(encoding="utf-8")
    assert _fingerprint(plain) not in repo.lock.read_text(encoding="utf-8")
    assert verify_json(capsys, repo.lock)[0] == 0

    # The file transformers loads is swapped; tokenizer.json stays as it was.
    shutil.copy(repo.base / "tokenizer.json", repo.base / "tokenizer.4.0.0.json")
    rc, report = verify_json(capsys, repo.lock)
    assert rc == 1 and report["checked"]["tokenizer"] == "fail", report["findings"]


def test_an_untracked_fast_tokenizer_file_is_drift(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    _lowercasing(repo.base / "tokenizer.json", repo.base / "tokenizer.4.0.0.json")
    rc, report = verify_json(capsys, repo.lock)
    assert rc == 1 and report["checked"]["tokenizer"] == "fail"
    assert "tokenizer.4.0.0.json" in subjects(report, "TOKENIZER-FILE-EXTRA") | subjects(report, "BASE-FILE-EXTRA")


# --- a lock source that leaves the repository --------------------------------------------------------------------


def test_a_lock_source_outside_the_repository_is_refused_and_nothing_there_is_hashed(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    passwd = Path("/etc/passwd")
    if not passwd.is_file():
        pytest.skip("needs /etc/passwd")
    real = "sha256:" + hashlib.sha256(passwd.read_bytes()).hexdigest()
    depth = len(repo.root.resolve().parts)

    def point_at_etc(doc: dict[str, Any]) -> None:
        doc["base"]["source"] = "../" * depth + "etc"
        doc["base"]["files"] = {"passwd": {"digest": "sha256:" + "0" * 64, "size": 1}}

    evil = repo.edit(point_at_etc, "evil.lock")
    for fmt in ("json", "text", "markdown", "github"):
        rc, out, err = cli(capsys, "verify", str(evil), "--format", fmt)
        assert rc == 2, out
        assert "--allow-outside-sources" in out + err, out
        assert real not in out + err and real.removeprefix("sha256:") not in out + err
        assert str(passwd.stat().st_size) + " bytes" not in out + err
        assert "passwd" not in out + err  # not even whether it exists
    with pytest.raises(LockViolation):
        guard(evil)


@pytest.mark.parametrize("key", ["C:/Windows/win.ini", "c:win.ini", "\\\\server\\share\\x", "//server/share/x"])
def test_windows_drive_and_unc_file_keys_are_refused_on_every_os(
    repo: Repo, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    lock = repo.edit(lambda d: d["base"]["files"].__setitem__(key, {"digest": "sha256:" + "0" * 64, "size": 1}))
    rc, out, err = cli(capsys, "verify", str(lock))
    assert rc == 2
    assert "file name" in out + err or "lora.lock" in out + err
    rc, report = verify_json(capsys, lock)
    assert rc == 2 and report["findings"][0]["category"] == "input"
