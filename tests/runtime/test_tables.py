"""The shipped rule tables are exactly what the generator writes from the installed (pinned) libraries.

A bump of transformers or peft in constraints.txt without ``make rule-tables`` fails here. The generator also runs
its ``--check``: the static resolver must pick, for every buildable architecture, the transforms (in order and
scope) that transformers' own ``get_model_conversion_mapping`` returns.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

DATA = ROOT / "lora_lock" / "runtime" / "data"


@pytest.mark.slow
def test_regenerated_tables_are_byte_identical(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_rule_tables.py"), "--check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("transformers.json", "peft.json"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), f"{name} is stale: run make rule-tables"


def test_tables_record_the_pinned_versions() -> None:
    from lora_lock.runtime.tables import peft_table, transformers_table

    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    assert transformers_table().version == pins["transformers"]
    assert peft_table().version == pins["peft"]


def test_tables_are_canonical_json() -> None:
    import json

    for name in ("transformers.json", "peft.json"):
        raw = (DATA / name).read_bytes()
        assert raw.endswith(b"\n")
        assert json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode() + b"\n" == raw
