"""Helpers every test module may import: asset paths, the in-process CLI runner, lock editors, sparse copies.

The fixtures (tiny models, header-only bases, the fake Hub) are registered in ``tests/conftest.py``; what needs no
pytest machinery beyond ``capsys`` lives here as plain functions, so it can be used in module-level constants and
``parametrize`` lists too.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import tomllib

from lora_lock._cli import main

# --- asset paths ------------------------------------------------------------------------------------------------

#: The repository's root (the folder holding ``pyproject.toml``).
ROOT = Path(__file__).resolve().parents[1]
#: The test tree.
TESTS = ROOT / "tests"
#: Expected report renderings, byte for byte.
GOLDENS = TESTS / "goldens"
#: Workflows and local action stand-ins the ``act`` tests run.
ACT = TESTS / "act"
#: JSON Schemas shipped in the package.
SCHEMAS = ROOT / "lora_lock" / "schemas"
#: Real adapters from the Hub (configs and headers), kept beside the checkout; the corpus tests skip without it.
CORPUS = ROOT.parent / "shared" / "corpus" / "real-adapters"

# --- the CLI in-process -----------------------------------------------------------------------------------------

#: What no CLI run may print: a Python traceback.
TRACEBACK: tuple[str, ...] = ("Traceback",)
#: What no CLI run on hostile input may print: a traceback, or the "internal error" paragraph of a crash.
NO_CRASH: tuple[str, ...] = ("Traceback", "internal error")
#: The report status each exit code stands for.
STATUS_OF_EXIT = {0: "pass", 1: "fail", 2: "error"}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str, forbid: Sequence[str] = TRACEBACK) -> tuple[int, str, str]:
    """Run ``lora-lock *argv`` in this process: its exit code, stdout and stderr.

    Each of ``forbid`` is asserted absent from both streams (a crash the user would see).
    """
    rc = main(list(argv))
    out, err = capsys.readouterr()
    for marker in forbid:
        assert marker not in out + err, out + err
    return rc, out, err


def verify_json(
    capsys: pytest.CaptureFixture[str],
    lock: Path | str,
    *args: str,
    device: str | None = "cpu",
    forbid: Sequence[str] = TRACEBACK,
    status_matches_exit: bool = True,
) -> tuple[int, dict[str, Any]]:
    """``verify LOCK --format json [--device DEVICE] *args``: the exit code and the parsed report.

    With ``status_matches_exit`` the report's ``status`` must be the one the exit code stands for.
    """
    device_args = ("--device", device) if device is not None else ()
    rc, out, err = run_cli(capsys, "verify", str(lock), "--format", "json", *device_args, *args, forbid=forbid)
    report: dict[str, Any] = json.loads(out)
    if status_matches_exit:
        assert report["status"] == STATUS_OF_EXIT[rc], (rc, out, err)
    return rc, report


# --- lock editors -----------------------------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file (a lock) at ``path``, parsed, unvalidated."""
    doc: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    return doc


def write_toml(path: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as TOML to ``path`` (no validation: tests write invalid locks on purpose)."""
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def edit_lock(path: Path, change: Callable[[dict[str, Any]], object], *, to: Path | None = None) -> Path:
    """Read the lock at ``path``, let ``change`` edit the parsed document in place, write it to ``to`` (default:
    back to ``path``); returns the written path."""
    doc = read_toml(path)
    change(doc)
    return write_toml(to if to is not None else path, doc)


# --- files --------------------------------------------------------------------------------------------------------

_CHUNK = 1 << 20


def copy_sparse(src: Path, dst: Path) -> Path:
    """Copy a file or directory tree keeping the holes of sparse files; returns ``dst``.

    ``shutil.copytree`` would write every zero (16 GB for one header-only Llama-3-8B base); only the data regions
    (``SEEK_DATA`` / ``SEEK_HOLE``) are copied here. Where the system cannot seek to data the file is copied whole.
    """
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for child in src.iterdir():
            copy_sparse(child, dst / child.name)
        return dst
    size = src.stat().st_size
    with src.open("rb") as fin, dst.open("wb") as fout:
        fd = fin.fileno()
        try:
            pos = 0
            while pos < size:
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                end = os.lseek(fd, start, os.SEEK_HOLE)
                fin.seek(start)
                fout.seek(start)
                remaining = end - start
                while remaining > 0:
                    chunk = fin.read(min(remaining, _CHUNK))
                    if not chunk:
                        break
                    fout.write(chunk)
                    remaining -= len(chunk)
                pos = end
        except (OSError, AttributeError):  # no SEEK_DATA on this system: a plain copy
            fin.seek(0)
            fout.seek(0)
            shutil.copyfileobj(fin, fout, _CHUNK)
        fout.truncate(size)
    return dst
