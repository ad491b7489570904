"""How the action installs lora-lock (standard library only: it runs with the job's Python before lora-lock exists).

- ``isolated``: a fresh venv under ``$RUNNER_TEMP`` gets the wheels of ``action/requirements.txt`` (every file
  hash-pinned, ``--require-hashes``), then the action's checkout is built with the build backend pinned there
  (``--no-build-isolation --no-index``): the same bytes on every run, and an air-gapped runner only needs those
  wheels (``PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR``).
- the job's Python (full tier, or ``isolated: false``): pip first says what it would install (``--dry-run
  --report``). When that would replace a package the job already has, nothing is installed and the error names
  the installed version, what lora-lock needs, and what pinned the installed one. Otherwise exactly the packages
  of that plan are installed, ``--no-deps``: every package the job had is left as it was.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"
PIP_QUIET = ("--disable-pip-version-check", "--progress-bar", "off")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class InstallError(Exception):
    """The install cannot go on; the message (and hint) is for the user."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _run(argv: Sequence[str], what: str, cwd: Path, hint: str | None = None) -> None:
    """Run an install command outside the checkout, so ``python -m`` cannot import the repository's files."""
    if subprocess.run(list(argv), cwd=cwd, check=False).returncode != 0:
        raise InstallError(f"{what} failed (see the log above)", hint=hint)


def _pip_for(base_python: str, python: str, temp: Path) -> list[str]:
    """The pip command that installs into the venv of ``python``: the job's own pip with ``--python`` (pip 22.3 and
    newer), which spares the venv a copy of pip (ensurepip takes seconds, and tens of them on a busy runner);
    otherwise pip bootstrapped into the venv."""
    probe = subprocess.run(
        [base_python, "-m", "pip", "--version"], cwd=temp, capture_output=True, text=True, check=False
    )
    found = re.match(r"pip (\d+)\.(\d+)", probe.stdout) if probe.returncode == 0 else None
    if found and (int(found.group(1)), int(found.group(2))) >= (22, 3):
        return [base_python, "-m", "pip", "--python", python]
    _run([python, "-m", "ensurepip", "--default-pip"], "installing pip into the isolated venv", temp)
    return [python, "-m", "pip"]


def install_isolated(base_python: str, venv: Path, action_path: Path, temp: Path) -> str:
    """A new venv with the hash-pinned requirements and the action's checkout; returns its Python."""
    _run([base_python, "-m", "venv", "--clear", "--without-pip", str(venv)], "creating the isolated venv", temp)
    python = str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    pip = _pip_for(base_python, python, temp)
    _run(
        [*pip, "install", *PIP_QUIET, "--require-hashes", "--no-deps", "-r", str(REQUIREMENTS)],
        f"pip install --require-hashes -r {REQUIREMENTS.name}",
        temp,
        hint="an air-gapped runner needs these wheels locally: set PIP_NO_INDEX=1 and PIP_FIND_LINKS to their folder",
    )
    _run(
        [
            *pip,
            "install",
            *PIP_QUIET,
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(action_path),
        ],
        "building the action's checkout",
        temp,
    )
    return python


def installed() -> dict[str, tuple[str, str]]:
    """Canonical name → (name, version) of every distribution this Python (the job's) has."""
    out: dict[str, tuple[str, str]] = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonical(name), (name, dist.version))
    return out


def _required_by(target: str) -> list[str]:
    """The installed distributions' requirements on ``target``: ``transformers 4.57.1 requires huggingface-hub<1.0``."""
    found: list[str] = []
    for dist in md.distributions():
        for requirement in dist.requires or ():
            spec = requirement.split(";", 1)
            match = _NAME.match(spec[0])
            if match and canonical(match.group(1)) == target and (len(spec) == 1 or "extra" not in spec[1]):
                found.append(f"{dist.metadata['Name']} {dist.version} requires {spec[0].strip()}")
    return sorted(set(found))


def _requirement_on(plan: Sequence[Mapping[str, object]], target: str) -> str:
    """What the plan's packages ask of ``target`` (lora-lock's ``huggingface_hub>=2.0,<3``, say)."""
    asks: list[str] = []
    for item in plan:
        metadata = item.get("metadata")
        if not isinstance(metadata, dict):
            continue
        for requirement in metadata.get("requires_dist") or ():
            spec = str(requirement).split(";", 1)
            match = _NAME.match(spec[0])
            if match and canonical(match.group(1)) == target and (len(spec) == 1 or "extra" not in spec[1]):
                asks.append(f"{metadata.get('name')} needs {spec[0].strip()}")
    return "; ".join(sorted(set(asks))) or "lora-lock's dependencies need it"


def plan_install(python: str, action_path: Path, temp: Path) -> list[dict[str, object]]:
    """pip's plan (``--dry-run --report``) for installing the checkout into ``python``: what it would install."""
    fd, name = tempfile.mkstemp(prefix="lora-lock-pip-plan-", suffix=".json", dir=temp)
    os.close(fd)
    report = Path(name)
    try:
        _run(
            [
                python,
                "-m",
                "pip",
                "install",
                *PIP_QUIET,
                "--dry-run",
                "--quiet",
                "--report",
                str(report),
                str(action_path),
            ],
            "pip install --dry-run of the action's checkout",
            temp,
            hint="if this Python is externally managed (PEP 668), add actions/setup-python before this action, "
            "or use `isolated: true` for the static tier; --report needs pip 22.2 or newer",
        )
        data = json.loads(report.read_text(encoding="utf-8") or "{}")
    finally:
        report.unlink(missing_ok=True)
    items = data.get("install", [])
    return [item for item in items if isinstance(item, dict)]


def conflicts(plan: Sequence[Mapping[str, object]], have: Mapping[str, tuple[str, str]]) -> list[str]:
    """One sentence per installed package the plan would replace (lora-lock itself excepted)."""
    out: list[str] = []
    for item in plan:
        metadata = item.get("metadata")
        if not isinstance(metadata, dict):
            continue
        key = canonical(str(metadata.get("name", "")))
        if key == "lora-lock" or key not in have:
            continue
        name, version = have[key]
        pinned = _required_by(key)
        out.append(
            f"{name} {version} is installed, but installing lora-lock would change it to {metadata.get('version')} "
            f"({_requirement_on(plan, key)})" + (f"; installed: {', '.join(pinned)}" if pinned else "")
        )
    return out


def install_into_job_python(python: str, action_path: Path, temp: Path) -> list[str]:
    """Install the checkout into the job's Python without changing any package it has; returns what was added."""
    plan = plan_install(python, action_path, temp)
    found = conflicts(plan, installed())
    if found:
        raise InstallError(
            "lora-lock's requirements conflict with the job's Python, so nothing was installed: " + " | ".join(found),
            hint="the full tier checks your stack exactly as it is and never changes it; use a stack lora-lock "
            "supports (transformers >= 5.18, huggingface_hub 2.x), or run the static tier with `isolated: true`",
        )
    pins = []
    for item in plan:
        metadata = item.get("metadata")
        if isinstance(metadata, dict) and canonical(str(metadata.get("name", ""))) != "lora-lock":
            pins.append(f"{metadata.get('name')}=={metadata.get('version')}")
    _run(
        [python, "-m", "pip", "install", *PIP_QUIET, "--no-deps", str(action_path), *pins],
        "pip install of the action's checkout",
        temp,
    )
    return pins
