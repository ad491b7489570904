"""Behaviour checks per task type: the text path of a vision-language base (a tiny Llava) and sequence / token
classifiers (tiny BERTs) are probed with the same gates as a causal LM; a task type without a probe is a named
finding, never a silent skip."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from lora_lock._cli import main
from lora_lock.commands.generate import generate
from lora_lock.lock.io import read as read_lock
from lora_lock.lock.model import Probe
from tests.probe.test_lock_schema import SCHEMA_PATH, assert_lock_documented, undocumented

ADAPTER_FILE = "adapter_model.safetensors"


def _verify(capsys: pytest.CaptureFixture[str], lock: Path, *args: str) -> tuple[int, dict[str, Any]]:
    rc = main(["verify", str(lock), "--format", "json", "--device", "cpu", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    report: dict[str, Any] = json.loads(out)
    return rc, report


def _codes(report: dict[str, Any]) -> set[str]:
    return {f["code"] for f in report["findings"]}


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(path), framework="np") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)


def _scale_b(factor: float) -> Callable[[dict[str, Any]], None]:
    def change(tensors: dict[str, Any]) -> None:
        for key in [k for k in tensors if ".lora_B." in k]:
            tensors[key] = (tensors[key].astype("float64") * factor).astype(tensors[key].dtype)

    return change


def _noise(scale: float) -> Callable[[dict[str, Any]], None]:
    import numpy as np

    def change(tensors: dict[str, Any]) -> None:
        rng = np.random.default_rng(0)
        for key in sorted(tensors):
            if ".lora_" in key:
                value = tensors[key].astype("float64")
                tensors[key] = (value + scale * rng.standard_normal(value.shape)).astype(tensors[key].dtype)

    return change


@dataclass
class Llava:
    root: Path
    section: Probe
    sidecar: dict[str, Any]


PROMPTS = ("The capital of France is", "Once upon a time, in a small village,", "def fibonacci(n):\n    ")


def _session(root: Path) -> Any:
    from lora_lock.probe.effect import ProbeSession

    return ProbeSession(root / "base", root / "base", [("adapter", root / "adapter")], device="cpu", command="verify")


@pytest.fixture(scope="module")
def llava_locked(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> Llava:
    """A tiny Llava base, a LoRA trained on its language model's attention, and the probe's lock-time record.

    Through the probe's API: ``generate`` stops earlier on this base, because the static compat check does not
    yet map Llava's saved checkpoint names (``language_model.model.layers…``) to the module names transformers
    loads them as (``model.language_model.layers…``) and reports ``COMPAT-NO-MATCH``."""
    pytest.importorskip("peft")
    from lora_lock.probe.api import lock_probe
    from lora_lock.testing import tiny
    from lora_lock.testing.tiny_vlm import build_tiny_llava

    root = tmp_path_factory.mktemp("probe-llava")
    build_tiny_llava(root / "base", tiny_tokenizer, seed=0)
    tiny.train_lora(
        root / "base", root / "adapter", target_modules=r".*language_model.*\.(q_proj|v_proj)", r=8, alpha=16, seed=0
    )
    session = _session(root)
    assert type(session.model.get_base_model()).__name__ == "LlavaForConditionalGeneration"
    locked = lock_probe(session, [("adapter", root / "adapter")], PROMPTS)
    assert not locked.findings  # no EFFECT-NONE: the trained adapter moves the text path
    return Llava(root, locked.record("lora.lock.probe-0123456789ab.json"), locked.sidecar)


def _verify_llava(llava: Llava, root: Path) -> dict[str, Any]:
    from lora_lock.probe.api import verify_probe

    found = verify_probe(_session(root), llava.section, llava.sidecar, [("adapter", root / "adapter")])
    return {f.code: f for f in found}


@pytest.mark.slow
def test_a_vision_language_base_is_probed_on_its_text_path(llava_locked: Llava) -> None:
    (row,) = llava_locked.section.adapters
    assert row.effect_kl is not None and row.effect_kl > 1e-3
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    section = llava_locked.section.to_dict()
    probe_schema = {**schema["properties"]["probe"], "$defs": schema["$defs"]}
    assert jsonschema.Draft202012Validator(probe_schema).is_valid(section)
    assert undocumented(section, probe_schema, schema) == []
    for _ in range(2):  # never a false alarm on an unchanged setup
        assert set(_verify_llava(llava_locked, llava_locked.root)) == {"EFFECT-OK"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "code"),
    [(_scale_b(0.5), "EFFECT-CHANGED"), (_scale_b(0.0), "EFFECT-NONE"), (_noise(1e-7), None)],
    ids=["lora_B-x0.5", "zeroed", "noise-1e-7"],
)
def test_the_vlm_gates_fire_on_changes_and_pass_on_noise(
    llava_locked: Llava, tmp_path: Path, change: Callable[[dict[str, Any]], None], code: str | None
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(llava_locked.root, root)
    _edit(root / "adapter" / ADAPTER_FILE, change)
    found = _verify_llava(llava_locked, root)
    errors = {c for c, f in found.items() if f.severity.value == "error"}
    if code is None:
        assert not errors and "EFFECT-OK" in found, found
    else:
        assert code in errors, found
        assert "EFFECT-DRIFT" in errors  # the adapted outputs moved as well


@pytest.mark.slow
@pytest.mark.parametrize("task", ["SPEECH_TO_TEXT"])
def test_a_task_type_without_a_probe_is_a_named_finding(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, task: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(tiny_llama, tmp_path / "base")
    for name in ("causal", "other"):
        shutil.copytree(tiny_llama_adapter, tmp_path / name)
    config_path = tmp_path / "other" / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["task_type"] = task
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")

    result = generate(
        [tmp_path / "causal", tmp_path / "other"], tmp_path / "base", tmp_path / "lora.lock", device="cpu", probe=True
    )
    assert result.lock is not None
    (finding,) = [f for f in result.report.findings if f.code == "EFFECT-TASK"]
    assert finding.severity.value == "warning" and finding.subject == "other" and task in finding.message
    rows = read_lock(tmp_path / "lora.lock")["probe"]["adapter"]
    assert [r["name"] for r in rows] == ["causal"]  # the causal adapter of the same lock is still probed

    rc, report = _verify(capsys, tmp_path / "lora.lock", "--only", "effect")
    assert rc == 0, report["findings"]
    (task_finding,) = [f for f in report["findings"] if f["code"] == "EFFECT-TASK"]
    assert task_finding["subject"] == "other"


# --- sequence and token classifiers, encoder-decoder LMs ---------------------------------------------------------


@pytest.fixture(scope="module", params=["SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS", "SEQ_2_SEQ_LM"])
def classifier(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> Path:
    """A tiny BERT classifier (sequence, token or question answering) or a tiny T5, a LoRA trained on it (class
    or span loss, or copying sentences), and a lock made by ``generate``."""
    pytest.importorskip("peft")
    from lora_lock.testing import tiny_cls

    task = request.param
    root = tmp_path_factory.mktemp(f"probe-{task.lower()}")
    if task == "SEQ_2_SEQ_LM":
        tiny_cls.build_tiny_t5(root / "base", tiny_tokenizer, seed=0)
        tiny_cls.train_seq2seq_lora(root / "base", root / "adapter", seed=0)
    else:
        tiny_cls.build_tiny_bert(root / "base", tiny_tokenizer, task=task, seed=0)
        tiny_cls.train_classifier_lora(root / "base", root / "adapter", task=task, seed=0)
    result = generate([root / "adapter"], root / "base", root / "lora.lock", device="cpu", probe=True)
    assert result.lock is not None, [f.to_dict() for f in result.report.findings]
    assert not [f for f in result.report.findings if f.category.value == "effect"]  # it has an effect, is probed
    return root


@pytest.mark.slow
def test_a_classifier_or_encoder_decoder_is_probed(classifier: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (row,) = assert_lock_documented(classifier / "lora.lock")["probe"]["adapter"]
    assert row["effect-kl"] > 1e-3
    for _ in range(2):
        rc, report = _verify(capsys, classifier / "lora.lock", "--only", "effect")
        assert rc == 0, report["findings"]
        assert _codes(report) == {"EFFECT-OK"}, report["findings"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "codes"),
    [
        (_scale_b(0.5), {"EFFECT-DRIFT"}),
        (_scale_b(0.0), {"EFFECT-DRIFT"}),
        (_noise(1e-7), set()),
    ],
    ids=["lora_B-x0.5", "zeroed", "noise-1e-7"],
)
def test_the_classifier_gates_fire_on_changes_and_pass_on_noise(
    classifier: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[dict[str, Any]], None],
    codes: set[str],
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(classifier, root)
    _edit(root / "adapter" / ADAPTER_FILE, change)
    rc, report = _verify(capsys, root / "lora.lock", "--only", "effect")
    errors = {f["code"] for f in report["findings"] if f["severity"] == "error"}
    assert codes <= errors and (rc == 1) == bool(codes), report["findings"]
    if not codes:
        assert not errors


@pytest.mark.slow
def test_the_golden_set_names_a_classifier_it_does_not_score(classifier: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(classifier, root)
    golden = root / "golden.jsonl"
    golden.write_text(json.dumps({"prompt": "The fox is", "choices": ["quick", "lazy"], "answer": 0}) + "\n")
    result = generate([root / "adapter"], root / "base", root / "lora.lock", device="cpu", probe=True, golden=golden)
    assert result.lock is not None
    (finding,) = [f for f in result.report.findings if f.code == "GOLDEN-TASK"]
    assert finding.severity.value == "warning" and finding.subject == "adapter"
    assert "golden" not in read_lock(root / "lora.lock")
