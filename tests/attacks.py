"""Helpers of the attack tests (tests/test_attacks_*.py, tests/cli/test_crashes.py): a locked repository copied from
the session's tiny models, the CLI run in-process or as a child process with a timeout, and report readers.

A child process is used wherever a defect would show as a hang or a memory blow-up: the timeout turns it into a
failed test, never into a stuck suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from lora_lock.commands.generate import generate
from tests.helpers import NO_CRASH, ROOT, edit_lock, read_toml, run_cli
from tests.helpers import verify_json as shared_verify_json

#: Seconds a child CLI run may take before the test fails: a hang (FIFO, /dev/zero, unbounded work) hits it, a
#: correct refusal takes a second or two.
CHILD_TIMEOUT = 120


class Repo:
    """A user repository: ``base/``, ``adapter/`` (and more adapters), ``lora.lock``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / "base"
        self.adapter = root / "adapter"
        self.lock = root / "lora.lock"

    def generate(self, *adapters: Path, probe: bool = False, **options: Any) -> None:
        result = generate(list(adapters) or [self.adapter], self.base, self.lock, probe=probe, **options)
        assert result.lock is not None, [f.to_dict() for f in result.report.findings]

    def doc(self) -> dict[str, Any]:
        return read_toml(self.lock)

    def edit(self, change: Callable[[dict[str, Any]], None], name: str = "lora.lock") -> Path:
        return edit_lock(self.lock, change, to=self.root / name)


def make_repo(tmp_path: Path, base: Path, adapter: Path, *, probe: bool = False) -> Repo:
    repo = Repo(tmp_path / "repo")
    (repo.root / ".git").mkdir(parents=True)  # the lock's repository (its sources must stay inside it)
    shutil.copytree(base, repo.base)
    shutil.copytree(adapter, repo.adapter)
    repo.generate(probe=probe)
    return repo


#: The CLI in-process (the shared runner); no traceback or internal error may reach either stream.
cli = partial(run_cli, forbid=NO_CRASH)
#: ``verify --format json`` in-process: the exit code and the report, which must parse whatever happened and whose
#: status must match the exit code. No ``--device``: the command's default applies.
verify_json = partial(shared_verify_json, device=None, forbid=NO_CRASH)


def child(*argv: str, timeout: float = CHILD_TIMEOUT, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI (or ``code`` given ``argv`` as ``sys.argv[1:]``) in a child process, killed after ``timeout``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-c", code, *argv] if code else [sys.executable, "-m", "lora_lock", *argv]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:  # the failure this guards against: a hang
        pytest.fail(f"`lora-lock {' '.join(argv)}` did not finish within {timeout} s (hang or unbounded work): {exc}")
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert "internal error" not in result.stdout + result.stderr, result.stderr[-3000:]
    return result


def codes(report: dict[str, Any], severity: str | None = "error") -> set[str]:
    return {f["code"] for f in report["findings"] if severity is None or f["severity"] == severity}


def subjects(report: dict[str, Any], code: str) -> set[str]:
    return {f.get("subject", "") for f in report["findings"] if f["code"] == code}


#: Child code: the CLI, then its peak RSS (KiB) on the last line of stderr. The peak is reset first (a forked
#: child starts with its parent's high-water mark, the whole pytest process), so it is the run's own.
PEAK_RSS = """
import sys
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
from lora_lock._cli import main
rc = main(sys.argv[1:])
with open("/proc/self/status") as fh:
    hwm = [line.split()[1] for line in fh if line.startswith("VmHWM:")][0]
print("peak-rss-kib", hwm, file=sys.stderr)
sys.exit(rc)
"""


def peak_kib(stderr: str) -> int:
    """The peak RSS a :data:`PEAK_RSS` child reported."""
    line = [ln for ln in stderr.splitlines() if ln.startswith("peak-rss-kib")][-1]
    return int(line.split()[1])
