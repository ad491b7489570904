"""Robustness at the edges: files changing under the hasher, a 10**6-tensor header, a 10**4-adapter lock."""

from __future__ import annotations

import json
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lora_lock._cli import main
from lora_lock.commands.generate import generate
from lora_lock.errors import InputError
from lora_lock.hashing import hash_file
from lora_lock.lock.io import read
from tests.helpers import write_toml


def test_a_file_growing_while_it_is_hashed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shard.safetensors"
    path.write_bytes(b"\0" * (3 << 20))
    grown: list[int] = []

    def append_once(_: int) -> None:
        if not grown:
            with path.open("ab") as fh:
                fh.write(b"more")
            grown.append(True)

    with pytest.raises(InputError, match="changed while it was being hashed"):
        hash_file(path, append_once)


def test_a_file_replaced_while_it_is_hashed_hashes_one_version(tmp_path: Path) -> None:
    """Replacing (rename over) keeps the open file: the digest is the old content's, never a mix."""
    path = tmp_path / "shard.safetensors"
    old, new = b"a" * (3 << 20), b"b" * (3 << 20)
    path.write_bytes(old)
    replaced: list[int] = []

    def replace_once(_: int) -> None:
        if not replaced:
            other = tmp_path / "next"
            other.write_bytes(new)
            other.replace(path)
            replaced.append(True)

    import hashlib

    digest = hash_file(path, replace_once)
    assert digest.digest == "sha256:" + hashlib.sha256(old).hexdigest()


MILLION_HEADER = r"""
import json, resource, struct, sys, time
from pathlib import Path
path = Path(sys.argv[1])
n = 10**6
parts = ",".join(f'"t{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{i + 1}]}}' for i in range(n))
header = ("{" + parts + "}").encode()
with open(path, "wb") as fh:
    fh.write(struct.pack("<Q", len(header)))
    fh.write(header)
    fh.truncate(8 + len(header) + n)
from lora_lock.inspect.safetensors_header import read_header
start = time.process_time()
tensors = len(read_header(path).tensors)
print(json.dumps({"tensors": tensors, "cpu_seconds": time.process_time() - start,
                  "header_mb": len(header) / 1e6,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@pytest.mark.slow
def test_a_million_tensor_header_is_read_within_bounds(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", MILLION_HEADER, str(tmp_path / "big.safetensors")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["tensors"] == 10**6
    # CPU seconds, not wall: the bound is on the work done, which a loaded machine does not change.
    assert figures["cpu_seconds"] < 60
    assert figures["peak_rss_mb"] < 4096
    print(f"\n10**6-tensor header: {figures}")


@pytest.mark.slow
def test_a_lock_with_ten_thousand_adapters(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_llama, repo / "base")
    shutil.copytree(tiny_llama_adapter, repo / "adapter")
    out = repo / "lora.lock"
    assert generate([repo / "adapter"], repo / "base", out, probe=False).written
    lock = read(out)
    template = lock["adapter"][0]
    lock["adapter"] = [{**template, "name": f"adapter-{i:05d}"} for i in range(10**4)]
    write_toml(out, lock)
    print(f"\n10**4-adapter lock: {out.stat().st_size / 1e6:.1f} MB")

    start = time.process_time()
    assert len(read(out)["adapter"]) == 10**4
    read_s = time.process_time() - start
    capsys.readouterr()
    assert main(["list", str(out), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["adapter"]) == 10**4
    start = time.process_time()
    assert main(["verify", str(out), "--adapter", "adapter-04242", "--skip", "effect,golden"]) == 0
    verify_s = time.process_time() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"read + validate {read_s:.2f} CPU s, verify one adapter {verify_s:.2f} CPU s, peak RSS {rss:.0f} MiB")
    # CPU seconds of this process, not wall: a bound on the work, which a loaded machine does not change.
    assert read_s < 60 and verify_s < 60


def test_header_length_prefix_claiming_exabytes_allocates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(InputError, match="above the"):
        from lora_lock.inspect.safetensors_header import read_header

        read_header(path)


def test_a_read_only_lock_directory_is_a_clear_error(
    tmp_path: Path,
    tiny_llama: Path,
    tiny_llama_adapter: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Tests may run as root, where chmod does not stop writes: the read-only filesystem is simulated where the
    lock's temp file is created."""
    import errno
    import tempfile

    repo = tmp_path / "repo"
    shutil.copytree(tiny_llama, repo / "base")
    shutil.copytree(tiny_llama_adapter, repo / "adapter")
    out = repo / "lora.lock"
    argv = ["generate", "--adapter", str(repo / "adapter"), "--base", str(repo / "base"), "-o", str(out)]
    assert main([*argv, "--no-probe"]) == 0
    before = out.read_bytes()
    (repo / "base" / "generation_config.json").write_text("{}", encoding="utf-8")  # so the lock would change

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    capsys.readouterr()
    assert main([*argv, "--no-probe"]) == 2
    err = capsys.readouterr().err
    assert str(repo) in err and "Read-only file system" in err and "Traceback" not in err
    assert out.read_bytes() == before
