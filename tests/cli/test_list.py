"""``list --format json`` is JSON whatever happens: a fleet job parsing it gets the reason, and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_lock._cli import main


def test_list_json_without_a_lock_is_a_json_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", str(tmp_path / "lora.lock"), "--format", "json"]) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["adapter"] == []
    assert "lock file not found" in doc["error"]["message"]
    assert "lock file not found" in err
    # A directory means the lock inside it, as for verify.
    assert main(["list", str(tmp_path), "--format", "json"]) == 2
    assert json.loads(capsys.readouterr().out)["adapter"] == []
