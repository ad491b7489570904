"""The probe's own load result: what real PEFT dropped, against the static prediction (lora_lock/probe/loaded.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lora_lock.findings import Category, Severity
from lora_lock.probe.loaded import (
    CODE_DISAGREES,
    CODE_DROPPED,
    LoadResult,
    Prediction,
    compare,
    load_result,
    loaded_findings,
)

#: A module no Llama block has; PEFT's load has no place for tensors under it.
PLANTED = "base_model.model.model.layers.0.self_attn.rotary_q"


def _planted_adapter(src: Path, dst: Path) -> Path:
    """A copy of a real PEFT adapter with one extra LoRA pair under a module the base lacks."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(str(dst / "adapter_model.safetensors"))
    weights[f"{PLANTED}.lora_A.weight"] = torch.zeros(8, 64)
    weights[f"{PLANTED}.lora_B.weight"] = torch.zeros(64, 8)
    save_file(weights, str(dst / "adapter_model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def planted(tiny_llama_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _planted_adapter(tiny_llama_adapter, tmp_path_factory.mktemp("planted") / "adapter")


def _session(base: Path, adapters: list[tuple[str, Path]]) -> object:
    from lora_lock.probe.effect import ProbeSession

    return ProbeSession(base, base, adapters, device="cpu")


@pytest.mark.slow
def test_real_peft_drops_the_planted_tensors_and_the_probe_reports_them(tiny_llama: Path, planted: Path) -> None:
    session = _session(tiny_llama, [("planted", planted)])
    found = loaded_findings(session, [("planted", planted)], tiny_llama)
    dropped = [f for f in found if f.code == CODE_DROPPED]
    assert len(dropped) == 1
    finding = dropped[0]
    assert finding.category is Category.EFFECT and finding.severity is Severity.ERROR
    assert finding.actual == "2 dropped"
    assert "model.layers.0.self_attn.rotary_q.lora_A.weight" in finding.message
    # The static check predicts the same silent drop (COMPAT-UNMATCHED): no tripwire.
    assert not [f for f in found if f.code == CODE_DISAGREES]


@pytest.mark.slow
def test_real_peft_load_result_names_the_file_keys(tiny_llama: Path, planted: Path) -> None:
    session = _session(tiny_llama, [("planted", planted)])
    peft_name = next(iter(session.model.peft_config))  # type: ignore[attr-defined]
    result = load_result(session.model, peft_name, planted, "cpu")  # type: ignore[attr-defined]
    assert result.dropped == (
        "model.layers.0.self_attn.rotary_q.lora_A.weight",
        "model.layers.0.self_attn.rotary_q.lora_B.weight",
    )
    assert result.untrained == ()


@pytest.mark.slow
def test_a_clean_adapter_gives_no_probe_load_findings(
    tiny_llama: Path, tiny_llama_adapter: Path, tiny_gpt2: Path, tiny_gpt2_adapter: Path
) -> None:
    for base, adapter in ((tiny_llama, tiny_llama_adapter), (tiny_gpt2, tiny_gpt2_adapter)):
        session = _session(base, [("clean", adapter)])
        assert loaded_findings(session, [("clean", adapter)], base) == []


@pytest.mark.slow
def test_the_lock_time_probe_reports_the_drop(tiny_llama: Path, planted: Path, tmp_path: Path) -> None:
    from lora_lock.probe.api import lock_behaviour

    result = lock_behaviour(
        tiny_llama,
        tiny_llama,
        [("planted", planted)],
        probe=True,
        prompts_file=None,
        golden=None,
        lock_dir=tmp_path,
        device="cpu",
        dtype="float32",
    )
    assert CODE_DROPPED in {f.code for f in result.findings}


@pytest.mark.slow
def test_a_drop_the_static_check_missed_is_a_tripwire(tiny_llama: Path, planted: Path) -> None:
    """The load result is real PEFT's; the prediction is what a wrong static model would have said."""
    session = _session(tiny_llama, [("planted", planted)])
    peft_name = next(iter(session.model.peft_config))  # type: ignore[attr-defined]
    loaded = load_result(session.model, peft_name, planted, "cpu")  # type: ignore[attr-defined]
    found = compare("planted", loaded, Prediction("applies", 0), "transformers 5, peft 0.21 (installed)")
    trip = [f for f in found if f.code == CODE_DISAGREES]
    assert len(trip) == 1 and trip[0].severity is Severity.WARNING
    assert trip[0].expected == "0 dropped tensors" and trip[0].actual == "2 dropped tensors"


def test_agreeing_predictions_give_no_tripwire() -> None:
    clean = LoadResult(dropped=(), untrained=())
    assert compare("a", clean, Prediction("applies", 0), "s") == []
    assert compare("a", clean, Prediction("unknown", None), "s") == []
    dropped = LoadResult(dropped=("x.lora_A.weight", "x.lora_B.weight"), untrained=())
    codes = [f.code for f in compare("a", dropped, Prediction("drops", 2), "s")]
    assert codes == [CODE_DROPPED]
    # A count that differs is a disagreement even when both say "drops".
    assert CODE_DISAGREES in {f.code for f in compare("a", dropped, Prediction("drops", 4), "s")}
    # "raises" is not compared: a load that raised never reaches this point.
    assert [f.code for f in compare("a", clean, Prediction("raises", None), "s")] == []
