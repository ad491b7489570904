"""Ctrl-C: a real SIGINT delivered while ``generate`` runs exits 130 with one line, and the previous lock is
left as it was (the README's exit-code table lists 130)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from lora_lock.commands.generate import generate
from tests.helpers import ROOT

# The signal is sent by the process to itself once generate has resolved its sources and starts reading them.
_INTERRUPTED = (
    "import os, signal, sys\n"
    "import lora_lock.commands.generate as g\n"
    "real = g.observe\n"
    "def observe(*a, **k):\n"
    "    os.kill(os.getpid(), signal.SIGINT)\n"
    "    return real(*a, **k)\n"
    "g.observe = observe\n"
    "from lora_lock._cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


def test_ctrl_c_exits_130_and_keeps_the_lock(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> None:
    shutil.copytree(tiny_llama, tmp_path / "base")
    shutil.copytree(tiny_llama_adapter, tmp_path / "adapter")
    lock = tmp_path / "lora.lock"
    assert generate([tmp_path / "adapter"], tmp_path / "base", lock, probe=False).written
    before = lock.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED, "generate", "--adapter", "adapter", "--base", "base", "--name", "x"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "lora-lock: interrupted"
    assert lock.read_bytes() == before
