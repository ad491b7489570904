"""Small truths of the probe: ties broken one way at lock and verify, a noise floor recorded at a precision that
does not depend on the thread count, the attention kernel compared, BOS as lm-evaluation-harness decides it, and
out-of-memory hints that name options of the command that ran."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lora_lock.commands.generate import generate
from lora_lock.lock.io import read as read_lock
from lora_lock.probe import gates
from tests.helpers import verify_json


def _codes(report: dict[str, Any]) -> set[str]:
    return {f["code"] for f in report["findings"]}


@pytest.fixture
def repo(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    return root


def _lock(root: Path, **kwargs: Any) -> Any:
    result = generate([root / "adapter"], root / "base", root / "lora.lock", device="cpu", probe=True, **kwargs)
    assert result.lock is not None, [f.to_dict() for f in result.report.findings]
    return result


# --- without a model ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("noise", "recorded"),
    [
        (0.0, 1e-6),
        (float("nan"), 1e-6),
        (9.65609e-08, 1e-6),
        (8.33089e-08, 1e-6),
        (1e-6, 1e-6),
        (1.2e-6, 2e-6),
        (3.0e-4, 3e-4),
        (3.01e-4, 4e-4),
        (9.5e-3, 1e-2),
        (0.42, 0.5),
    ],
)
def test_the_noise_floor_is_recorded_rounded_up_to_one_digit(noise: float, recorded: float) -> None:
    # The first two measured values are the noise of one lock made with 1 and with 2 CPU threads.
    assert gates.recorded_noise(noise) == recorded
    assert gates.recorded_noise(noise) >= (0.0 if noise != noise else noise)  # never below what was measured


def test_top_k_breaks_ties_as_argmax_does() -> None:
    torch = pytest.importorskip("torch")
    from lora_lock.probe.effect import top_k

    # Exact ties, as bf16 logits give: ids 3, 5 and 9 share the maximum.
    row = torch.full((12,), -10.0)
    row[[9, 3, 5]] = -0.5
    row[7] = -1.0
    logp = torch.stack([row, row.flip(0)])
    ids, values = top_k(logp, 4)
    assert [r[0] for r in ids] == logp.argmax(-1).tolist() == [3, 2]
    assert ids[0] == [3, 5, 9, 7] and values[0][:3] == [-0.5, -0.5, -0.5]


def test_out_of_memory_hints_name_options_of_the_command() -> None:
    from lora_lock.probe.effect import memory_hint

    assert "--no-probe" in memory_hint("generate", "x") and "--dtype bfloat16" in memory_hint("generate", "x")
    verify = memory_hint("verify", "use a device with more memory")
    assert "--skip effect,golden" in verify and "--no-probe" not in verify
    assert "generate the lock with --dtype bfloat16" in verify  # verify itself scores in the lock's dtype


# --- on the tiny Llama -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_unchanged_bfloat16_verify_reports_no_greedy_divergence(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bf16 logits tie often: the locked top-1 and the live one follow the same rule, so nothing diverges."""
    _lock(repo, dtype="bfloat16")
    for _ in range(2):
        rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect", status_matches_exit=False)
        assert rc == 0, report["findings"]
        assert "EFFECT-GREEDY" not in _codes(report), report["findings"]
        assert "EFFECT-OK" in _codes(report)


@pytest.mark.slow
def test_a_different_thread_count_does_not_rewrite_the_lock(repo: Path) -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _lock(repo)
        before = {p.name: p.read_bytes() for p in repo.glob("lora.lock*")}
        torch.set_num_threads(2)
        result = _lock(repo)
    finally:
        torch.set_num_threads(threads)
    assert result.written is False
    assert {p.name: p.read_bytes() for p in repo.glob("lora.lock*")} == before


@pytest.mark.slow
def test_another_attention_kernel_is_an_effect_finding(repo: Path) -> None:
    from lora_lock.probe.api import lock_probe, verify_probe
    from lora_lock.probe.effect import ProbeSession
    from lora_lock.probe.prompts import DEFAULT_PROMPTS

    adapters = [("adapter", repo / "adapter")]
    session = ProbeSession(repo / "base", repo / "base", adapters, device="cpu", dtype="float32")
    locked = lock_probe(session, adapters, DEFAULT_PROMPTS[:2])
    record = locked.record("lora.lock.probe.json")
    assert record.attn_implementation == session.runtime().attn_implementation
    same = verify_probe(session, record, locked.sidecar, adapters)
    assert "EFFECT-ATTN" not in {f.code for f in same}
    other = replace(record, attn_implementation="flash_attention_2")
    found = {f.code: f for f in verify_probe(session, other, locked.sidecar, adapters)}
    attn = found["EFFECT-ATTN"]
    assert attn.severity.value == "warning" and attn.expected == "flash_attention_2"
    assert attn.actual == session.runtime().attn_implementation


@pytest.mark.slow
def test_bos_is_added_once_as_lm_eval_decides(repo: Path) -> None:
    from lora_lock.probe.effect import ProbeSession

    session = ProbeSession(repo / "base", repo / "base", [("adapter", repo / "adapter")], device="cpu")
    bos = session.tokenizer.bos_token_id
    plain = session.encode("The dog is")
    assert plain[0] == bos and plain.count(bos) == 1
    rendered = session.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert rendered.startswith("<s>")
    ids = session.encode(rendered)
    assert ids.count(bos) == 1 and ids[0] == bos  # the template's BOS, no second one
    assert session.encode(rendered, special=True)[:2] == [bos, bos]  # what the tokenizer alone would do
    assert session.encode(rendered, generation=True) == ids


@pytest.mark.slow
def test_out_of_memory_at_verify_names_verify_options(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    _lock(repo)

    def too_large(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", too_large)
    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect", status_matches_exit=False)
    assert rc == 2
    (unusable,) = [f for f in report["findings"] if f["code"] == "INPUT-UNUSABLE"]
    assert "--skip effect,golden" in unusable["hint"] and "--no-probe" not in unusable["hint"]
    assert read_lock(repo / "lora.lock")["probe"]["dtype"] == "float32"
