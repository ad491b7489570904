"""What a user without the ``probe`` extra sees: ``generate`` says its lock has no ``[probe]``, verify hints about
it, a run whose only requested category cannot run does not pass, and the summary line never says "no problem
found" over a warning or a check that did not run.

"Without the probe extra" is a real CLI process in which torch, transformers and peft cannot be imported
(``sys.modules[name] = None``: ``import`` fails and ``importlib.util.find_spec`` answers None, as for a package
that is not installed); the slow test at the end uses a real venv holding only the core's dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lora_lock._cli import main
from lora_lock.commands.generate import generate
from lora_lock.findings import Category, Finding, Report, Severity
from lora_lock.report import Format, renderer_for
from tests.helpers import ROOT

_WITHOUT_PROBE = (
    "import sys\n"
    "for name in ('torch', 'transformers', 'peft'):\n"
    "    sys.modules[name] = None\n"
    "from lora_lock._cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


def run_without_probe(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PROBE, *args], cwd=cwd, env=env, text=True, capture_output=True, check=False
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


@pytest.fixture
def project(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    return root


def test_generate_without_the_probe_extra_warns_that_the_lock_has_no_probe(project: Path) -> None:
    proc = run_without_probe(project, "generate", "--adapter", "adapter", "--base", "base")
    assert proc.returncode == 0, proc.stderr
    assert "warning: EFFECT-NOT-LOCKED" in proc.stderr
    assert "has no [probe]" in proc.stderr
    assert "[probe]" not in (project / "lora.lock").read_text(encoding="utf-8")
    # A full verify later says why the effect was not checked (an info with the way to record it) ...
    proc = run_without_probe(project, "verify", "--format", "json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0
    note = next(f for f in report["findings"] if f["code"] == "EFFECT-NOT-LOCKED")
    assert note["severity"] == "info" and "generate --from-lock" in note["hint"]
    assert report["checked"]["effect"] == "skipped"


def test_no_probe_on_purpose_is_not_warned(project: Path) -> None:
    result = generate([project / "adapter"], project / "base", project / "lora.lock", probe=False)
    assert result.written
    assert "EFFECT-NOT-LOCKED" not in {f.code for f in result.report.findings}


def test_verify_only_effect_without_the_probe_extra_is_not_a_pass(project: Path) -> None:
    """The lock records a probe; here the stack is missing, so the one category asked for cannot run: exit 2."""
    result = generate([project / "adapter"], project / "base", project / "lora.lock")
    assert result.lock is not None and result.lock.probe is not None
    proc = run_without_probe(project, "verify", "--only", "effect")
    assert proc.returncode == 2, proc.stdout
    assert "EFFECT-NOT-RUN" in proc.stdout
    assert "none of the categories asked for (effect) could be checked here" in proc.stdout
    assert "PASS" not in proc.stdout
    # A full verify still checks the rest: no error, but the summary names what did not run.
    proc = run_without_probe(project, "verify")
    assert proc.returncode == 0, proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("WARN lora-lock verify lora.lock: no error in what was checked; not run: effect (")
    assert "no problem found" not in proc.stdout


def test_verify_accepts_the_lock_s_directory(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate([project / "adapter"], project / "base", project / "lora.lock", probe=False)
    assert main(["verify", str(project), "--format", "json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["status"] == "pass" and report["checked"]["base"] == "pass"
    cwd = Path.cwd()
    try:
        os.chdir(project)
        assert main(["verify", ".", "--format", "json", "--only", "base"]) == 0
    finally:
        os.chdir(cwd)
    assert "Is a directory" not in capsys.readouterr().err


def _report(*findings: Finding) -> Report:
    return Report.build(findings, ran=[Category.BASE, Category.COMPAT], title="lora-lock check")


@pytest.mark.parametrize("fmt", [Format.TEXT, Format.MARKDOWN])
def test_summary_line_is_a_plain_pass_only_without_warnings(fmt: Format) -> None:
    clean = renderer_for(fmt).render(_report(Finding("QUANT-FORMAT", Category.COMPAT, Severity.INFO, "none")))
    warned = renderer_for(fmt).render(
        _report(Finding("COMPAT-TARGET-UNUSED", Category.COMPAT, Severity.WARNING, "x matches nothing"))
    )
    assert "no problem found" in clean
    assert "no problem found" not in warned
    assert "1 warning to read" in warned
    if fmt is Format.TEXT:
        assert clean.splitlines()[-1].startswith("PASS ")
        assert warned.splitlines()[-1].startswith("WARN ")
    else:
        assert "✅ **pass**" in clean and "⚠️ **pass with warnings**" in warned


def test_a_missing_base_directory_is_reported_once_with_a_true_hint(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate([project / "adapter"], project / "base", project / "lora.lock", probe=False)
    (project / "base").rename(project / "base-renamed")
    assert main(["verify", str(project / "lora.lock")]) == 2
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "named by the lock is missing" in line]
    assert len(lines) == 1, out
    assert "run verify from the repository" not in out
    assert "relative to the lock's directory" in out
    assert "generate --from-lock --base NEW-DIR" in out


@pytest.mark.slow
def test_a_static_install_verifies_an_unchanged_project(project: Path, tmp_path: Path) -> None:
    """A venv with the core only (no torch, transformers, peft or safetensors): an unchanged project passes,
    and the probe-only libraries the lock records (safetensors among them) are warnings, not errors."""
    wheelhouse = ROOT / ".venv" / "wheelhouse"
    if not wheelhouse.is_dir():
        pytest.skip("needs the wheelhouse `make install` downloads (the core's dependencies)")
    generate([project / "adapter"], project / "base", project / "lora.lock")
    venv = tmp_path / "static"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheelhouse), str(ROOT)],
        check=True,
        capture_output=True,
    )
    found = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('safetensors') is None)"],
        text=True,
        capture_output=True,
        check=True,
    )
    assert found.stdout.strip() == "True"
    proc = subprocess.run(
        [str(python), "-m", "lora_lock", "verify", "--format", "json", "--skip", "effect,golden"],
        cwd=project,
        text=True,
        capture_output=True,
        check=False,
    )
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, report["findings"]
    missing = {f["subject"]: f["severity"] for f in report["findings"] if f["code"] == "ENV-MISSING"}
    assert missing.get("safetensors") == "warning", missing
    assert set(missing.values()) == {"warning"}
