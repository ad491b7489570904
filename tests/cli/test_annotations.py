"""``verify --format github`` annotates a finding on the file that changed, where that file exists in the
workspace; what has no file of its own (a deleted file, the environment) stays on the lock."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from fuzz.seeds import valid_lock
from lora_lock._cli import main
from lora_lock.commands.generate import generate
from lora_lock.findings import Category, Finding, Severity
from lora_lock.lock.model import Lock
from lora_lock.report.where import for_lock, locator


def _lock(*, base: str) -> Lock:
    """A valid lock whose base is the directory ``base`` and whose tokenizer is the base's."""
    doc = valid_lock()
    doc["base"]["source"] = doc["tokenizer"]["source"] = base
    return Lock.from_dict(doc)


def test_annotations_point_at_the_changed_file(
    tmp_path: Path,
    tiny_llama: Path,
    tiny_llama_adapter: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "project"
    shutil.copytree(tiny_llama, root / "models" / "base")
    shutil.copytree(tiny_llama_adapter, root / "models" / "adapter")
    lock = root / "models" / "lora.lock"
    assert generate([root / "models/adapter"], root / "models/base", lock, probe=False).written
    config = root / "models" / "base" / "config.json"
    config.write_text(config.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    (root / "models" / "base" / "tokenizer.json").unlink()
    monkeypatch.chdir(root)
    assert main(["verify", "models/lora.lock", "--format", "github", "--skip", "effect,golden"]) == 1
    out = capsys.readouterr().out
    files = {
        m["title"].split()[0]: m["file"]
        for m in re.finditer(r"^::\w+ file=(?P<file>[^,]+),title=(?P<title>[^:]+)::", out, re.MULTILINE)
    }
    assert files["BASE-FILE-CHANGED"] == "models/base/config.json", out
    assert files["TOKENIZER-FILE-MISSING"] == "models/lora.lock"  # a deleted file has no place in the workspace
    assert files["TOKENIZER-VOCAB"] == "models/lora.lock"


def _finding(code: str, subject: str | None = None, message: str = "changed") -> Finding:
    return Finding(code, Category.BASE, Severity.ERROR, message, subject=subject)


def test_a_workspace_root_makes_paths_relative_to_it_and_keeps_outside_files_on_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GitHub Action's use: paths from the workspace root wherever the process runs; a source outside the
    workspace (GitHub can place no annotation there) falls back to the lock."""
    workspace, outside = tmp_path / "workspace", tmp_path / "outside"
    (workspace / "team" / "base").mkdir(parents=True)
    (workspace / "team" / "base" / "config.json").write_text("{}", encoding="utf-8")
    (outside / "base").mkdir(parents=True)
    (outside / "base" / "config.json").write_text("{}", encoding="utf-8")
    monkeypatch.chdir(workspace / "team")  # not the root: paths must not depend on it
    lock_path = workspace / "team" / "lora.lock"
    inside = _lock(base="base")
    locate = locator(lock_path, inside, "team/lora.lock", root=workspace)
    assert locate(_finding("BASE-CONFIG")) == "team/base/config.json"
    assert locate(_finding("BASE-FILE-CHANGED", "config.json")) == "team/base/config.json"
    assert locate(_finding("BASE-FILE-CHANGED", "gone.json")) == "team/lora.lock"
    assert locate(_finding("ENV-PYTHON")) == "team/lora.lock"
    far = _lock(base="../../outside/base")
    assert locator(lock_path, far, "team/lora.lock", root=workspace)(_finding("BASE-CONFIG")) == "team/lora.lock"
    # Without a root (the CLI run anywhere): relative to the working directory, absolute outside it.
    assert locator(lock_path, inside, "lora.lock")(_finding("BASE-CONFIG")) == "base/config.json"
    absolute = (outside / "base" / "config.json").as_posix()
    assert locator(lock_path, far, "lora.lock")(_finding("BASE-CONFIG")) == absolute


def test_an_unreadable_lock_has_no_locator(tmp_path: Path) -> None:
    (tmp_path / "lora.lock").write_text("lock-version = [\n", encoding="utf-8")
    assert for_lock(tmp_path, "lora.lock") is None  # the report's INPUT-UNUSABLE stays on the lock
    assert for_lock(tmp_path / "missing.lock", "missing.lock") is None
