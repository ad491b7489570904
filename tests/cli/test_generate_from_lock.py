"""``generate --from-lock`` (regenerate a lock from its own sources, names, prompts and options), ``--name``, and
the writability check that runs before any hashing or probing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from lora_lock._cli import main
from lora_lock.commands.generate import generate
from lora_lock.errors import InputError
from lora_lock.lock.io import read
from tests.helpers import read_toml, verify_json


@pytest.fixture
def project(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(tiny_llama, root / "models" / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapters" / "fox")
    shutil.copytree(tiny_llama_adapter, root / "old" / "adapters" / "fox")
    return root


def test_name_gives_each_adapter_its_lock_name(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = project / "lora.lock"
    argv = ["generate", "--adapter", str(project / "adapters/fox"), "--adapter", str(project / "old/adapters/fox")]
    assert (
        main(
            [
                *argv,
                "--name",
                "fox",
                "--name",
                "fox-v1",
                "--base",
                str(project / "models/base"),
                "-o",
                str(lock),
                "--no-probe",
            ]
        )
        == 0
    )
    assert [a["name"] for a in read(lock)["adapter"]] == ["fox", "fox-v1"]
    capsys.readouterr()
    assert main(["verify", str(lock), "--adapter", "fox-v1", "--format", "json"]) == 0
    # Two adapters cannot share a name, and a name must be printable text.
    for names in (["same", "same"], ["bad\nname"]):
        with pytest.raises(InputError):
            generate(
                [project / "adapters/fox", project / "old/adapters/fox"],
                project / "models/base",
                lock,
                probe=False,
                names=names,
            )


def test_from_lock_regenerates_with_the_lock_s_own_arguments(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    prompts = project / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "Hello there,\nhow"}) + "\n" + json.dumps({"prompt": "The capital of"}) + "\n",
        encoding="utf-8",
    )
    lock = project / "lora.lock"
    assert (
        main(
            [
                "generate",
                "--adapter",
                str(project / "adapters/fox"),
                "--name",
                "my-fox",
                "--base",
                str(project / "models/base"),
                "-o",
                str(lock),
                "--probe-prompts",
                str(prompts),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    before = read_toml(lock)
    prompts.unlink()  # the prompts come from the lock's sidecar, not from the file they were read from
    # An intended change to the adapter: verify fails, and its hint names the command that re-locks.
    config = project / "adapters/fox/adapter_config.json"
    doc = json.loads(config.read_text(encoding="utf-8"))
    doc["lora_alpha"] = doc["lora_alpha"] * 2
    config.write_text(json.dumps(doc), encoding="utf-8")
    capsys.readouterr()
    code, report = verify_json(capsys, lock, device=None, forbid=(), status_matches_exit=False)
    assert code == 1
    changed = next(f for f in report["findings"] if f["code"] == "ADAPTER-FILE-CHANGED")
    assert "lora-lock generate --from-lock" in changed["hint"]
    # From another working directory, the lock's directory argument is enough.
    monkeypatch.chdir(project.parent)
    assert main(["generate", "--from-lock", str(project)]) == 0
    after = read_toml(lock)
    assert [a["name"] for a in after["adapter"]] == ["my-fox"]
    assert after["adapter"][0]["source"] == before["adapter"][0]["source"] == "adapters/fox"
    assert after["base"]["source"] == "models/base"
    for key in ("prompts", "prompts-digest", "device", "dtype"):
        assert after["probe"][key] == before["probe"][key], key
    assert after["adapter"][0]["settings"]["lora_alpha"] == doc["lora_alpha"]
    code, report = verify_json(capsys, lock, device=None, forbid=(), status_matches_exit=False)
    assert code == 0, report["findings"]
    assert report["checked"]["effect"] == "pass"


def test_from_lock_without_a_lock_is_one_paragraph(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--from-lock", str(project / "missing.lock")]) == 2
    err = capsys.readouterr().err
    assert "lock file not found" in err and "Traceback" not in err
    assert main(["generate"]) == 2
    assert "pass --adapter DIR, or --from-lock" in capsys.readouterr().err


def test_an_unwritable_output_fails_before_anything_is_hashed(project: Path) -> None:
    if os.geteuid() != 0:
        place = project / "read-only"
        place.mkdir()
        place.chmod(0o555)
    else:  # root writes through permission bits: use a directory no one can create files in
        place = Path("/proc")
        if not place.is_dir():
            pytest.skip("needs a directory that refuses new files")
    hashed: list[int] = []
    with pytest.raises(InputError, match="cannot write the lock into"):
        generate([project / "adapters/fox"], project / "models/base", place / "lora.lock", progress=hashed.append)
    assert hashed == []
