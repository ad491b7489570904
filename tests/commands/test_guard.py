"""What ``guard()``'s two modes catch, as the README states: the fast mode compares the base's weights by size
and header, so a same-size weight swap passes it; ``hash_weights=True`` hashes them and fails on it. A changed
header (a converted dtype) fails both."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lora_lock import LockViolation, guard
from lora_lock.commands.generate import generate


@pytest.fixture
def project(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    assert generate([root / "adapter"], root / "base", root / "lora.lock", probe=False).written
    return root


def _rewrite(weights: Path, change: str) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(weights), framework="np") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(weights))
    key = sorted(k for k in tensors if k.endswith("q_proj.weight"))[0]
    tensors[key] = tensors[key] * 1.01 if change == "values" else tensors[key].astype("float16")
    save_file(tensors, str(weights), metadata=metadata)


def test_a_same_size_weight_swap_passes_fast_mode_and_fails_hashed(project: Path) -> None:
    weights = project / "base" / "model.safetensors"
    size = weights.stat().st_size
    _rewrite(weights, "values")
    assert weights.stat().st_size == size
    report = guard(project / "lora.lock")  # fast: size and header unchanged, so it holds
    assert "BASE-SIZE-ONLY" in {f.code for f in report.findings}
    with pytest.raises(LockViolation) as caught:
        guard(project / "lora.lock", hash_weights=True)
    assert "BASE-FILE-CHANGED" in {f.code for f in caught.value.report.findings}


def test_a_changed_header_fails_fast_mode_too(project: Path) -> None:
    _rewrite(project / "base" / "model.safetensors", "dtype")
    with pytest.raises(LockViolation) as caught:
        guard(project / "lora.lock")
    codes = {f.code for f in caught.value.report.findings if f.severity.value == "error"}
    assert codes & {"BASE-FILE-CHANGED", "QUANT-DTYPE"}, codes
