"""The adapter-effect probe on tiny real models: what ``generate`` records, and what ``verify`` finds when the
adapter, the base or the probe's own files change (and what it must not find when nothing changed).

Every lock is built once per module (``llama_locked``) and copied into ``tmp_path`` before a test changes anything.
The gates themselves are pure arithmetic and are unit-tested at the end without any model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lora_lock.commands.generate import generate
from lora_lock.lock.io import read as read_lock
from lora_lock.lock.model import Probe
from lora_lock.probe import gates
from lora_lock.probe.prompts import DEFAULT_PROMPTS, prompts_digest
from lora_lock.probe.sidecar import SIDECAR_FORMAT, sidecar_digest
from tests.helpers import ROOT, read_toml, run_cli, verify_json, write_toml

ADAPTER_FILE = "adapter_model.safetensors"
SIDECAR_NAME = re.compile(r"^lora\.lock\.probe-[0-9a-f]{12}\.json$")


# --- helpers -----------------------------------------------------------------------------------------------------


def findings(report: dict[str, Any], code: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [f for f in report["findings"] if f["code"] == code]
    return found


def only(report: dict[str, Any], code: str) -> dict[str, Any]:
    found = findings(report, code)
    assert len(found) == 1, (code, [(f["code"], f["message"]) for f in report["findings"]])
    return found[0]


def codes(report: dict[str, Any], category: str | None = None, severity: str | None = None) -> set[str]:
    return {
        f["code"]
        for f in report["findings"]
        if (category is None or f["category"] == category) and (severity is None or f["severity"] == severity)
    }


def edit_tensors(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a safetensors file through numpy (no torch), keeping its metadata; the file must change."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    before = path.read_bytes()
    with safe_open(str(path), framework="np") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)
    assert path.read_bytes() != before, "the edit did not change the file"


def widen_kv_heads(base: Path) -> None:
    """Twice the KV heads: k/v projections twice as wide, so an adapter on them no longer loads."""
    import numpy as np

    def widen(tensors: dict[str, Any]) -> None:
        for key in [k for k in tensors if k.endswith(("k_proj.weight", "v_proj.weight"))]:
            tensors[key] = np.concatenate([tensors[key], tensors[key]], axis=0)

    edit_tensors(base / "model.safetensors", widen)
    config_path = base / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["num_key_value_heads"] *= 2
    config_path.write_text(json.dumps(config), encoding="utf-8")


def scale_lora_b(factor: float) -> Callable[[dict[str, Any]], None]:
    def change(tensors: dict[str, Any]) -> None:
        for key in [k for k in tensors if ".lora_B." in k]:
            tensors[key] = (tensors[key].astype("float64") * factor).astype(tensors[key].dtype)

    return change


def probe_section(root: Path, lock: str = "lora.lock") -> dict[str, Any]:
    section: dict[str, Any] = read_lock(root / lock)["probe"]
    return section


def generate_cli(
    capsys: pytest.CaptureFixture[str], root: Path, *adapters: Path, output: str = "lora.lock", probe: bool = True
) -> None:
    """``lora-lock generate`` of ``adapters`` over ``root/base`` into ``root/output``, on the CPU."""
    args = [a for path in adapters for a in ("--adapter", str(path))]
    rc, _, err = run_cli(
        capsys, "generate", *args, "--base", str(root / "base"), "-o", str(root / output),
        *(("--device", "cpu") if probe else ("--no-probe",)),
    )  # fmt: skip
    assert rc == 0, err


def sidecars(root: Path) -> list[Path]:
    return sorted(root.glob("lora.lock.probe-*.json"))


def lock_llama(root: Path, **kwargs: Any) -> Any:
    result = generate([root / "adapter"], root / "base", root / "lora.lock", device="cpu", **kwargs)
    assert result.lock is not None, [f.to_dict() for f in result.report.findings]
    return result


# --- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_locked(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    """``base/``, ``adapter/``, ``lora.lock`` and its probe sidecar, generated once for the module. Read-only."""
    root = tmp_path_factory.mktemp("probe-llama")
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    result = lock_llama(root, probe=True)
    assert result.written
    assert not [f for f in result.report.findings if f.category.value == "effect"]  # no EFFECT-NONE
    return root


@pytest.fixture
def repo(llama_locked: Path, tmp_path: Path) -> Path:
    """A private copy of the locked repository for a test that changes files."""
    root = tmp_path / "repo"
    shutil.copytree(llama_locked, root)
    return root


# --- (1) what generate records -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_generate_records_probe_section_and_sidecar(llama_locked: Path) -> None:
    import jsonschema

    from lora_lock.lock.io import schema

    text = (llama_locked / "lora.lock").read_text(encoding="utf-8")
    lock = read_lock(llama_locked / "lora.lock")  # parses and validates
    jsonschema.Draft202012Validator(schema()).validate(lock)
    probe = lock["probe"]
    assert probe["prompts"] == len(DEFAULT_PROMPTS)
    assert probe["prompts-digest"] == prompts_digest(DEFAULT_PROMPTS)
    assert (
        probe["prompts-digest"]
        == "sha256:" + hashlib.sha256(json.dumps(list(DEFAULT_PROMPTS), ensure_ascii=False).encode("utf-8")).hexdigest()
    )
    assert (probe["positions"], probe["top-k"], probe["device"], probe["dtype"]) == (16, 8, "cpu", "float32")
    import torch

    assert probe["torch"] == str(torch.__version__)

    # The sidecar: next to the lock, named by and bound to its digest.
    assert SIDECAR_NAME.match(probe["sidecar"]), probe["sidecar"]
    sidecar = llama_locked / probe["sidecar"]
    assert sidecars(llama_locked) == [sidecar]
    raw = sidecar.read_bytes()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert probe["sidecar-digest"] == digest == sidecar_digest(raw.decode("utf-8"))
    assert probe["sidecar"] == f"lora.lock.probe-{digest[7:19]}.json"
    for content in (text, raw.decode("utf-8")):
        assert str(llama_locked) not in content  # portable: no absolute paths
    data = json.loads(raw)
    assert data["format"] == SIDECAR_FORMAT
    assert data["prompts"] == list(DEFAULT_PROMPTS)
    assert sorted(data["adapters"]) == ["adapter"]
    prints = data["adapters"]["adapter"]
    assert len(prints) == len(DEFAULT_PROMPTS)
    agree = total = 0
    for fp in prints:
        assert fp["prompt_ids"][0] == 1  # BOS of the tiny tokenizer
        assert len(fp["continuation"]) == 16
        for side in ("adapted", "base"):
            assert len(fp[side]["ids"]) == len(fp[side]["logps"]) == 16
            for ids, lps in zip(fp[side]["ids"], fp[side]["logps"], strict=True):
                assert len(ids) == len(lps) == 8 and len(set(ids)) == 8
                assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
        # The continuation is the adapter's own greedy choice: the teacher-forced top-1 agrees with it.
        agree += sum(ids[0] == tok for ids, tok in zip(fp["adapted"]["ids"], fp["continuation"], strict=True))
        total += 16
    assert agree >= 0.95 * total

    # The measured effect: the trained adapter really changes outputs, and the stack's own noise is tiny.
    (row,) = probe["adapter"]
    assert row["name"] == "adapter"
    assert row["effect-kl"] > 0.01
    assert 0 <= row["noise-kl"] < 1e-5
    assert row["tolerance"] == gates.tolerance(row["noise-kl"]) == gates.FLOOR
    mean = sum(fp["effect_kl"] for fp in prints) / len(prints)
    assert math.isclose(row["effect-kl"], mean, rel_tol=1e-4)
    assert max(fp["noise_kl"] for fp in prints) == pytest.approx(row["noise-kl"], rel=1e-5)


@pytest.mark.slow
def test_generate_report_says_the_effect_was_checked(repo: Path) -> None:
    report = lock_llama(repo, probe=True).report.to_dict()
    assert report["checked"].get("effect") == "pass", report["checked"]


@pytest.mark.slow
def test_locked_effect_matches_an_independent_measurement(llama_locked: Path) -> None:
    """Re-measure KL(adapted ‖ base) of the first prompt with plain transformers + PEFT (not the probe's code)."""
    import torch
    from peft import PeftModel

    from lora_lock.testing.tiny import load_causal_lm

    fp = json.loads((llama_locked / probe_section(llama_locked)["sidecar"]).read_text(encoding="utf-8"))["adapters"][
        "adapter"
    ][0]
    model: Any = PeftModel.from_pretrained(load_causal_lm(llama_locked / "base"), str(llama_locked / "adapter"))
    model.eval()
    ids, cont = fp["prompt_ids"], fp["continuation"]
    seq = torch.tensor([ids + cont])
    with torch.no_grad():
        adapted = torch.log_softmax(model(input_ids=seq).logits[0].float(), dim=-1)
        with model.disable_adapter():
            base = torch.log_softmax(model(input_ids=seq).logits[0].float(), dim=-1)
    rows = slice(len(ids) - 1, len(ids) + len(cont) - 1)
    kl = float((adapted[rows].exp() * (adapted[rows] - base[rows])).sum(-1).mean())
    assert kl == pytest.approx(fp["effect_kl"], rel=1e-3)
    top = adapted[rows].topk(8, dim=-1)
    assert top.indices.tolist() == fp["adapted"]["ids"]
    flat = [v for row in fp["adapted"]["logps"] for v in row]
    assert [v for row in top.values.tolist() for v in row] == pytest.approx(flat, abs=1e-4)


@pytest.mark.slow
def test_probe_progress_counts_every_forward_and_matches_the_cli_lock(llama_locked: Path) -> None:
    """In process, with a progress callback: the steps rise to their total, and the fingerprints are the ones the
    CLI wrote (the progress bar changes nothing)."""
    from lora_lock.probe.api import lock_probe, verify_probe
    from lora_lock.probe.effect import ProbeSession

    adapters = [("adapter", llama_locked / "adapter")]
    session = ProbeSession(llama_locked / "base", llama_locked / "base", adapters, device="cpu")
    seen: list[tuple[int, int]] = []
    locked = lock_probe(session, adapters, DEFAULT_PROMPTS, step=lambda done, total: seen.append((done, total)))
    n = len(DEFAULT_PROMPTS)
    assert seen[0] == (n, 3 * n) and seen[-1] == (3 * n, 3 * n)  # the batched decoding, then one per forward
    assert [d for d, _ in seen] == list(range(n, 3 * n + 1))
    lock = probe_section(llama_locked)
    assert [row.to_dict() for row in locked.rows] == lock["adapter"]
    stored = json.loads((llama_locked / lock["sidecar"]).read_text(encoding="utf-8"))
    assert locked.sidecar == stored

    seen.clear()
    found = verify_probe(
        session, Probe.from_dict(lock), stored, adapters, step=lambda done, total: seen.append((done, total))
    )
    assert seen == [(d, 2 * n) for d in range(1, 2 * n + 1)]
    assert [f.code for f in found] == ["EFFECT-OK"]


@pytest.mark.slow
def test_batched_greedy_continuations_equal_one_prompt_decoding(llama_locked: Path) -> None:
    """The lock decodes all prompts together (left-padded, KV cache); each continuation must be exactly what
    decoding that prompt alone, without a cache, gives — recomputed here with plain transformers + PEFT."""
    import torch
    from peft import PeftModel

    from lora_lock.testing.tiny import load_causal_lm

    prints = json.loads((llama_locked / probe_section(llama_locked)["sidecar"]).read_text(encoding="utf-8"))[
        "adapters"
    ]["adapter"]
    assert len({len(fp["prompt_ids"]) for fp in prints}) > 1  # the batch really was padded
    model: Any = PeftModel.from_pretrained(load_causal_lm(llama_locked / "base"), str(llama_locked / "adapter"))
    model.eval()
    with torch.no_grad():
        for fp in prints:
            seq = list(fp["prompt_ids"])
            for _ in range(len(fp["continuation"])):
                seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
            assert seq[len(fp["prompt_ids"]) :] == fp["continuation"]


# --- (2) determinism ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_regenerating_is_byte_identical_and_does_not_rewrite(repo: Path) -> None:
    sidecar = repo / probe_section(repo)["sidecar"]
    past = time.time_ns() - 3_600 * 10**9
    for path in (repo / "lora.lock", sidecar):
        os.utime(path, ns=(past, past))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (repo / "lora.lock", sidecar)}

    result = lock_llama(repo, probe=True)

    assert result.written is False
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before
    assert sidecars(repo) == [sidecar]
    assert not list(repo.glob(".*.tmp"))


# --- (3) no false alarms -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_unchanged_setup_verifies_three_times(llama_locked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = probe_section(llama_locked)["adapter"][0]["effect-kl"]
    for _ in range(3):
        rc, report = verify_json(capsys, llama_locked / "lora.lock")
        assert rc == 0, report["findings"]
        assert report["checked"]["effect"] == "pass"
        assert codes(report, "effect") <= {"EFFECT-OK", "EFFECT-GREEDY"}
        assert "EFFECT-GREEDY" not in codes(report)  # the same stack reproduces the greedy continuations
        ok = only(report, "EFFECT-OK")
        assert ok["severity"] == "info" and ok["subject"] == "adapter"
        assert f"(locked {locked:.4g})" in ok["message"]
        drift = float(re.search(r"drift (\S+) ≤", ok["message"]).group(1))  # type: ignore[union-attr]
        assert drift < 1e-6


# --- (4)-(6) adapter weight changes ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("factor", "kind"), [(0.5, "reduced"), (2.0, "amplified")])
def test_scaled_lora_b_changes_the_effect(
    repo: Path, capsys: pytest.CaptureFixture[str], factor: float, kind: str
) -> None:
    locked = probe_section(repo)["adapter"][0]["effect-kl"]
    edit_tensors(repo / "adapter" / ADAPTER_FILE, scale_lora_b(factor))

    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")

    assert rc == 1
    assert report["checked"]["effect"] == "fail"
    changed = only(report, "EFFECT-CHANGED")
    assert changed["severity"] == "error" and changed["category"] == "effect"
    assert f"effect is {kind}" in changed["message"]
    assert changed["expected"] == f"{locked:.4g}"
    ratio = float(re.search(r"\(ratio ([0-9.e+-]+),", changed["message"]).group(1))  # type: ignore[union-attr]
    assert ratio == pytest.approx(float(changed["actual"]) / locked, rel=2e-3)
    assert (ratio < gates.RATIO_BAND[0]) if kind == "reduced" else (ratio > gates.RATIO_BAND[1])
    assert f"KL(adapted ‖ base) {locked:.4g} → {changed['actual']}" in changed["message"]
    assert "allowed 0.8–1.25" in changed["message"]
    assert changed["hint"]
    assert "EFFECT-NONE" not in codes(report)


@pytest.mark.slow
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_ten_percent_scaling_stays_in_the_ratio_band_but_drifts(
    repo: Path, capsys: pytest.CaptureFixture[str], factor: float
) -> None:
    """README: ±10 % scaling stays inside the effect-ratio band; the adapted-drift gate still sees it."""
    edit_tensors(repo / "adapter" / ADAPTER_FILE, scale_lora_b(factor))

    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")

    assert rc == 1
    assert "EFFECT-CHANGED" not in codes(report)
    drift = only(report, "EFFECT-DRIFT")
    assert "the adapter itself changed" in drift["message"]


@pytest.mark.slow
def test_zeroed_lora_b_has_no_effect(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_tensors(repo / "adapter" / ADAPTER_FILE, scale_lora_b(0.0))

    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")

    assert rc == 1
    none = only(report, "EFFECT-NONE")
    assert none["severity"] == "error"
    assert "bitwise identical" in none["message"]
    assert none["hint"] and "lora_B" in none["hint"]
    assert "EFFECT-CHANGED" not in codes(report)  # one finding for one cause, not "reduced" as well
    assert "EFFECT-OK" not in codes(report)
    # The base model continues the prompts its own way: reported (info), not gated.
    greedy = only(report, "EFFECT-GREEDY")
    assert greedy["severity"] == "info" and "reported, not gated" in greedy["message"]


@pytest.mark.slow
def test_generate_warns_when_the_adapter_does_nothing_at_lock_time(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_tensors(repo / "adapter" / ADAPTER_FILE, scale_lora_b(0.0))
    monkeypatch.chdir(repo)

    rc, _, err = run_cli(capsys, "generate", "--adapter", "adapter", "--base", "base", "--device", "cpu")

    assert rc == 0, err
    assert "warning: EFFECT-NONE" in err
    (row,) = probe_section(repo)["adapter"]
    assert row["effect-kl"] == 0

    # Unchanged, verify agrees with generate: still a warning, not a new failure.
    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")
    assert rc == 0, report["findings"]
    none = only(report, "EFFECT-NONE")
    assert none["severity"] == "warning" and "(as at lock time)" in none["message"]


@pytest.mark.slow
def test_tiny_adapter_perturbation_is_within_the_noise(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    def nudge(tensors: dict[str, Any]) -> None:
        key = sorted(k for k in tensors if ".lora_A." in k)[0]
        tensors[key] = (tensors[key].astype(np.float64) * (1 + 1e-7)).astype(tensors[key].dtype)

    edit_tensors(repo / "adapter" / ADAPTER_FILE, nudge)

    rc, report = verify_json(capsys, repo / "lora.lock")
    assert rc == 1  # the bytes changed: the adapter category says so ...
    assert "ADAPTER-FILE-CHANGED" in codes(report, "adapter", "error")
    assert report["checked"]["effect"] == "pass"  # ... but the behaviour did not change

    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")
    assert rc == 0, report["findings"]
    assert codes(report, "effect", "error") == set()
    assert "EFFECT-OK" in codes(report)


# --- (7)-(8) base change vs adapter change -----------------------------------------------------------------------


def _scale_base(root: Path, select: Callable[[str], bool], factor: float) -> None:
    def change(tensors: dict[str, Any]) -> None:
        keys = [k for k in tensors if select(k)]
        assert keys
        for key in keys:
            tensors[key] = (tensors[key].astype("float64") * factor).astype(tensors[key].dtype)

    edit_tensors(root / "base" / "model.safetensors", change)


@pytest.mark.slow
def test_base_weight_change_is_attributed_to_the_base(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _scale_base(repo, lambda k: k == "model.layers.0.mlp.down_proj.weight", 1.5)

    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")

    assert rc == 1
    base_drift = only(report, "EFFECT-BASE-DRIFT")
    assert base_drift["severity"] == "warning"
    assert float(base_drift["actual"]) > gates.FLOOR
    drift = only(report, "EFFECT-DRIFT")
    assert "the base or the stack moved too" in drift["message"]
    assert "the adapter itself changed" not in drift["message"]

    rc, report = verify_json(capsys, repo / "lora.lock")
    assert report["checked"]["base"] == "fail"
    assert report["checked"]["adapter"] == "pass"


@pytest.mark.slow
def test_base_only_change_is_never_blamed_on_the_adapter(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """lm_head x 1.05 (a base file; the adapter bytes are untouched): the adapted pass drifts just over the
    tolerance, the base pass just under it. The message must not say "the adapter itself changed"."""
    _scale_base(repo, lambda k: k == "lm_head.weight", 1.05)

    _, report = verify_json(capsys, repo / "lora.lock")

    assert report["checked"]["adapter"] == "pass"
    assert report["checked"]["base"] == "fail"
    drift = only(report, "EFFECT-DRIFT")  # the adapted pass moved beyond the tolerance ...
    assert "the adapter itself changed" not in drift["message"]  # ... and so did the base pass, if less
    assert "the base or the stack moved too" in drift["message"]


@pytest.mark.slow
def test_changed_adapter_is_attributed_to_the_adapter(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    def randomise(tensors: dict[str, Any]) -> None:
        rng = np.random.default_rng(0)
        keys = [k for k in tensors if ".layers.1." in k and ".lora_A." in k]
        assert len(keys) == 7
        for key in keys:
            std = float(tensors[key].std())
            tensors[key] = (rng.standard_normal(tensors[key].shape) * 2 * std).astype(tensors[key].dtype)

    edit_tensors(repo / "adapter" / ADAPTER_FILE, randomise)

    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")

    assert rc == 1
    drift = only(report, "EFFECT-DRIFT")
    assert drift["severity"] == "error"
    assert "the base pass is unchanged, so the adapter itself changed" in drift["message"]
    assert float(drift["actual"]) > float(drift["expected"].removeprefix("≤ "))
    assert "EFFECT-BASE-DRIFT" not in codes(report)
    flip = only(report, "EFFECT-FLIP")
    assert flip["severity"] == "error"
    assert int(flip["actual"]) >= 1 and flip["expected"] == "0"
    assert f"{flip['actual']} confident top-1 prediction" in flip["message"]


# --- (9) custom probe prompts ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "prompts.txt",
            "Hello there\n\n  an indented prompt\nThe fox is\n",
            ("Hello there", "  an indented prompt", "The fox is"),
        ),
        (
            "prompts.jsonl",
            '{"prompt": "def f(x):\\n    return"}\n\n{"prompt": "Der Fuchs", "id": 2}\n',
            ("def f(x):\n    return", "Der Fuchs"),
        ),
    ],
)
def test_custom_probe_prompts_are_recorded(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    content: str,
    expected: tuple[str, ...],
) -> None:
    (repo / name).write_text(content, encoding="utf-8")
    monkeypatch.chdir(repo)

    rc, _, err = run_cli(
        capsys, "generate", "--adapter", "adapter", "--base", "base", "--probe-prompts", name, "--device", "cpu"
    )

    assert rc == 0, err
    probe = probe_section(repo)
    assert probe["prompts"] == len(expected)
    assert (
        probe["prompts-digest"]
        == "sha256:" + hashlib.sha256(json.dumps(list(expected), ensure_ascii=False).encode("utf-8")).hexdigest()
    )
    (sidecar,) = sidecars(repo)  # the default-prompt sidecar was replaced
    assert sidecar.name == probe["sidecar"]
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    assert data["prompts"] == list(expected)
    assert len(data["adapters"]["adapter"]) == len(expected)

    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")
    assert rc == 0, report["findings"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("blank.txt", "\n   \n\t\n", "no probe prompts in the file"),
        ("blank.jsonl", "\n\n", "no probe prompts in the file"),
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": \n', "bad.jsonl:2: not valid JSON"),
        ("nofield.jsonl", '{"prompt": "ok"}\n{"text": "x"}\n', "nofield.jsonl:2: field `prompt` must be a string"),
        ("missing.txt", None, "cannot read the probe prompts"),
    ],
)
def test_unusable_probe_prompts_exit_2(
    tmp_path: Path,
    tiny_llama: Path,
    tiny_llama_adapter: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    content: str | None,
    message: str,
) -> None:
    shutil.copytree(tiny_llama, tmp_path / "base")
    shutil.copytree(tiny_llama_adapter, tmp_path / "adapter")
    if content is not None:
        (tmp_path / name).write_text(content, encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    rc, _, err = run_cli(capsys, "generate", "--adapter", "adapter", "--base", "base", "--probe-prompts", name)

    assert rc == 2
    assert message in err
    assert name in err
    if "blank" in name:
        assert "hint: one prompt per line" in err
    assert not (tmp_path / "lora.lock").exists()
    assert sidecars(tmp_path) == []


@pytest.mark.slow
def test_a_base_the_adapter_no_longer_fits_reports_compat_and_skips_the_probe(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The base gains KV heads (k/v projections twice as wide): PEFT would refuse to load the adapter, so the
    report carries the compat errors and says the behaviour checks were not run — no internal error."""
    widen_kv_heads(repo / "base")

    rc, report = verify_json(capsys, repo / "lora.lock")

    assert rc == 1, report["findings"]
    assert "COMPAT-SHAPE" in codes(report, "compat", "error")
    not_run = only(report, "EFFECT-NOT-RUN")
    assert "for adapter adapter: PEFT cannot load it onto this base (COMPAT-SHAPE" in not_run["message"]
    assert report["checked"]["effect"] == "skipped"

    # Asked for the effect alone, the load itself fails: unusable input with PEFT's reason, still no traceback.
    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")
    assert rc == 2
    unusable = only(report, "INPUT-UNUSABLE")["message"]
    assert "cannot load the model and adapter for the probe" in unusable and "size mismatch" in unusable


def test_only_the_adapter_that_no_longer_fits_skips_the_probe(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two adapters over one base; the base's KV heads change. ``full`` (on k/v too) cannot load any more and is
    named in its compat errors and its not-run warning; ``qo`` (q/o only) still loads and is still probed."""
    shutil.copytree(tiny_llama, tmp_path / "base")
    shutil.copytree(tiny_llama_adapter, tmp_path / "full")
    shutil.copytree(tiny_llama_adapter, tmp_path / "qo")

    def keep_q_and_o(tensors: dict[str, Any]) -> None:
        for key in [k for k in tensors if not re.search(r"\.(q_proj|o_proj)\.", k)]:
            del tensors[key]

    edit_tensors(tmp_path / "qo" / ADAPTER_FILE, keep_q_and_o)
    config_path = tmp_path / "qo" / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["target_modules"] = ["q_proj", "o_proj"]
    config_path.write_text(json.dumps(config), encoding="utf-8")
    generate_cli(capsys, tmp_path, tmp_path / "full", tmp_path / "qo")
    # A copy of the repository without ``full``: its source is unusable input, and ``qo`` is still probed.
    other = tmp_path.parent / f"{tmp_path.name}-without-full"
    shutil.copytree(tmp_path, other)
    shutil.rmtree(other / "full")
    rc, report = verify_json(capsys, other / "lora.lock")
    assert rc == 2, report["findings"]
    assert "for adapter full: its source could not be read" in only(report, "EFFECT-NOT-RUN")["message"]
    assert {f["subject"] for f in findings(report, "EFFECT-OK")} == {"qo"}

    widen_kv_heads(tmp_path / "base")

    rc, report = verify_json(capsys, tmp_path / "lora.lock")

    assert rc == 1, report["findings"]
    shape = findings(report, "COMPAT-SHAPE")
    assert shape and all(f["message"].startswith("adapter full: ") for f in shape)
    not_run = only(report, "EFFECT-NOT-RUN")
    assert "for adapter full: PEFT cannot load it onto this base (COMPAT-SHAPE" in not_run["message"]
    probed = {f["subject"] for f in report["findings"] if f["category"] == "effect" and f["code"] != "EFFECT-NOT-RUN"}
    assert probed == {"qo"}, report["findings"]
    assert report["checked"]["effect"] != "skipped"


@pytest.mark.slow
def test_a_probe_prompt_longer_than_the_position_table_exits_2(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "long.txt").write_text("short prompt\n" + "the fox " * 200 + "\n", encoding="utf-8")
    monkeypatch.chdir(repo)
    rc, _, err = run_cli(capsys, "generate", "--adapter", "adapter", "--base", "base", "--probe-prompts", "long.txt")
    assert rc == 2
    assert "probe prompt 2:" in err and "exceed the model's 256 positions" in err


@pytest.mark.slow
def test_non_finite_logits_are_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """float16 logits that overflow would make every KL NaN, and NaN passes no gate: generate refuses them."""
    _scale_base(repo, lambda k: k == "lm_head.weight", 1e5)
    rc, _, err = run_cli(
        capsys, "generate", "--adapter", str(repo / "adapter"), "--base", str(repo / "base"),
        "-o", str(repo / "half.lock"), "--dtype", "float16", "--device", "cpu",
    )  # fmt: skip
    assert rc == 2
    assert "logits are not finite in float16" in err and "--dtype" in err
    assert not (repo / "half.lock").exists()


@pytest.mark.slow
def test_prompts_decode_in_bounded_batches_with_the_same_continuations(
    llama_locked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lora_lock.probe import effect

    adapters = [("adapter", llama_locked / "adapter")]
    session = effect.ProbeSession(llama_locked / "base", llama_locked / "base", adapters, device="cpu")
    encoded = [session.encode(p) for p in DEFAULT_PROMPTS]
    whole = [tokens for tokens, _ in session.greedy("adapter", encoded, 16)]
    calls: list[int] = []
    decode = session._decode

    def counted(prompts: Any, *args: Any) -> Any:
        calls.append(len(prompts))
        return decode(prompts, *args)

    monkeypatch.setattr(effect, "DECODE_BATCH", 3)
    monkeypatch.setattr(session, "_decode", counted)
    assert [tokens for tokens, _ in session.greedy("adapter", encoded, 16)] == whole
    assert calls == [3, 3, 2]


@pytest.mark.slow
def test_regenerating_after_a_change_replaces_the_sidecar(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (old,) = sidecars(repo)
    edit_tensors(repo / "adapter" / ADAPTER_FILE, scale_lora_b(0.5))
    assert verify_json(capsys, repo / "lora.lock", "--only", "effect")[0] == 1

    result = lock_llama(repo, probe=True)

    assert result.written
    (new,) = sidecars(repo)
    assert new != old and not old.exists()
    assert new.name == probe_section(repo)["sidecar"]
    rc, report = verify_json(capsys, repo / "lora.lock")
    assert rc == 0, report["findings"]


@pytest.mark.slow
def test_two_locks_in_one_directory_keep_their_own_sidecars(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (first,) = sidecars(repo)
    result = generate([repo / "adapter"], repo / "base", repo / "other.lock", device="cpu", probe=True)
    assert result.written
    other = read_lock(repo / "other.lock")["probe"]
    assert other["sidecar"].startswith("other.lock.probe-")
    assert (repo / other["sidecar"]).is_file()
    assert first.is_file()  # regenerating other.lock never touches lora.lock's fingerprints
    assert other["sidecar-digest"] == probe_section(repo)["sidecar-digest"]  # same inputs, same fingerprints
    assert verify_json(capsys, repo / "lora.lock", "--only", "effect")[0] == 0
    assert verify_json(capsys, repo / "other.lock", "--only", "effect")[0] == 0


@pytest.mark.slow
def test_bfloat16_probe_records_its_dtype_and_verifies(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock_llama(repo, probe=True, dtype="bfloat16")

    probe = probe_section(repo)
    assert probe["dtype"] == "bfloat16"
    (row,) = probe["adapter"]
    assert row["effect-kl"] > 0.01
    assert row["tolerance"] == gates.tolerance(row["noise-kl"])
    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")
    assert rc == 0, report["findings"]


def test_a_model_too_large_for_the_device_is_a_clear_error_with_its_size(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allocator fails while the base loads (as on a GPU that is too small): exit 2, the device, and what the
    weights need in the dtype they load in, counted from the safetensors headers."""
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    def too_large(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", too_large)
    params = sum(t.size for t in load_file(str(repo / "base" / "model.safetensors")).values())

    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")

    assert rc == 2
    message = only(report, "INPUT-UNUSABLE")["message"]
    assert "the model does not fit on cpu" in message
    assert f"{params:,} parameters: {params * 4 / 2**30:.2f} GiB in float32" in message


# --- (10) non-causal adapters ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_adapter_of_a_task_type_without_a_probe_is_named_and_not_probed(
    tmp_path: Path,
    tiny_llama: Path,
    tiny_llama_adapter: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shutil.copytree(tiny_llama, tmp_path / "base")
    shutil.copytree(tiny_llama_adapter, tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["task_type"] = "SPEECH_TO_TEXT"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    rc, out, err = run_cli(capsys, "generate", "--adapter", "adapter", "--base", "base", "--probe")
    assert rc == 0, err
    assert "EFFECT-TASK" in out + err and "SPEECH_TO_TEXT" in out + err  # named, never a silent skip
    assert "probe" not in read_lock(tmp_path / "lora.lock")
    (tmp_path / "lora.lock").unlink()

    rc, _, err = run_cli(capsys, "generate", "--adapter", "adapter", "--base", "base", "--no-probe")
    assert rc == 0, err
    assert "probe" not in read_lock(tmp_path / "lora.lock")


# --- (11) no probe stack -----------------------------------------------------------------------------------------


def _hide_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        if name == "torch" or name.startswith("torch."):
            return None
        return real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.slow
def test_verify_without_the_probe_stack_reports_not_run(
    llama_locked: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _hide_torch(monkeypatch)

    rc, report = verify_json(capsys, llama_locked / "lora.lock")

    assert rc == 0, report["findings"]
    not_run = only(report, "EFFECT-NOT-RUN")
    assert not_run["severity"] == "warning" and not_run["category"] == "effect"
    assert "torch" in not_run["message"]
    assert "pip install 'lora-lock[probe]'" in not_run["hint"] and "--skip effect,golden" in not_run["hint"]
    assert report["checked"]["effect"] == "skipped"
    assert report["checked"]["golden"] == "skipped"
    for cat in ("base", "tokenizer", "adapter", "compat", "quantization", "environment"):
        assert report["checked"][cat] == "pass", cat

    # Nothing that was asked for could run: not a pass (exit 2, the effect category named as not run).
    rc, report = verify_json(capsys, llama_locked / "lora.lock", "--only", "effect")
    assert rc == 2
    assert "EFFECT-NOT-RUN" in codes(report)


@pytest.mark.slow
def test_generate_without_the_probe_stack(
    tmp_path: Path,
    tiny_llama: Path,
    tiny_llama_adapter: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shutil.copytree(tiny_llama, tmp_path / "base")
    shutil.copytree(tiny_llama_adapter, tmp_path / "adapter")
    monkeypatch.chdir(tmp_path)
    _hide_torch(monkeypatch)

    rc, _, err = run_cli(capsys, "generate", "--adapter", "adapter", "--base", "base")  # default: probe when installed
    assert rc == 0, err
    assert "probe" not in read_lock(tmp_path / "lora.lock")
    assert sidecars(tmp_path) == []

    rc, _, err = run_cli(capsys, "generate", "--adapter", "adapter", "--base", "base", "--probe", "-o", "p.lock")
    assert rc == 2
    assert "torch" in err and "pip install 'lora-lock[probe]'" in err
    assert not (tmp_path / "p.lock").exists()


# --- (12) the sidecar --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_hand_edited_sidecar_is_unusable_input(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sidecar = repo / probe_section(repo)["sidecar"]
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    data["adapters"]["adapter"][0]["adapted"]["logps"][0][0] = -0.001
    sidecar.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")

    rc, report = verify_json(capsys, repo / "lora.lock")

    assert rc == 2
    unusable = only(report, "INPUT-UNUSABLE")
    assert str(sidecar) in unusable["message"]
    assert "do not match the digest in the lock" in unusable["message"]
    assert unusable["hint"]
    assert "EFFECT-NOT-RUN" in codes(report)
    assert report["checked"]["effect"] == "error"
    assert report["checked"]["adapter"] == "pass"

    rc, report = verify_json(capsys, repo / "lora.lock", "--skip", "effect")
    assert rc == 0, report["findings"]


@pytest.mark.slow
def test_deleted_sidecar_is_unusable_input(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sidecar = repo / probe_section(repo)["sidecar"]
    sidecar.unlink()

    rc, report = verify_json(capsys, repo / "lora.lock", "--only", "effect")

    assert rc == 2
    unusable = only(report, "INPUT-UNUSABLE")
    assert sidecar.name in unusable["message"]
    assert "cannot be read" in unusable["message"]
    assert "EFFECT-NOT-RUN" in codes(report)
    assert unusable["hint"] and "regenerate" in unusable["hint"]


class _FakeCuda:
    """What ``torch.cuda`` answers on a GPU runner (the device choice is tested without one)."""

    def __init__(self, count: int, bf16: bool) -> None:
        self.count, self.bf16 = count, bf16

    def is_available(self) -> bool:
        return self.count > 0

    def device_count(self) -> int:
        return self.count

    def is_bf16_supported(self) -> bool:
        return self.bf16


def test_device_and_dtype_choice_on_a_gpu_runner() -> None:
    from types import SimpleNamespace

    from lora_lock.errors import InputError
    from lora_lock.probe.effect import _device, _dtype_name

    two_gpus = SimpleNamespace(cuda=_FakeCuda(2, bf16=True))
    v100 = SimpleNamespace(cuda=_FakeCuda(1, bf16=False))
    cpu_only = SimpleNamespace(cuda=_FakeCuda(0, bf16=False))
    assert _device(two_gpus, "auto") == "cuda" and _device(cpu_only, "auto") == "cpu"
    assert _device(two_gpus, "cuda:1") == "cuda:1" and _device(two_gpus, "cpu") == "cpu"
    assert _dtype_name(two_gpus, "cuda:1", "auto") == "bfloat16"  # Ampere and later
    assert _dtype_name(v100, "cuda", "auto") == "float16"  # no bf16: half precision, as serving stacks do
    assert _dtype_name(cpu_only, "cpu", "auto") == "float32"
    assert _dtype_name(v100, "cuda", "float32") == "float32"
    for torch, device, expected in (
        (two_gpus, "cuda:2", "torch sees 2 CUDA device(s) here"),
        (two_gpus, "cuda:x", "torch sees 2 CUDA device(s) here"),
        (cpu_only, "cuda", "torch sees no CUDA device here"),
        (cpu_only, "cuda:0", "torch sees no CUDA device here"),
        (two_gpus, "mps", "expected auto, cpu, cuda or cuda:N"),
    ):
        with pytest.raises(InputError, match=re.escape(expected)):
            _device(torch, device)
    with pytest.raises(InputError, match="expected auto, float32, bfloat16 or float16"):
        _dtype_name(two_gpus, "cuda", "int8")


@pytest.mark.slow
def test_asking_for_cuda_without_a_gpu_exits_2(llama_locked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc, _, err = run_cli(
        capsys, "generate", "--adapter", str(llama_locked / "adapter"), "--base", str(llama_locked / "base"),
        "--output", str(llama_locked / "cuda.lock"), "--device", "cuda",
    )  # fmt: skip
    assert rc == 2 and "torch sees no CUDA device here" in err
    assert not (llama_locked / "cuda.lock").exists()
    rc, out, _ = run_cli(capsys, "verify", str(llama_locked / "lora.lock"), "--format", "json", "--device", "cuda:0")
    report = json.loads(out)
    assert rc == 2 and "torch sees no CUDA device here" in only(report, "INPUT-UNUSABLE")["message"]
    assert report["checked"]["effect"] == "error"


@pytest.mark.slow
def test_device_mismatch_is_a_warning(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = repo / "lora.lock"
    doc = read_toml(path)
    doc["probe"]["device"] = "cuda"
    write_toml(path, doc)

    rc, report = verify_json(capsys, path, "--only", "effect")

    assert rc == 0, report["findings"]
    device = only(report, "EFFECT-DEVICE")
    assert device["severity"] == "warning"
    assert (device["expected"], device["actual"]) == ("cuda", "cpu")


# --- (13) several adapters, one model load -----------------------------------------------------------------------


@pytest.mark.slow
def test_two_adapters_are_probed_with_one_model_load(
    tmp_path: Path,
    tiny_llama: Path,
    tiny_llama_adapter: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    shutil.copytree(tiny_llama, tmp_path / "base")
    shutil.copytree(tiny_llama_adapter, tmp_path / "alpha")
    shutil.copytree(tiny_llama_adapter, tmp_path / "beta")
    edit_tensors(tmp_path / "beta" / ADAPTER_FILE, scale_lora_b(0.5))

    bases: list[str] = []
    attached: list[str] = []
    real_load = AutoModelForCausalLM.from_pretrained
    real_attach = PeftModel.load_adapter

    def load(*args: Any, **kwargs: Any) -> Any:
        bases.append(str(args[0]))
        return real_load(*args, **kwargs)

    def attach(self: Any, model_id: Any, adapter_name: str, *args: Any, **kwargs: Any) -> Any:
        attached.append(Path(str(model_id)).name)  # the adapter directory (PEFT gets names of its own)
        return real_attach(self, model_id, adapter_name, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", load)
    monkeypatch.setattr(PeftModel, "load_adapter", attach)
    monkeypatch.chdir(tmp_path)

    rc, _, err = run_cli(
        capsys, "generate", "--adapter", "alpha", "--adapter", "beta", "--base", "base", "--device", "cpu"
    )
    assert rc == 0, err
    assert len(bases) == 1 and Path(bases[0]).resolve() == (tmp_path / "base").resolve()
    assert sorted(attached) == ["alpha", "beta"]

    lock = read_lock(tmp_path / "lora.lock")
    rows = {r["name"]: r for r in lock["probe"]["adapter"]}
    assert sorted(rows) == ["alpha", "beta"]
    assert rows["alpha"]["effect-kl"] > rows["beta"]["effect-kl"] > 0.001  # beta is alpha with half its delta
    data = json.loads((tmp_path / lock["probe"]["sidecar"]).read_text(encoding="utf-8"))
    assert sorted(data["adapters"]) == ["alpha", "beta"]
    assert data["adapters"]["alpha"] != data["adapters"]["beta"]

    bases.clear()
    attached.clear()
    rc, report = verify_json(capsys, tmp_path / "lora.lock")
    assert rc == 0, report["findings"]
    assert len(bases) == 1 and sorted(attached) == ["alpha", "beta"]
    assert {f["subject"] for f in findings(report, "EFFECT-OK")} == {"alpha", "beta"}

    bases.clear()
    attached.clear()
    edit_tensors(tmp_path / "beta" / ADAPTER_FILE, scale_lora_b(0.0))  # beta is broken now; alpha is not
    rc, report = verify_json(capsys, tmp_path / "lora.lock", "--adapter", "alpha")
    assert rc == 0, report["findings"]
    assert len(bases) == 1 and attached == ["alpha"]
    assert {f["subject"] for f in report["findings"] if f["category"] == "effect"} == {"alpha"}

    rc, report = verify_json(capsys, tmp_path / "lora.lock", "--adapter", "beta", "--only", "effect")
    assert rc == 1
    assert only(report, "EFFECT-NONE")["subject"] == "beta"


# --- (14) GPT-2: Conv1D ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gpt2_conv1d_adapter_is_probed(
    tmp_path: Path, tiny_gpt2: Path, tiny_gpt2_adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(tiny_gpt2, tmp_path / "base")
    shutil.copytree(tiny_gpt2_adapter, tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))["fan_in_fan_out"]
    lock_llama(tmp_path, probe=True)

    (row,) = probe_section(tmp_path)["adapter"]
    assert row["effect-kl"] > 0.01
    assert row["noise-kl"] < 1e-5
    rc, report = verify_json(capsys, tmp_path / "lora.lock")
    assert rc == 0, report["findings"]
    assert report["checked"]["effect"] == "pass"

    edit_tensors(tmp_path / "adapter" / ADAPTER_FILE, scale_lora_b(0.5))
    rc, report = verify_json(capsys, tmp_path / "lora.lock", "--only", "effect")
    assert rc == 1
    assert "effect is reduced" in only(report, "EFFECT-CHANGED")["message"]


# --- (15) the gates: pure arithmetic -----------------------------------------------------------------------------


def _log(ps: list[float]) -> list[float]:
    return [math.log(p) for p in ps]


def test_tolerance_is_noise_times_factor_within_floor_and_cap() -> None:
    assert gates.tolerance(0.0) == gates.FLOOR
    assert gates.tolerance(float("nan")) == gates.FLOOR
    assert gates.tolerance(1e-7) == gates.FLOOR  # CPU fp32 noise: the floor applies
    assert gates.tolerance(gates.FLOOR / gates.NOISE_FACTOR) == pytest.approx(gates.FLOOR)
    assert gates.tolerance(1e-3) == pytest.approx(1e-3 * gates.NOISE_FACTOR)
    assert gates.tolerance(gates.CAP / gates.NOISE_FACTOR) == pytest.approx(gates.CAP)
    assert gates.tolerance(1.0) == gates.CAP
    assert gates.tolerance(float("inf")) == gates.CAP
    values = [gates.tolerance(10 ** (e / 4)) for e in range(-40, 4)]
    assert values == sorted(values)
    assert gates.FLOOR < gates.CAP


def test_coarse_kl_is_zero_on_identical_inputs() -> None:
    locked = [_log([0.5, 0.2, 0.1]), _log([0.9, 0.05, 0.01]), _log([0.25, 0.25, 0.25])]
    assert gates.coarse_kl(locked, locked) == 0.0
    assert gates.coarse_kl([], []) == 0.0


def test_coarse_kl_is_positive_when_the_distribution_moves() -> None:
    locked = [_log([0.5, 0.2, 0.1])]
    assert gates.coarse_kl(locked, [_log([0.4, 0.25, 0.1])]) > 0
    # Only the "other" bucket moved (same top-k, less mass left over): still seen.
    assert gates.coarse_kl(locked, [_log([0.5, 0.2, 0.29])]) > 0
    # A live distribution closer to the locked one gives a smaller value.
    far = gates.coarse_kl(locked, [_log([0.2, 0.4, 0.1])])
    near = gates.coarse_kl(locked, [_log([0.45, 0.22, 0.1])])
    assert far > near > 0


def test_coarse_kl_equals_kl_when_top_k_covers_everything() -> None:
    p, q = [0.7, 0.3], [0.6, 0.4]
    exact = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))
    assert gates.coarse_kl([_log(p)], [_log(q)]) == pytest.approx(exact, rel=1e-9)
    # Mean over positions.
    assert gates.coarse_kl([_log(p), _log(p)], [_log(q), _log(p)]) == pytest.approx(exact / 2, rel=1e-9)


def test_coarse_kl_never_exceeds_the_full_kl() -> None:
    """Merging the tail into one bucket can only lose information (data-processing inequality)."""
    rng = random.Random(0)
    for _ in range(200):
        n, k = 12, 4
        p = [rng.random() ** 3 for _ in range(n)]
        q = [rng.random() ** 3 for _ in range(n)]
        p = [v / sum(p) for v in p]
        q = [v / sum(q) for v in q]
        full = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))
        top = sorted(range(n), key=lambda i: -p[i])[:k]
        coarse = gates.coarse_kl([[math.log(p[i]) for i in top]], [[math.log(q[i]) for i in top]])
        assert 0 <= coarse <= full + 1e-12


def test_confident_flips_count_only_confident_changed_positions() -> None:
    ids = [[5, 6, 7], [5, 6, 7], [5, 6, 7], [8]]
    lps = [
        [-0.1, -3.0, -4.0],  # margin 2.9: confident
        [-0.1, -3.0, -4.0],  # confident, but the live argmax is unchanged
        [-0.9, -1.2, -2.0],  # margin 0.3: not confident
        [-0.01],  # a single candidate: infinitely confident
    ]
    assert gates.confident_flips(ids, lps, [6, 5, 6, 9]) == 2
    assert gates.confident_flips(ids, lps, [5, 5, 5, 8]) == 0
    margin = [[-0.2, -0.2 - gates.CONFIDENT_MARGIN]]  # exactly at the margin counts
    assert gates.confident_flips([[1, 2]], margin, [2]) == 1
    assert gates.confident_flips([[1, 2]], [[-0.2, -0.2 - gates.CONFIDENT_MARGIN + 1e-6]], [2]) == 0
    assert gates.confident_flips([], [], []) == 0


def test_gate_defaults_are_what_the_readme_documents() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert (gates.NONE_KL, gates.RATIO_BAND, gates.FLOOR, gates.CAP) == (1e-10, (0.8, 1.25), 5e-4, 5e-2)
    assert gates.NOISE_FACTOR == 10 and gates.CONFIDENT_MARGIN == 1.0
    for text in ("KL ≤ 1e-10", "0.8–1.25", "10 × lock-time noise", "5e-4", "5e-2", "≥ 1 nat"):
        assert text in readme, text


# --- (15) names, shared loads and changed bases ------------------------------------------------------------------


@pytest.mark.slow
def test_an_adapter_named_with_dots_is_probed(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PEFT refuses adapter names with "." ("llama-3.1-lora"); the lock's names are not PEFT's."""
    shutil.copytree(tiny_llama, tmp_path / "base")
    shutil.copytree(tiny_llama_adapter, tmp_path / "adapter-v1.5")
    generate_cli(capsys, tmp_path, tmp_path / "adapter-v1.5")
    rc, report = verify_json(capsys, tmp_path / "lora.lock")
    assert rc == 0, report["findings"]
    assert only(report, "EFFECT-OK")["subject"] == "adapter-v1.5"


@pytest.mark.slow
def test_an_adapter_that_writes_into_the_base_gets_a_load_of_its_own(
    tmp_path: Path,
    tiny_gpt2: Path,
    tiny_gpt2_adapter: Path,
    tiny_gpt2_bias_adapter: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``biased`` (LoRA bias="all") loads its trained biases into the base itself. Locked beside ``plain``, it must
    not change what ``plain`` is measured on: ``verify --adapter plain`` (one adapter, its own load) agrees with
    the lock of both, and ``plain``'s locked effect is the one it has alone."""
    from lora_lock.probe.api import load_groups

    biased = shutil.copytree(tiny_gpt2_bias_adapter, tmp_path / "biased")
    shutil.copytree(tiny_gpt2, tmp_path / "base")
    shutil.copytree(tiny_gpt2_adapter, tmp_path / "plain")
    plain = tmp_path / "plain"
    assert load_groups([("biased", biased), ("plain", plain)]) == [[("plain", plain)], [("biased", biased)]]

    def lock(output: str, *adapters: Path) -> dict[str, Any]:
        generate_cli(capsys, tmp_path, *adapters, output=output)
        return {r["name"]: r for r in probe_section(tmp_path, output)["adapter"]}

    both = lock("lora.lock", biased, plain)
    alone = lock("plain.lock", plain)
    assert both["plain"] == alone["plain"]
    assert both["biased"]["effect-kl"] > 0.01
    rc, report = verify_json(capsys, tmp_path / "lora.lock", "--adapter", "plain", "--only", "effect")
    assert rc == 0, report["findings"]
    rc, report = verify_json(capsys, tmp_path / "lora.lock", "--only", "effect")
    assert rc == 0, report["findings"]
    assert {f["subject"] for f in findings(report, "EFFECT-OK")} == {"biased", "plain"}


@pytest.mark.slow
def test_a_base_with_a_smaller_vocabulary_keeps_the_static_report(
    repo: Path, tiny_tokenizer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The locked token ids meet a model with 900 embeddings: the probe says it cannot run, and the base drift
    found by the static checks is still reported (exit 1), not lost to an internal error."""
    from lora_lock.testing import tiny

    shutil.rmtree(repo / "base")
    tiny.build_tiny_llama(repo / "base", tiny_tokenizer, seed=0, vocab_size=900)

    rc, report = verify_json(capsys, repo / "lora.lock")

    assert rc == 1, report["findings"]
    assert "BASE-CONFIG" in codes(report, "base", "error")
    not_run = only(report, "EFFECT-NOT-RUN")["message"]
    assert "outside the model's vocabulary of 900" in not_run or "900 output logits" in not_run
    assert report["checked"]["effect"] == "error"


@pytest.mark.slow
def test_an_unexpected_failure_in_the_probe_keeps_the_static_report(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import LlamaForCausalLM

    def broken(*args: Any, **kwargs: Any) -> Any:  # what torch raises for an id past an embedding table
        raise IndexError("index out of range in self")

    monkeypatch.setattr(LlamaForCausalLM, "forward", broken)
    edit_tensors(repo / "adapter" / ADAPTER_FILE, scale_lora_b(0.5))

    rc, report = verify_json(capsys, repo / "lora.lock")

    assert rc == 1, report["findings"]
    assert "ADAPTER-FILE-CHANGED" in codes(report, "adapter", "error")
    unusable = only(report, "INPUT-UNUSABLE")["message"]
    assert "failed in the model: IndexError: index out of range in self" in unusable
    assert report["checked"]["effect"] == "error"


@pytest.mark.slow
def test_a_deleted_adapter_directory_marks_the_behaviour_checks_error(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(repo / "adapter")
    rc, report = verify_json(capsys, repo / "lora.lock")
    assert rc == 2, report["findings"]
    assert "its source could not be read" in only(report, "EFFECT-NOT-RUN")["message"]
    assert report["checked"]["effect"] == "error"


@pytest.mark.slow
def test_findings_name_the_adapter_even_when_another_is_missing(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(tiny_llama, tmp_path / "base")
    shutil.copytree(tiny_llama_adapter, tmp_path / "a")
    shutil.copytree(tiny_llama_adapter, tmp_path / "b")
    generate_cli(capsys, tmp_path, tmp_path / "a", tmp_path / "b", probe=False)
    widen_kv_heads(tmp_path / "base")
    shutil.rmtree(tmp_path / "b")
    _, report = verify_json(capsys, tmp_path / "lora.lock")
    shape = findings(report, "COMPAT-SHAPE")
    assert shape and all(f["message"].startswith("adapter a: ") for f in shape)


@pytest.mark.slow
@pytest.mark.parametrize("args", [("--only", "adapter,effect"), ("--skip", "compat,base")])
def test_an_adapter_that_no_longer_loads_is_never_a_pass_without_compat(
    repo: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, str]
) -> None:
    """With compat not asked for, the report still says why the effect could not be checked: exit 2, not 0."""
    widen_kv_heads(repo / "base")
    rc, report = verify_json(capsys, repo / "lora.lock", *args)
    assert rc == 2, report["findings"]
    unusable = only(report, "INPUT-UNUSABLE")["message"]
    assert "PEFT cannot load it onto this base (COMPAT-SHAPE), so its behaviour cannot be checked" in unusable
    assert report["checked"]["effect"] == "error"
    # Without the behaviour checks there is nothing to say about loading: the base drift alone (exit 1).
    rc, report = verify_json(capsys, repo / "lora.lock", "--skip", "compat,effect,golden")
    assert rc == 1 and "INPUT-UNUSABLE" not in codes(report), report["findings"]


@pytest.mark.slow
def test_a_later_model_load_failing_keeps_the_drift_found_by_earlier_ones(
    tmp_path: Path,
    tiny_gpt2: Path,
    tiny_gpt2_adapter: Path,
    tiny_gpt2_bias_adapter: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lora_lock.errors import InputError
    from lora_lock.probe.effect import ProbeSession

    shutil.copytree(tiny_gpt2, tmp_path / "base")
    shutil.copytree(tiny_gpt2_adapter, tmp_path / "plain")
    generate_cli(capsys, tmp_path, shutil.copytree(tiny_gpt2_bias_adapter, tmp_path / "biased"), tmp_path / "plain")
    edit_tensors(tmp_path / "plain" / ADAPTER_FILE, scale_lora_b(0.5))
    real = ProbeSession.__init__
    loads: list[int] = []

    def second_load_fails(self: Any, *args: Any, **kwargs: Any) -> None:
        loads.append(1)
        if len(loads) == 2:  # `biased`, in a load of its own after `plain`'s
            raise InputError("the model does not fit on cpu")
        real(self, *args, **kwargs)

    monkeypatch.setattr(ProbeSession, "__init__", second_load_fails)
    rc, report = verify_json(capsys, tmp_path / "lora.lock", "--only", "effect")
    assert rc == 1, report["findings"]
    assert {"EFFECT-CHANGED", "EFFECT-DRIFT"} & codes(report, "effect", "error")
    assert "the model does not fit on cpu" in only(report, "INPUT-UNUSABLE")["message"]
