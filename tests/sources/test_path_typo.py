"""A mistyped local path (``adapters/foxx`` where ``adapters/`` exists) is reported as a path, not as a Hub
repo the network could not reach."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lora_lock._cli import main


@pytest.fixture
def project(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapters" / "fox")
    return root


@pytest.mark.parametrize("command", ["check", "generate"])
def test_a_path_typo_names_the_directory_not_the_hub(
    project: Path, command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    # Were the Hub asked, the unroutable endpoint would fail (no network is used either way).
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    argv = (
        ["check", "adapters/foxx", "--base", "base"]
        if command == "check"
        else ["generate", "--adapter", "adapters/foxx", "--base", "base", "--no-probe"]
    )
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    text = out + err
    assert "adapters/foxx' is not a local directory: adapters/ exists here but holds no" in text
    assert "did you mean adapters/fox?" in text
    assert "Hub (" not in text and "ConnectError" not in text
    assert not os.path.exists(project / "lora.lock")


def test_an_org_name_without_a_local_directory_still_goes_to_the_hub(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["check", "some-org/some-adapter", "--base", "base"]) == 2
    out, err = capsys.readouterr()
    assert "exists here but holds no" not in out + err
