"""``EFFECT-DRIFT`` shows the adapter's live effect next to the locked one, so a reader can tell "drifted but
as strong as before" from "drifted and weaker" without a second run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from lora_lock._cli import main
from lora_lock.commands.generate import generate


@pytest.mark.slow
def test_effect_drift_names_the_live_effect_and_ratio(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    from safetensors.numpy import load_file, save_file

    root = tmp_path / "project"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    lock = root / "lora.lock"
    assert generate([root / "adapter"], root / "base", lock, device="cpu").written
    weights = root / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: v * 1.1 if "lora_B" in k else v for k, v in tensors.items()}, str(weights), metadata={"format": "pt"})
    assert main(["verify", str(lock), "--only", "effect", "--format", "json", "--device", "cpu"]) == 1
    report = json.loads(capsys.readouterr().out)
    drift = next(f for f in report["findings"] if f["code"] == "EFFECT-DRIFT")
    match = re.search(
        r"its effect now: KL\(adapted ‖ base\) ([0-9.e-]+) → ([0-9.e-]+) \(ratio ([0-9.]+)\)", drift["message"]
    )
    assert match, drift["message"]
    locked, now, ratio = (float(g) for g in match.groups())
    locked_kl = next(r for r in _lock_rows(lock) if r["name"] == "adapter")["effect-kl"]
    assert locked == pytest.approx(locked_kl, rel=1e-3)
    assert now > locked  # lora_B × 1.1 strengthens the adapter
    assert ratio == pytest.approx(now / locked, rel=1e-2)
    assert "generate --from-lock" in drift["hint"]


def _lock_rows(lock: Path) -> list[dict[str, Any]]:
    from lora_lock.lock.io import read

    rows: list[dict[str, Any]] = read(lock)["probe"]["adapter"]
    return rows
