"""``check --stack``, ``lora_lock.check(stack=...)`` and ``verify`` judging a lock by its own ``[environment]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lora_lock import check
from lora_lock._cli import main
from lora_lock.compat import Fit
from lora_lock.findings import Report, Status
from lora_lock.runtime import parse_stack
from lora_lock.runtime.applied import CODE_RULES
from tests.fixtures.header_bases import adapter_config, lora_tensors
from tests.helpers import run_cli

STACK_5 = "transformers==5.23.0,peft==0.21.2"
STACK_4 = "transformers==4.57.1"
#: The engine models transformers' runtime names (``Fit.prediction``); until then verdicts do not depend on it.
RUNTIME_ENGINE = "prediction" in getattr(Fit, "__dataclass_fields__", {})


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_cli(capsys, *argv, forbid=())
    return code, json.loads(out)


def _rules(doc: dict[str, Any]) -> str:
    found = [f for f in doc["findings"] if f["code"] == CODE_RULES]
    assert len(found) == 1, doc["findings"]
    return str(found[0]["message"])


@pytest.fixture(scope="module")
def llama_pair(header_base: Any, make_adapter: Any) -> tuple[Path, Path]:
    base = header_base("llama-3.2-1b")
    targets = ("q_proj", "v_proj")
    adapter = make_adapter(adapter_config("meta-llama/Llama-3.2-1B", targets), lora_tensors("llama-3.2-1b", targets))
    return adapter, base


def test_check_says_which_rules_it_applied(capsys: pytest.CaptureFixture[str], llama_pair: tuple[Path, Path]) -> None:
    adapter, base = llama_pair
    code, doc = _json(capsys, ["check", str(adapter), "--base", str(base), "--stack", STACK_5, "--format", "json"])
    assert code == 0
    rules = _rules(doc)
    assert "transformers 5.23.0 load conversions for LlamaForCausalLM (llama)" in rules
    assert "peft 0.21.2" in rules.lower() and "(explicit)" in rules


def test_a_single_component_stack_is_accepted(
    capsys: pytest.CaptureFixture[str], llama_pair: tuple[Path, Path]
) -> None:
    adapter, base = llama_pair
    code, doc = _json(capsys, ["check", str(adapter), "--base", str(base), "--stack", STACK_4, "--format", "json"])
    assert code == 0
    rules = _rules(doc)
    assert "none: transformers 4.57.1 builds checkpoint names" in rules
    assert "peft unknown" in rules


def test_without_stack_the_installed_versions_apply(
    capsys: pytest.CaptureFixture[str], llama_pair: tuple[Path, Path]
) -> None:
    import importlib.metadata as md

    adapter, base = llama_pair
    _, doc = _json(capsys, ["check", str(adapter), "--base", str(base), "--format", "json"])
    rules = _rules(doc)
    assert f"transformers {md.version('transformers')}" in rules and "(installed)" in rules


@pytest.mark.parametrize(
    "spec",
    [
        "transformers=5.23.0",
        "torch==2.13.0",
        "transformers==",
        "transformers==5.0,transformers==5.1",
        "",
        "x" * 300,
        "transformers==5\x1b[2J\u202e",
        "\x1b]0;title\x07transformers==5.23.0",
    ],
)
def test_a_bad_stack_is_one_paragraph_and_exit_2(
    capsys: pytest.CaptureFixture[str], llama_pair: tuple[Path, Path], spec: str
) -> None:
    adapter, base = llama_pair
    assert main(["check", str(adapter), "--base", str(base), "--stack", spec]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert lines[0].startswith("lora-lock: error: --stack: expected e.g. 'transformers==5.23.0,peft==0.21.2'")
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert "\x1b" not in captured.err and "\u202e" not in captured.err  # the one sanitiser quoted the spec


def test_the_python_api_takes_a_stack_as_text_or_object(llama_pair: tuple[Path, Path]) -> None:
    adapter, base = llama_pair
    for stack in (STACK_4, parse_stack(STACK_4)):
        report = check(adapter, base, stack=stack)
        assert report.status is Status.PASS
        assert any(f.code == CODE_RULES and "4.57.1" in f.message for f in report.findings)
    bad = check(adapter, base, stack="peft")
    assert bad.status is Status.ERROR and bad.findings[0].message.startswith("--stack:")


def test_verify_applies_the_rules_of_the_lock_environment(
    llama_pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock made on a transformers 4 stack is judged by transformers 4 rules, whatever is installed."""
    from lora_lock import generate, verify
    from lora_lock.inspect.environment import Environment, current_environment

    adapter, base = llama_pair
    real = current_environment()
    old = Environment(versions={**real.versions, "transformers": "4.57.1", "peft": "0.17.1"}, gpu=real.gpu)
    monkeypatch.setattr("lora_lock.commands.generate.current_environment", lambda: old)
    result = generate([adapter], base, tmp_path / "lora.lock", probe=False)
    assert result.written
    report = verify(tmp_path / "lora.lock", only={_compat()}, allow_outside_sources=True)
    rules = [f for f in report.findings if f.code == CODE_RULES]
    assert len(rules) == 1 and "none: transformers 4.57.1 builds checkpoint names" in rules[0].message
    assert "(lock)" in rules[0].message


def _compat() -> Any:
    from lora_lock.findings import Category

    return Category.COMPAT


# --- transformers 4 vs 5 on a real tiny ViT ----------------------------------------------------------------------

VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
    "num_labels": 3,
}


@pytest.fixture(scope="module")
def vit_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str | None]:
    """A tiny real ViT saved by the installed transformers, an adapter in the layout PEFT on transformers 4 wrote
    (``query`` / ``value`` under ``vit.encoder.layer.N.attention.attention``), and what real PEFT does with the
    pair on the installed stack (None: it loads; else the exception's class name)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("vit-stack")
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(**VIT))
    model.save_pretrained(root / "base")
    adapter = root / "adapter"
    adapter.mkdir()
    config = adapter_config("google/vit-base-patch16-224", ["query", "value"], r=4, task_type=None)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    tensors = {}
    for layer in range(VIT["num_hidden_layers"]):
        for proj in ("query", "value"):
            key = f"base_model.model.vit.encoder.layer.{layer}.attention.attention.{proj}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(4, VIT["hidden_size"])
            tensors[f"{key}.lora_B.weight"] = torch.randn(VIT["hidden_size"], 4)
    save_file(tensors, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    outcome: str | None = None
    try:
        peft.PeftModel.from_pretrained(transformers.ViTForImageClassification.from_pretrained(root / "base"), adapter)
    except Exception as exc:  # what real PEFT does on this stack is the expected verdict
        outcome = type(exc).__name__
    return root / "base", adapter, outcome


def _verdict(report: Report) -> Status:
    return report.status


@pytest.mark.slow
def test_transformers_4_rules_keep_the_checkpoint_names_and_the_adapter_fits(
    vit_pair: tuple[Path, Path, str | None],
) -> None:
    """On 4.x transformers builds checkpoint names (what the generated table records for a non-VLM)."""
    from lora_lock.inspect.checkpoint import read_checkpoint
    from lora_lock.lock.module_table import module_names

    base, adapter, _ = vit_pair
    config = json.loads((base / "config.json").read_text())
    names = module_names(config, read_checkpoint(base).tensors, parse_stack(STACK_4))
    assert names.runtime_name("vit.encoder.layer.*.attention.attention.query") == (
        "vit.encoder.layer.*.attention.attention.query"
    )
    assert _verdict(check(adapter, base, stack=STACK_4)) is Status.PASS


@pytest.mark.slow
def test_transformers_5_renames_the_vit_modules_the_old_adapter_targets(
    vit_pair: tuple[Path, Path, str | None],
) -> None:
    from lora_lock.inspect.checkpoint import read_checkpoint
    from lora_lock.lock.module_table import module_names

    base, _, outcome = vit_pair
    # Real PEFT on the installed (5.x) stack refuses the old adapter: its target modules no longer exist.
    assert outcome == "NoMatchingPeftModuleError"
    config = json.loads((base / "config.json").read_text())
    names = module_names(config, read_checkpoint(base).tensors, parse_stack(STACK_5))
    assert names.runtime_name("vit.encoder.layer.*.attention.attention.query") == "vit.layers.*.attention.q_proj"


@pytest.mark.slow
@pytest.mark.skipif(not RUNTIME_ENGINE, reason="needs the runtime-name engine (Fit.prediction)")
def test_the_same_pair_gets_different_verdicts_on_4x_and_5x(
    vit_pair: tuple[Path, Path, str | None], capsys: pytest.CaptureFixture[str]
) -> None:
    base, adapter, outcome = vit_pair
    assert outcome is not None  # PEFT raises on the installed 5.x stack
    code5, doc5 = _json(capsys, ["check", str(adapter), "--base", str(base), "--stack", STACK_5, "--format", "json"])
    code4, doc4 = _json(capsys, ["check", str(adapter), "--base", str(base), "--stack", STACK_4, "--format", "json"])
    assert (code5, doc5["status"]) == (1, "fail")
    assert (code4, doc4["status"]) == (0, "pass")
    assert "5.23.0" in _rules(doc5) and "4.57.1" in _rules(doc4)


@pytest.mark.slow
def test_a_lock_made_on_transformers_4_is_verified_by_its_rules(
    vit_pair: tuple[Path, Path, str | None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old ViT adapter fits on 4.x (the lock's stack) although real PEFT refuses it on the installed 5.x:
    verify judges the lock by 4.x rules; check on the installed stack does not."""
    from lora_lock import generate, verify
    from lora_lock.findings import Category
    from lora_lock.inspect.environment import Environment, current_environment

    base, adapter, outcome = vit_pair
    real = current_environment()
    old = Environment(versions={**real.versions, "transformers": "4.57.1", "peft": "0.17.1"}, gpu=real.gpu)
    monkeypatch.setattr("lora_lock.commands.generate.current_environment", lambda: old)
    assert generate([adapter], base, tmp_path / "lora.lock", probe=False).written
    report = verify(tmp_path / "lora.lock", only={Category.COMPAT}, allow_outside_sources=True)
    assert report.status is Status.PASS, [f.to_dict() for f in report.findings]
    assert any(f.code == CODE_RULES and "4.57.1" in f.message for f in report.findings)
    if RUNTIME_ENGINE:  # the installed stack's verdict, as real PEFT gave it (it raised)
        assert outcome is not None
        assert check(adapter, base).status is Status.FAIL
