"""``verify --format github`` annotates a finding on the file that changed, where that file exists in the
workspace; what has no file of its own (a deleted file, the environment) stays on the lock."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from lora_lock._cli import main
from lora_lock.commands.generate import generate


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
