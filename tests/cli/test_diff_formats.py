"""``diff --format markdown|json``: the reviewer's summary (changes per category and what each means), for a PR
comment or a script."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lora_lock._cli import main
from lora_lock.commands.generate import generate


@pytest.fixture
def locks(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    assert generate([root / "adapter"], root / "base", root / "old.lock", probe=False).written
    config = root / "adapter" / "adapter_config.json"
    doc = json.loads(config.read_text(encoding="utf-8"))
    doc["lora_alpha"] = 2 * doc["lora_alpha"]
    config.write_text(json.dumps(doc), encoding="utf-8")
    assert generate([root / "adapter"], root / "base", root / "new.lock", probe=False).written
    return root


def test_markdown_diff_has_the_reviewer_s_summary(locks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(locks / "old.lock"), str(locks / "new.lock"), "--format", "markdown"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "## lora-lock diff"
    assert lines[2] == "**2 changes: adapter 2**"
    assert "| adapter | 2 | the adapter's files, settings or source changed |" in lines
    assert "### adapter" in lines
    assert any(line.startswith("- adapter adapter setting") and "lora_alpha" in line for line in lines), out
    assert main(["diff", str(locks / "old.lock"), str(locks / "old.lock"), "--format", "markdown"]) == 0
    assert "the locks are identical" in capsys.readouterr().out


def test_json_and_text_diff_carry_the_summary(locks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(locks / "old.lock"), str(locks / "new.lock"), "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["changes"] == len(doc["changes"]) == 2
    assert doc["summary"]["categories"] == {"adapter": 2}
    assert doc["summary"]["review"] == ["adapter: the adapter's files, settings or source changed"]
    assert main(["diff", str(locks / "old.lock"), str(locks / "new.lock")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["2 changes: adapter 2", "  - adapter: the adapter's files, settings or source changed"]
