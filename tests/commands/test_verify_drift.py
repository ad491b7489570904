"""``lora-lock verify`` finds each kind of drift on tiny real models: one test per category and change."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lora_lock._cli import main
from lora_lock.commands.generate import generate
from lora_lock.lock.io import read as read_lock
from lora_lock.testing.tiny import copy_tokenizer, train_bpe_tokenizer
from tests.helpers import edit_lock, read_toml

STATIC = ("base", "tokenizer", "adapter", "compat", "quantization", "environment")


# --- helpers -----------------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = read_json(path)
    change(doc)
    write_json(path, doc)


def edit_safetensors(path: Path, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
    """Rewrite a safetensors file through numpy (no torch), keeping its metadata."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(path), framework="np") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(path))
    replaced = change(tensors)
    save_file(replaced if replaced is not None else tensors, str(path), metadata=metadata)


class Repo:
    """A user repository (``base/``, ``adapter/``, ``lora.lock``) copied from the session's tiny models."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / "base"
        self.adapter = root / "adapter"
        self.lock = root / "lora.lock"

    def generate(self) -> None:
        result = generate([self.adapter], self.base, self.lock, probe=False)
        assert result.lock is not None, [f.to_dict() for f in result.report.findings]
        read_lock(self.lock)  # what was written parses and validates against the schema

    def verify(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
        rc = main(["verify", str(self.lock), "--format", "json", *args])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        report: dict[str, Any] = json.loads(out)
        assert report["status"] == {0: "pass", 1: "fail", 2: "error"}[rc]
        return rc, report


@pytest.fixture
def repo(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Repo:
    root = tmp_path / "repo"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    r = Repo(root)
    r.generate()
    return r


def codes(report: dict[str, Any], severity: str = "error") -> set[str]:
    return {f["code"] for f in report["findings"] if f["severity"] == severity}


def finding(report: dict[str, Any], code: str, subject: str | None = None) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        f for f in report["findings"] if f["code"] == code and (subject is None or f.get("subject") == subject)
    ]
    assert found, f"no {code} ({subject}) in {[(f['code'], f.get('subject')) for f in report['findings']]}"
    return found[0]


def assert_drift(
    report: dict[str, Any], code: str, category: str, subject: str | None = None, *, clean: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``code`` was found as an error of ``category``, which failed; the ``clean`` categories still pass."""
    f = finding(report, code, subject)
    assert f["category"] == category
    assert f["severity"] == "error"
    assert f["message"]
    assert f.get("hint"), f"{code} has no hint"
    assert report["checked"][category] == "fail"
    for other in clean:
        assert report["checked"][other] == "pass", (other, report["findings"])
    return f


def test_fresh_lock_verifies(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    rc, report = repo.verify(capsys)
    assert rc == 0, report["findings"]
    assert all(report["checked"][c] == "pass" for c in STATIC)


# --- base ----------------------------------------------------------------------------------------------------------


def test_base_weights_changed_same_shapes(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    """A provider update: one tensor's values change, shapes and dtypes do not."""

    def perturb(tensors: dict[str, Any]) -> None:
        key = sorted(k for k in tensors if k.endswith("q_proj.weight"))[0]
        tensors[key] = tensors[key] * 1.01

    edit_safetensors(repo.base / "model.safetensors", perturb)
    rc, report = repo.verify(capsys)
    assert rc == 1
    f = assert_drift(
        report,
        "BASE-FILE-CHANGED",
        "base",
        "model.safetensors",
        clean=("tokenizer", "adapter", "compat", "quantization"),
    )
    assert f["expected"] != f["actual"]
    assert codes(report) == {"BASE-FILE-CHANGED"}


def test_base_config_fact_changed(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    config = read_json(repo.base / "config.json")
    old_heads = config["num_attention_heads"]
    config["num_attention_heads"] = old_heads * 2
    config.setdefault("head_dim", config["hidden_size"] // old_heads)  # keep every weight shape as it is
    write_json(repo.base / "config.json", config)
    rc, report = repo.verify(capsys)
    assert rc == 1
    f = assert_drift(report, "BASE-CONFIG", "base", "num_attention_heads", clean=("tokenizer", "adapter"))
    assert f["expected"] == str(old_heads) and f["actual"] == str(old_heads * 2)
    assert_drift(report, "BASE-FILE-CHANGED", "base", "config.json")


def _shard(base: Path, names: tuple[str, ...]) -> None:
    """Split model.safetensors into the shards ``names`` (round robin by tensor) with an index."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(base / "model.safetensors"))
    (base / "model.safetensors").unlink()
    keys = sorted(tensors)
    weight_map = {}
    for i, name in enumerate(names):
        part = {k: tensors[k] for k in keys[i :: len(names)]}
        save_file(part, str(base / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    write_json(base / "model.safetensors.index.json", {"metadata": {"total_size": 0}, "weight_map": weight_map})


def test_base_extra_shard(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, capsys: Any) -> None:
    r = Repo(tmp_path / "repo")
    shutil.copytree(tiny_llama, r.base)
    shutil.copytree(tiny_llama_adapter, r.adapter)
    _shard(r.base, ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"))
    r.generate()
    assert r.verify(capsys)[0] == 0

    # The checkpoint is re-sharded upstream: one tensor moves to a new third shard named in the index.
    from safetensors.numpy import load_file, save_file

    second = r.base / "model-00002-of-00002.safetensors"
    tensors = load_file(str(second))
    moved = sorted(tensors)[0]
    save_file({moved: tensors.pop(moved)}, str(r.base / "model-extra.safetensors"), metadata={"format": "pt"})
    save_file(tensors, str(second), metadata={"format": "pt"})
    edit_json(
        r.base / "model.safetensors.index.json",
        lambda d: d["weight_map"].__setitem__(moved, "model-extra.safetensors"),
    )
    rc, report = r.verify(capsys)
    assert rc == 1
    assert_drift(report, "BASE-FILE-EXTRA", "base", "model-extra.safetensors", clean=("adapter", "compat"))
    assert_drift(report, "BASE-FILE-CHANGED", "base", "model-00002-of-00002.safetensors")
    assert_drift(report, "BASE-FILE-CHANGED", "base", "model.safetensors.index.json")


def test_single_file_checkpoint_appearing_next_to_a_sharded_one(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, capsys: Any
) -> None:
    r = Repo(tmp_path / "repo")
    shutil.copytree(tiny_llama, r.base)
    shutil.copytree(tiny_llama_adapter, r.adapter)
    original = (r.base / "model.safetensors").read_bytes()
    _shard(r.base, ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"))
    r.generate()
    # Someone drops a merged single-file checkpoint (other values, same shapes) into the base directory.
    (r.base / "model.safetensors").write_bytes(original)

    def perturb(tensors: dict[str, Any]) -> None:
        key = sorted(tensors)[0]
        tensors[key] = tensors[key] + 1.0

    edit_safetensors(r.base / "model.safetensors", perturb)
    rc, report = r.verify(capsys)
    assert rc == 1, report["findings"]
    assert report["checked"]["base"] == "fail"
    assert any(f.get("subject") == "model.safetensors" for f in report["findings"])


def test_base_extra_file(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, capsys: Any) -> None:
    """generation_config.json appears after locking (it changes generation defaults)."""
    r = Repo(tmp_path / "repo")
    shutil.copytree(tiny_llama, r.base)
    shutil.copytree(tiny_llama_adapter, r.adapter)
    kept = (r.base / "generation_config.json").read_bytes()
    (r.base / "generation_config.json").unlink()
    r.generate()
    (r.base / "generation_config.json").write_bytes(kept)
    rc, report = r.verify(capsys)
    assert rc == 1
    assert_drift(report, "BASE-FILE-EXTRA", "base", "generation_config.json", clean=("adapter", "compat"))


def test_base_file_missing(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    (repo.base / "generation_config.json").unlink()
    rc, report = repo.verify(capsys)
    assert rc == 1
    f = assert_drift(report, "BASE-FILE-MISSING", "base", "generation_config.json", clean=("adapter", "compat"))
    assert f["actual"] == "missing"


def test_base_weights_missing_is_drift_even_though_the_base_is_unusable(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo.base / "model.safetensors").unlink()
    rc, report = repo.verify(capsys)
    assert rc == 1  # drift wins over the unusable base
    assert_drift(report, "BASE-FILE-MISSING", "base", "model.safetensors")
    assert "INPUT-UNUSABLE" in codes(report)
    assert report["status"] == "fail"


# --- tokenizer -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another BPE tokenizer: the same recipe with a smaller vocabulary."""
    return train_bpe_tokenizer(tmp_path_factory.mktemp("other-tokenizer"), vocab_size=500)


def test_tokenizer_swapped(repo: Repo, other_tokenizer: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy_tokenizer(other_tokenizer, repo.base)
    rc, report = repo.verify(capsys)
    assert rc == 1
    locked = read_toml(repo.lock)["tokenizer"]["vocab-size"]
    f = assert_drift(report, "TOKENIZER-VOCAB", "tokenizer", clean=("base", "adapter"))
    assert f["expected"] == str(locked) and f["actual"] != str(locked)
    assert_drift(report, "TOKENIZER-FILE-CHANGED", "tokenizer", "tokenizer.json")
    behaviour = assert_drift(report, "TOKENIZER-BEHAVIOUR", "tokenizer")
    assert "replaced or edited" in behaviour["hint"]


def test_chat_template_edited(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["chat_template"] = config["chat_template"].replace("<|end|>", "\n")

    edit_json(repo.base / "tokenizer_config.json", edit)
    rc, report = repo.verify(capsys)
    assert rc == 1
    assert_drift(report, "TOKENIZER-CHAT-TEMPLATE", "tokenizer", clean=("base", "adapter", "compat"))
    assert_drift(report, "TOKENIZER-FILE-CHANGED", "tokenizer", "tokenizer_config.json")
    # Only the template changed: the tokenizer still splits text the same way.
    assert "TOKENIZER-BEHAVIOUR" not in codes(report)
    assert "TOKENIZER-VOCAB" not in codes(report)


def test_special_token_changed(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    """Same vocabulary, but generation now stops at another token."""
    edit_json(repo.base / "tokenizer_config.json", lambda c: c.__setitem__("eos_token", "<|end|>"))
    rc, report = repo.verify(capsys)
    assert rc == 1
    assert_drift(report, "TOKENIZER-SPECIAL", "tokenizer", "eos_token", clean=("base", "adapter", "compat"))
    assert "TOKENIZER-VOCAB" not in codes(report)


def test_chat_template_moved_to_jinja_file_with_other_text(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    """transformers 5 layout: chat_template.jinja overrides the template in tokenizer_config.json."""
    template = read_json(repo.base / "tokenizer_config.json")["chat_template"]
    (repo.base / "chat_template.jinja").write_text(template + "{# v2 #}", encoding="utf-8")
    rc, report = repo.verify(capsys)
    assert rc == 1
    assert_drift(report, "TOKENIZER-CHAT-TEMPLATE", "tokenizer")
    assert_drift(report, "TOKENIZER-FILE-EXTRA", "tokenizer", "chat_template.jinja")


# --- adapter -------------------------------------------------------------------------------------------------------


def test_adapter_weights_changed(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    def perturb(tensors: dict[str, Any]) -> None:
        key = sorted(k for k in tensors if "lora_B" in k)[0]
        tensors[key] = tensors[key] + 0.25

    edit_safetensors(repo.adapter / "adapter_model.safetensors", perturb)
    rc, report = repo.verify(capsys)
    assert rc == 1
    f = assert_drift(
        report,
        "ADAPTER-FILE-CHANGED",
        "adapter",
        "adapter_model.safetensors",
        clean=("base", "tokenizer", "compat", "quantization"),
    )
    assert "adapter" in f["message"]
    assert codes(report) == {"ADAPTER-FILE-CHANGED"}


def test_adapter_alpha_changed(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    old = read_json(repo.adapter / "adapter_config.json")["lora_alpha"]
    edit_json(repo.adapter / "adapter_config.json", lambda c: c.__setitem__("lora_alpha", old * 2))
    rc, report = repo.verify(capsys)
    assert rc == 1
    f = assert_drift(report, "ADAPTER-SETTINGS", "adapter", "lora_alpha", clean=("base", "tokenizer", "compat"))
    assert f["expected"] == str(old) and f["actual"] == str(old * 2)
    assert_drift(report, "ADAPTER-FILE-CHANGED", "adapter", "adapter_config.json")


def test_adapter_target_modules_renamed(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    """The adapter's modules no longer exist in the base: PEFT would load it and silently do nothing."""

    def rename(tensors: dict[str, Any]) -> dict[str, Any]:
        return {k.replace(".self_attn.", ".attention.").replace(".mlp.", ".ffn."): v for k, v in tensors.items()}

    edit_safetensors(repo.adapter / "adapter_model.safetensors", rename)
    rc, report = repo.verify(capsys)
    assert rc == 1
    f = assert_drift(report, "COMPAT-NO-MATCH", "compat", clean=("base", "tokenizer"))
    assert "no effect" in f["message"]
    assert_drift(report, "ADAPTER-FILE-CHANGED", "adapter", "adapter_model.safetensors")


# --- quantization --------------------------------------------------------------------------------------------------


def test_config_dtype_changed(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    config = read_json(repo.base / "config.json")
    key = "dtype" if "dtype" in config else "torch_dtype"
    old = config[key]
    config[key] = "bfloat16"
    write_json(repo.base / "config.json", config)
    rc, report = repo.verify(capsys)
    assert rc == 1
    f = assert_drift(report, "QUANT-DTYPE", "quantization", clean=("tokenizer", "adapter", "compat"))
    assert f["expected"] == old and f["actual"] == "bfloat16"


def test_weights_converted_to_f16(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    def to_f16(tensors: dict[str, Any]) -> dict[str, Any]:
        return {k: v.astype(np.float16) for k, v in tensors.items()}

    edit_safetensors(repo.base / "model.safetensors", to_f16)
    rc, report = repo.verify(capsys)
    assert rc == 1
    f = assert_drift(report, "QUANT-DTYPE", "quantization", "weights-dtypes", clean=("tokenizer", "adapter", "compat"))
    assert re.fullmatch(r"F32 ×\d+ tensors", f["expected"]) and f["actual"] == f["expected"].replace("F32", "F16")
    assert f"stored tensor dtypes changed: {f['expected']} → {f['actual']}" in f["message"]
    assert_drift(report, "BASE-FILE-CHANGED", "base", "model.safetensors")


# --- environment ---------------------------------------------------------------------------------------------------


def test_environment_version_changed(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    edit_lock(repo.lock, lambda d: d["environment"]["versions"].__setitem__("transformers", "4.0.0"))
    rc, report = repo.verify(capsys)
    assert rc == 1
    f = assert_drift(report, "ENV-VERSION", "environment", "transformers", clean=("base", "tokenizer", "adapter"))
    assert f["expected"] == "4.0.0" and f["actual"] == md.version("transformers")


def test_environment_minor_policy_accepts_a_patch_release(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    def bump_patch(doc: dict[str, Any]) -> None:
        versions = doc["environment"]["versions"]
        major, minor = versions["tokenizers"].split(".")[:2]
        versions["tokenizers"] = f"{major}.{minor}.999"

    edit_lock(repo.lock, bump_patch)
    assert read_toml(repo.lock)["environment"]["policy"]["tokenizers"] == "minor"
    rc, report = repo.verify(capsys)
    assert rc == 0, report["findings"]


def test_environment_package_missing_is_a_warning_for_probe_only_packages(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        md.version("bitsandbytes")
    except md.PackageNotFoundError:
        pass
    else:  # pragma: no cover
        pytest.skip("bitsandbytes is installed here")

    def add(doc: dict[str, Any]) -> None:
        doc["environment"]["versions"]["bitsandbytes"] = "0.45.0"
        doc["environment"]["policy"]["bitsandbytes"] = "minor"

    edit_lock(repo.lock, add)
    rc, report = repo.verify(capsys)
    assert rc == 0, report["findings"]
    f = finding(report, "ENV-MISSING", "bitsandbytes")
    assert f["severity"] == "warning" and f["category"] == "environment"
    assert report["checked"]["environment"] == "pass"


# --- restricting categories ----------------------------------------------------------------------------------------


def _tokenizer_and_env_drift(repo: Repo) -> None:
    edit_json(repo.base / "tokenizer_config.json", lambda c: c.__setitem__("chat_template", "{{ messages }}"))
    edit_lock(repo.lock, lambda d: d["environment"]["versions"].__setitem__("peft", "0.1.0"))


def test_only_base_skips_the_rest(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    _tokenizer_and_env_drift(repo)
    rc, report = repo.verify(capsys, "--only", "base")
    assert rc == 0, report["findings"]
    assert report["checked"]["base"] == "pass"
    for other in ("tokenizer", "adapter", "compat", "quantization", "environment", "effect", "golden"):
        assert report["checked"][other] == "skipped", report["checked"]
    assert report["findings"] == []

    rc, report = repo.verify(capsys, "--only", "base,tokenizer")
    assert rc == 1
    assert {f["category"] for f in report["findings"]} == {"tokenizer"}
    assert report["checked"]["environment"] == "skipped"


def test_skip_environment(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    _tokenizer_and_env_drift(repo)
    rc, report = repo.verify(capsys, "--skip", "environment,tokenizer")
    assert rc == 0, report["findings"]
    assert report["checked"]["environment"] == "skipped"
    assert report["checked"]["tokenizer"] == "skipped"
    assert all(report["checked"][c] == "pass" for c in ("base", "adapter", "compat", "quantization"))

    rc, report = repo.verify(capsys, "--skip", "environment")
    assert rc == 1
    assert "ENV-VERSION" not in codes(report)
    assert "TOKENIZER-CHAT-TEMPLATE" in codes(report)


# --- drift wins over an unusable part ------------------------------------------------------------------------------


def test_environment_drift_exits_1_when_the_base_directory_is_gone(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_lock(repo.lock, lambda d: d["environment"]["versions"].__setitem__("transformers", "4.0.0"))
    shutil.rmtree(repo.base)
    rc, report = repo.verify(capsys)
    assert rc == 1
    assert {"ENV-VERSION", "INPUT-UNUSABLE"} <= codes(report)
    unusable = finding(report, "INPUT-UNUSABLE")
    assert unusable["category"] == "input" and "base" in unusable["message"]


def test_base_drift_exits_1_when_an_adapter_directory_is_gone(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    def perturb(tensors: dict[str, Any]) -> None:
        key = sorted(tensors)[0]
        tensors[key] = tensors[key] + 1.0

    edit_safetensors(repo.base / "model.safetensors", perturb)
    shutil.rmtree(repo.adapter)
    rc, report = repo.verify(capsys)
    assert rc == 1
    assert {"BASE-FILE-CHANGED", "INPUT-UNUSABLE"} <= codes(report)


def test_base_drift_exits_1_when_the_tokenizer_is_unreadable(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    def perturb(tensors: dict[str, Any]) -> None:
        key = sorted(tensors)[0]
        tensors[key] = tensors[key] + 1.0

    edit_safetensors(repo.base / "model.safetensors", perturb)
    (repo.base / "tokenizer.json").write_text("{ not json", encoding="utf-8")
    rc, report = repo.verify(capsys)
    assert rc == 1
    assert "BASE-FILE-CHANGED" in codes(report)
    assert "INPUT-UNUSABLE" in codes(report) or "TOKENIZER-FILE-CHANGED" in codes(report)


def test_an_unreadable_adapter_config_blocks_the_adapter_categories_only(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    """The base, tokenizer and quantization are still checked and pass; compat, which needs the config, is in
    error; the adapter's locked files are still compared (the missing config and edited weights are drift)."""

    def perturb(tensors: dict[str, Any]) -> None:
        key = sorted(tensors)[0]
        tensors[key] = tensors[key] * 2.0

    (repo.adapter / "adapter_config.json").unlink()
    edit_safetensors(repo.adapter / "adapter_model.safetensors", perturb)
    rc, report = repo.verify(capsys)
    assert rc == 1, report["findings"]
    assert "adapter_config.json" in finding(report, "INPUT-UNUSABLE")["message"]
    assert finding(report, "ADAPTER-FILE-MISSING", "adapter_config.json")["message"].startswith("adapter adapter: ")
    finding(report, "ADAPTER-FILE-CHANGED", "adapter_model.safetensors")
    assert {report["checked"][c] for c in ("base", "tokenizer", "quantization", "environment")} == {"pass"}
    assert report["checked"]["adapter"] == "fail" and report["checked"]["compat"] == "error"
