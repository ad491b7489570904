"""Unusable input through the CLI: exit 2 (or 1), one short message naming the file or field, never a traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from lora_lock._cli import main
from lora_lock.commands.generate import generate
from lora_lock.lock.io import read as read_lock
from tests.helpers import NO_CRASH, read_toml, run_cli

# --- helpers -----------------------------------------------------------------------------------------------------


#: The shared runner; this file's input is unusable on purpose, and no run may crash on it.
run = partial(run_cli, forbid=NO_CRASH)


def cli_error(capsys: pytest.CaptureFixture[str], rc_expected: int, *argv: str) -> str:
    """Run a command that fails before any report: one ``lora-lock: error:`` paragraph (and a hint) on stderr."""
    rc, out, err = run(capsys, *argv)
    assert rc == rc_expected, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "\n\n" not in err.strip(), err
    assert lines, "no message"
    assert sum(1 for line in lines if "error:" in line) == 1, err
    assert all(line.startswith(("lora-lock: error:", "hint:", "usage:", " ")) for line in lines), err
    return err


def verify_error(capsys: pytest.CaptureFixture[str], lock: Path | str, *args: str) -> dict[str, Any]:
    """``verify`` on unusable input: exit 2, status error, one INPUT-UNUSABLE finding of one paragraph."""
    rc, out, err = run(capsys, "verify", str(lock), *args)
    assert rc == 2, out + err
    assert "ERROR" in out or "error" in out
    rc, out, err = run(capsys, "verify", str(lock), "--format", "json", *args)
    assert rc == 2, out + err
    report = json.loads(out)
    assert report["status"] == "error"
    unusable = [f for f in report["findings"] if f["code"] == "INPUT-UNUSABLE"]
    assert len(unusable) == 1, report["findings"]
    f: dict[str, Any] = unusable[0]
    assert f["category"] == "input" and f["severity"] == "error"
    assert "\n" not in f["message"], f["message"]
    return f


@pytest.fixture
def repo(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``repo/base``, ``repo/adapter`` and a valid ``repo/lora.lock``; the cwd is the repo."""
    root = tmp_path / "repo"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    result = generate([root / "adapter"], root / "base", root / "lora.lock", probe=False)
    assert result.lock is not None
    read_lock(root / "lora.lock")
    monkeypatch.chdir(root)
    return root


def rewrite(lock: Path, pattern: str, replacement: str) -> None:
    text = lock.read_text(encoding="utf-8")
    new, n = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
    assert n == 1, pattern
    lock.write_text(new, encoding="utf-8")


# --- the lock file itself ------------------------------------------------------------------------------------------


def test_missing_lock_file(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = verify_error(capsys, "nowhere.lock")
    assert "nowhere.lock" in f["message"] and "not found" in f["message"]
    assert "generate" in f.get("hint", "")


def test_invalid_toml(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = repo / "lora.lock"
    text = lock.read_text(encoding="utf-8").splitlines()
    text.insert(8, "this is = = not toml")
    lock.write_text("\n".join(text), encoding="utf-8")
    f = verify_error(capsys, lock)
    assert "lora.lock" in f["message"] and "TOML" in f["message"]
    assert "line 9" in f["message"]


def test_lock_that_is_not_utf8(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = repo / "lora.lock"
    lock.write_bytes(b"lock-version = 1\n\xff\xfe\n")
    f = verify_error(capsys, lock)
    assert "lora.lock" in f["message"] and "UTF-8" in f["message"]


def test_lock_path_is_a_directory(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = verify_error(capsys, repo / "base")
    assert "base" in f["message"]


def test_lock_failing_the_schema_names_the_field(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = repo / "lora.lock"
    rewrite(lock, r"^r = \d+$", 'r = "eight"')
    f = verify_error(capsys, lock)
    assert "lora.lock" in f["message"]
    assert "adapter/0/settings/r" in f["message"]
    assert "schema" in f.get("hint", "")


def test_lock_missing_a_section_names_it(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = repo / "lora.lock"
    doc = read_toml(lock)
    text = lock.read_text(encoding="utf-8")
    start = text.index("[tokenizer]")
    end = text.index("[[adapter]]")
    assert "tokenizer" in doc
    lock.write_text(text[:start] + text[end:], encoding="utf-8")
    f = verify_error(capsys, lock)
    assert "tokenizer" in f["message"]


def test_lock_with_an_absolute_source_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = repo / "lora.lock"
    rewrite(lock, r'^source = "base"$', f'source = "{(repo / "base").as_posix()}"')
    f = verify_error(capsys, lock)
    assert "base/source" in f["message"] or "absolute" in f["message"]


def test_lock_from_a_newer_lora_lock(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = repo / "lora.lock"
    rewrite(lock, r"^lock-version = 1$", "lock-version = 99")
    # A newer format may have sections this version does not know; the version check comes first.
    lock.write_text(lock.read_text(encoding="utf-8") + '\n[future-section]\nkey = "value"\n', encoding="utf-8")
    f = verify_error(capsys, lock)
    assert "written by a newer lora-lock" in f["message"]
    assert "99" in f["message"] and "lora.lock" in f["message"]
    assert "upgrade" in f.get("hint", "")
    # diff refuses it the same way.
    err = cli_error(capsys, 2, "diff", "lora.lock", "lora.lock")
    assert "written by a newer lora-lock" in err


def test_lock_version_not_an_integer(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = repo / "lora.lock"
    rewrite(lock, r"^lock-version = 1$", 'lock-version = "1"')
    f = verify_error(capsys, lock)
    assert "lock-version" in f["message"]


def test_lock_naming_a_missing_base_directory(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.move(str(repo / "base"), str(repo / "renamed-base"))
    f = verify_error(capsys, "lora.lock")
    assert "base" in f["message"] and "'base'" in f["message"]
    assert "missing" in f["message"]


def test_unreadable_base_is_not_reported_as_checked(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(repo / "base")
    rc, out, _ = run(capsys, "verify", "--format", "json")
    assert rc == 2
    checked = json.loads(out)["checked"]
    assert checked["base"] != "pass", checked
    assert checked["tokenizer"] != "pass", checked


# --- command-line usage --------------------------------------------------------------------------------------------


def test_unknown_category(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(capsys, 2, "verify", "--only", "base,weights")
    assert "weights" in err and "tokenizer" in err  # names the bad one and the valid ones
    err = cli_error(capsys, 2, "verify", "--skip", "nonsense")
    assert "nonsense" in err


def test_verify_that_would_check_nothing_is_a_usage_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "verify", "--only", "effect")
    assert rc == 2, out + err
    assert "probe" in out + err


def test_missing_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    # No adapter and no --from-lock: a usage error naming both ways to say what to lock.
    assert main(["generate"]) == 2
    _, err = capsys.readouterr()
    assert "--adapter" in err and "--from-lock" in err and "Traceback" not in err


# --- generate on bad inputs ----------------------------------------------------------------------------------------


def _outside_symlink(repo: Path) -> None:
    """tokenizer.json becomes a link to a file outside the base directory."""
    shared = repo / "shared"
    shared.mkdir()
    shutil.move(str(repo / "base" / "tokenizer.json"), str(shared / "tokenizer.json"))
    os.symlink(Path("..") / "shared" / "tokenizer.json", repo / "base" / "tokenizer.json")


def test_symlink_outside_the_locked_directory(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "lora.lock").unlink()
    _outside_symlink(repo)
    argv = ("generate", "--no-probe", "--adapter", "adapter", "--base", "base", "-o", "lora.lock")
    err = cli_error(capsys, 2, *argv)
    assert "tokenizer.json" in err and "symlink" in err
    assert "--allow-symlinks" in err
    assert not (repo / "lora.lock").exists()

    rc, _, err = run(capsys, *argv, "--allow-symlinks")
    assert rc == 0, err
    rc, out, err = run(capsys, "verify", "--allow-symlinks")
    assert rc == 0, out + err

    f = verify_error(capsys, "lora.lock")
    assert "tokenizer.json" in f["message"]
    assert "--allow-symlinks" in f.get("hint", "")


def test_symlink_inside_the_locked_directory_is_fine(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = repo / "base"
    (base / "blobs").mkdir()
    shutil.move(str(base / "model.safetensors"), str(base / "blobs" / "weights"))
    os.symlink(Path("blobs") / "weights", base / "model.safetensors")
    # Every file of the base is locked: the link's target is a file of its own, new to the lock.
    rc, out, err = run(capsys, "verify")
    assert rc == 1 and "BASE-FILE-EXTRA" in out and "blobs/weights" in out, out + err
    rc, _, err = run(capsys, "generate", "--no-probe", "--adapter", "adapter", "--base", "base")
    assert rc == 0, err
    rc, out, err = run(capsys, "verify")
    assert rc == 0, out + err


def test_symlink_loop_on_the_weights(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = repo / "base" / "model.safetensors"
    weights.unlink()
    os.symlink("model.safetensors", weights)
    (repo / "lora.lock").unlink()
    err = cli_error(capsys, 2, "generate", "--no-probe", "--adapter", "adapter", "--base", "base")
    assert "model.safetensors" in err
    assert "symbolic links" in err or "loop" in err
    assert not (repo / "lora.lock").exists()


def test_symlink_loop_on_a_tokenizer_file(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = repo / "base" / "tokenizer.json"
    tok.unlink()
    os.symlink("tokenizer.json", tok)
    (repo / "lora.lock").unlink()
    err = cli_error(capsys, 2, "generate", "--no-probe", "--adapter", "adapter", "--base", "base")
    assert "tokenizer.json" in err
    assert not (repo / "lora.lock").exists()


def test_symlink_loop_on_a_locked_file_fails_verify(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = repo / "base" / "tokenizer.json"
    tok.unlink()
    os.symlink("tokenizer.json", tok)
    rc, out, err = run(capsys, "verify", "--format", "json")
    assert rc in (1, 2), out + err
    assert any("tokenizer.json" in f["message"] for f in json.loads(out)["findings"])


def test_adapter_without_safetensors(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "adapter" / "adapter_model.safetensors").unlink()
    (repo / "lora.lock").unlink()
    err = cli_error(capsys, 2, "generate", "--no-probe", "--adapter", "adapter", "--base", "base")
    assert "adapter_model.safetensors" in err
    assert not (repo / "lora.lock").exists()


def test_adapter_directory_missing(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(capsys, 2, "generate", "--no-probe", "--adapter", "no-such-adapter", "--base", "base")
    assert "no-such-adapter" in err


def test_adapter_config_not_json(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "adapter" / "adapter_config.json").write_text("{ nope", encoding="utf-8")
    err = cli_error(capsys, 2, "generate", "--no-probe", "--adapter", "adapter", "--base", "base", "-o", "new.lock")
    assert "adapter_config.json" in err
    assert not (repo / "new.lock").exists()


def test_output_directory_missing(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(
        capsys, 2, "generate", "--no-probe", "--adapter", "adapter", "--base", "base", "-o", "nodir/lora.lock"
    )
    assert "nodir" in err


def test_adapter_that_does_not_fit_writes_nothing(
    repo: Path, tiny_gpt2_adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A GPT-2 adapter over the Llama base: refused with exit 1, and the existing lock is left as it was."""
    shutil.copytree(tiny_gpt2_adapter, repo / "gpt2-adapter")
    old = (repo / "lora.lock").read_bytes()
    rc, out, err = run(
        capsys, "generate", "--no-probe", "--adapter", "gpt2-adapter", "--base", "base", "-o", "lora.lock"
    )
    assert rc == 1, out + err
    assert "not writing" in err and "lora.lock" in err
    assert "COMPAT-" in out  # the report says why
    assert (repo / "lora.lock").read_bytes() == old
    rc, out, err = run(
        capsys, "generate", "--no-probe", "--adapter", "gpt2-adapter", "--base", "base", "-o", "fresh.lock"
    )
    assert rc == 1
    assert not (repo / "fresh.lock").exists()
    assert sorted(p.name for p in repo.iterdir()) == ["adapter", "base", "gpt2-adapter", "lora.lock"]


def test_diff_of_a_missing_lock(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(capsys, 2, "diff", "lora.lock", "other.lock")
    assert "other.lock" in err


def test_generate_on_unusable_input_reports_in_the_format_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "no-such-adapter")
    err = cli_error(capsys, 2, "generate", "--adapter", missing, "-o", str(tmp_path / "lora.lock"))
    assert "no-such-adapter" in err
    rc, out, _ = run(capsys, "generate", "--adapter", missing, "-o", str(tmp_path / "lora.lock"), "--format", "json")
    report = json.loads(out)
    assert rc == 2 and report["status"] == "error" and report["checked"] == {"input": "error"}
    assert [f["code"] for f in report["findings"]] == ["INPUT-UNUSABLE"]
    assert "no-such-adapter" in report["findings"][0]["message"]
    assert not (tmp_path / "lora.lock").exists()


@pytest.mark.parametrize("command", [("outdated",), ("generate", "--from-lock")])
def test_lock_naming_a_hub_repo_without_its_revision(
    repo: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...], fake_hub_env: object
) -> None:
    """A hand-edited section with a local ``source`` and a ``repo`` but no ``revision`` passes the schema; the
    commands reading its Hub pin refuse it in one paragraph instead of failing on the missing key (online, so
    ``outdated`` gets as far as reading the pin)."""
    lock = repo / "lora.lock"
    rewrite(lock, r'^source = "base"$', 'source = "base"\nrepo = "org/base"')
    argv = (*command, str(lock)) if command == ("outdated",) else (command[0], command[1], str(lock))
    rc, out, err = run(capsys, *argv)
    assert rc == 2, out + err
    assert "org/base" in out + err and "'revision'" in out + err, out + err
