"""Symlinks and special files where a model file, a sidecar or a golden set should be.

Reading one naively hangs (a FIFO, a terminal) or grows memory without end (``/dev/zero``), so every run here is
a child process with a timeout, and the bound on memory is the child's own peak RSS.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.attacks import PEAK_RSS, Repo, child, cli, make_repo, peak_kib, verify_json

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")

#: Far below what reading /dev/zero to exhaustion (or even one sidecar bound of it) would cost on top of the
#: probe stack's imports; far above what the refusal costs.
RSS_CEILING_KIB = 1_000_000


@pytest.fixture
def repo(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Repo:
    return make_repo(tmp_path, tiny_llama, tiny_llama_adapter)


@pytest.mark.parametrize("target", ["/proc/self/fd/2", "fifo"])
def test_a_base_weight_file_linked_to_a_terminal_or_a_fifo_is_refused_without_hanging(repo: Repo, target: str) -> None:
    if target == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs FIFOs")
        fifo = repo.root / "outside-fifo"
        os.mkfifo(fifo)
        (repo.base / "model.safetensors").unlink()
        os.mkfifo(repo.base / "model.safetensors")
    elif not Path(target).exists():
        pytest.skip(f"needs {target}")
    else:
        (repo.base / "model.safetensors").unlink()
        (repo.base / "model.safetensors").symlink_to(target)
    runs: tuple[tuple[str, ...], ...] = (
        ("check", str(repo.adapter), "--base", str(repo.base)),
        ("check", str(repo.adapter), "--base", str(repo.base), "--allow-symlinks"),
        ("verify", str(repo.lock), "--format", "json"),
        ("verify", str(repo.lock), "--format", "json", "--allow-symlinks"),
    )
    for argv in runs:
        result = child(*argv, timeout=60)
        assert result.returncode == 2, (argv, result.stdout, result.stderr)
        said = result.stdout + result.stderr
        assert "model.safetensors" in said
        # /proc/self/fd/2 of the child is a pipe: its link resolves to no path ("broken"); a terminal would be
        # outside the fence, and with --allow-symlinks a character device (not a regular file).
        assert any(w in said for w in ("not a regular file", "outside the locked directory", "broken")), said
        if argv[0] == "verify":
            report = json.loads(result.stdout)
            assert report["status"] == "error" and report["checked"]["base"] == "error", report
            assert report["checked"]["environment"] == "pass"  # the rest of the report is kept


def test_a_directory_symlink_out_of_the_base_is_refused_though_only_a_deeper_name_uses_it(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``base/ext`` → a directory outside, and an index naming ``ext/…``: each component is checked, not only the
    last one."""
    from safetensors.numpy import load_file, save_file

    outside = tmp_path / "outside"
    outside.mkdir()
    tensors = load_file(str(repo.base / "model.safetensors"))
    names = sorted(tensors)
    save_file({k: tensors[k] for k in names[:3]}, str(outside / "shard.safetensors"), metadata={"format": "pt"})
    save_file({k: tensors[k] for k in names[3:]}, str(repo.base / "rest.safetensors"), metadata={"format": "pt"})
    (repo.base / "model.safetensors").unlink()
    (repo.base / "ext").symlink_to(outside, target_is_directory=True)
    weight_map = {k: ("ext/shard.safetensors" if i < 3 else "rest.safetensors") for i, k in enumerate(names)}
    (repo.base / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")

    for argv in (
        ("check", str(repo.adapter), "--base", str(repo.base)),
        ("generate", "--no-probe", "--adapter", str(repo.adapter), "--base", str(repo.base), "-o", str(repo.lock)),
    ):
        rc, out, err = cli(capsys, *argv)
        assert rc == 2, out + err
        assert "ext" in out + err and "outside the locked directory" in out + err and "--allow-symlinks" in out + err
    # Locked on purpose with --allow-symlinks, the same lock is refused by a verify that does not allow them.
    rc, out, err = cli(
        capsys, "generate", "--no-probe", "--allow-symlinks", "--adapter", str(repo.adapter), "--base",
        str(repo.base), "-o", str(repo.lock),
    )  # fmt: skip
    assert rc == 0, out + err
    rc, report = verify_json(capsys, repo.lock)
    assert rc == 2 and "outside the locked directory" in json.dumps(report)
    assert verify_json(capsys, repo.lock, "--allow-symlinks", "--allow-outside-sources")[0] == 0


@pytest.fixture
def probed(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Repo:
    return make_repo(tmp_path, tiny_llama, tiny_llama_adapter, probe=True)


def _sidecar(repo: Repo) -> Path:
    return repo.root / str(repo.doc()["probe"]["sidecar"])


@pytest.mark.slow
@pytest.mark.parametrize("flags", [(), ("--allow-symlinks", "--allow-outside-sources")])
def test_a_sidecar_linked_to_dev_zero_is_refused_within_bounded_memory(probed: Repo, flags: tuple[str, ...]) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("needs /dev/zero")
    sidecar = _sidecar(probed)
    sidecar.unlink()
    sidecar.symlink_to("/dev/zero")
    result = child("verify", str(probed.lock), "--format", "json", *flags, timeout=90, code=PEAK_RSS)
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    effect = [f for f in report["findings"] if f["category"] == "input"]
    assert effect and "probe fingerprints" in json.dumps(effect), report["findings"]
    assert report["checked"]["base"] == "pass"  # the static report is kept
    assert peak_kib(result.stderr) < RSS_CEILING_KIB


def _with_golden(repo: Repo, dataset: str) -> Path:
    def add(doc: dict[str, Any]) -> None:
        doc["golden"] = {
            "adapter": [{"name": doc["adapter"][0]["name"], "accuracy": 1.0, "correct": "1"}],
            "dataset": dataset,
            "dataset-digest": "sha256:" + "0" * 64,
            "items": 1,
        }

    return repo.edit(add)


@pytest.mark.slow
def test_a_golden_file_linked_to_dev_zero_is_refused_within_bounded_memory(repo: Repo) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("needs /dev/zero")
    lock = _with_golden(repo, "golden.jsonl")
    (repo.root / "golden.jsonl").symlink_to("/dev/zero")
    for flags in ((), ("--allow-symlinks", "--allow-outside-sources")):
        result = child("verify", str(lock), "--format", "json", *flags, timeout=90, code=PEAK_RSS)
        assert result.returncode == 2, result.stderr
        report = json.loads(result.stdout)
        assert report["checked"]["golden"] == "error" and report["checked"]["base"] == "pass", report
        assert "golden.jsonl" in json.dumps(report["findings"])
        assert peak_kib(result.stderr) < RSS_CEILING_KIB


@pytest.mark.slow
def test_a_golden_dataset_outside_the_repository_is_never_read(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The golden set's path comes from the lock, like a source: it must not leave the repository (a fork PR
    would learn whether a runner file exists and parses) unless the user allows it."""
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"prompt": "x", "expected": "y"}\n', encoding="utf-8")
    for dataset in ("../secret.jsonl", "linked.jsonl"):
        if dataset == "linked.jsonl":
            (repo.root / "linked.jsonl").symlink_to(secret)
        lock = _with_golden(repo, dataset)
        rc, report = verify_json(capsys, lock)
        assert rc == 2, report["findings"]
        text = json.dumps(report)
        assert "outside the lock's repository" in text or "outside the locked directory" in text, text
        assert report["checked"]["base"] == "pass"


def test_a_lock_that_is_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs FIFOs")
    fifo = tmp_path / "fifo.lock"
    os.mkfifo(fifo)
    result = child("verify", str(fifo), timeout=60)
    assert result.returncode == 2 and "FIFO" in result.stdout + result.stderr
