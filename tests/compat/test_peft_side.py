"""PEFT's side, as PEFT really behaves: each case builds a tiny real base and an adapter, loads the pair with real
PEFT (``tests.oracle.truth.peft_truth``: applies / drops N tensors / raises) and asserts that ``check``'s
prediction is the same — with the same count of dropped tensors, and the error PEFT raises quoted.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from safetensors.torch import load_file, save_file  # noqa: E402

from lora_lock import Report, Severity, check  # noqa: E402
from tests.oracle import scenarios  # noqa: E402
from tests.oracle.bases import SEED, Base, describe, save_base  # noqa: E402
from tests.oracle.predicted import agrees, predicted_verdict  # noqa: E402
from tests.oracle.tiny_configs import tiny_config  # noqa: E402
from tests.oracle.truth import Verdict, peft_truth  # noqa: E402

pytestmark = pytest.mark.slow

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    transformers.logging.set_verbosity_error()
    return tmp_path_factory.mktemp("peft_side")


def _custom_base(model_type: str, out: Path, **overrides: Any) -> Base:
    """A tiny ``model_type`` base with config ``overrides`` (e.g. ``attention_bias=True``), saved and described."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from tests.oracle.bases import task_for

    auto, cls_name = task_for(model_type)
    config = tiny_config(CONFIG_MAPPING[model_type], **overrides)
    torch.manual_seed(SEED)
    model = getattr(transformers, cls_name)(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    model.eval().save_pretrained(out)
    return describe(model, model_type, out, auto, cls_name)


def _save(base: Base, out: Path, config: Any) -> Path:
    from tests.oracle.bases import load

    model = load(base)
    torch.manual_seed(SEED + 1)
    peft_model = peft.get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name or "trainable_tokens" in name:
                param.add_(torch.randn_like(param) * 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model.save_pretrained(str(out))
    return out


def _rewrite(adapter: Path, out: Path, rename: dict[str, str], config: dict[str, Any] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(adapter / ADAPTER_FILE))
    renamed = {}
    for key, value in tensors.items():
        for old, new in rename.items():
            key = key.replace(old, new)
        renamed[key] = value.contiguous()
    save_file(renamed, str(out / ADAPTER_FILE))
    doc = json.loads((adapter / CONFIG_FILE).read_text())
    doc.update(config or {})
    (out / CONFIG_FILE).write_text(json.dumps(doc))
    return out


def _agree(base: Base, adapter: Path) -> tuple[Verdict, Verdict, Report]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = peft_truth(base, adapter)
    predicted, report = predicted_verdict(adapter, base.path)
    assert agrees(truth, predicted, counts=True), f"PEFT {truth}, check {predicted} ({predicted.detail})"
    return truth, predicted, report


def _errors(report: Report) -> dict[str, str]:
    return {f.code: f.message for f in report.findings if f.severity is Severity.ERROR}


def test_bias_all_on_a_base_without_biases_is_a_silent_drop(work: Path) -> None:
    trained_on = _custom_base("llama", work / "llama-bias", attention_bias=True)
    target = _custom_base("llama", work / "llama-nobias", attention_bias=False)
    adapter = _save(trained_on, work / "bias-all", peft.LoraConfig(r=4, target_modules=["q_proj"], bias="all"))
    biases = [k for k in load_file(str(adapter / ADAPTER_FILE)) if k.endswith(".bias")]
    assert biases
    truth, _, report = _agree(target, adapter)
    assert truth.outcome == "drops" and truth.dropped == len(biases)
    assert 'bias="all"' in _errors(report)["COMPAT-DROPPED"]
    # on the base it was trained on, every tensor has a place
    assert check(adapter, trained_on.path).status.exit_code == 0


def test_modules_to_save_under_a_renamed_head_is_dropped(work: Path) -> None:
    # transformers 5 builds GPT-NeoX's output head as lm_head (the checkpoint keeps embed_out); an adapter made on
    # transformers 4 lists and saves it as embed_out, which PEFT neither wraps nor converts
    neox = save_base("gpt_neox", work / "gpt_neox")
    assert neox.to_checkpoint.get("lm_head") == "embed_out"
    config = peft.LoraConfig(r=4, target_modules=["query_key_value"], modules_to_save=["lm_head"])
    adapter = _save(neox, work / "neox-head", config)
    assert check(adapter, neox.path).status.exit_code == 0
    old = _rewrite(adapter, work / "neox-embed-out", {".lm_head.": ".embed_out."}, {"modules_to_save": ["embed_out"]})
    truth, _, report = _agree(neox, old)
    assert truth.outcome == "drops" and truth.dropped == 1
    assert "embed_out.weight" in _errors(report)["COMPAT-DROPPED"]


def test_trainable_token_indices_land_in_the_embedding(work: Path) -> None:
    llama = save_base("llama", work / "llama")
    config = peft.LoraConfig(r=4, target_modules=["q_proj"], trainable_token_indices=[1, 2, 3])
    adapter = _save(llama, work / "tokens", config)
    assert any("trainable_tokens_delta" in k for k in load_file(str(adapter / ADAPTER_FILE)))
    truth, _, report = _agree(llama, adapter)
    assert truth.outcome == "applies" and report.status.exit_code == 0


def test_adalora_layout_applies(work: Path) -> None:
    llama = save_base("llama", work / "llama-ada")
    config = peft.AdaLoraConfig(init_r=4, target_r=2, total_step=10, target_modules=["q_proj", "v_proj"])
    adapter = _save(llama, work / "adalora", config)
    keys = load_file(str(adapter / ADAPTER_FILE))
    assert any(k.endswith(".lora_E") for k in keys) and not any(k.endswith(".lora_A.weight") for k in keys)
    truth, _, report = _agree(llama, adapter)
    assert truth.outcome == "applies"
    assert not _errors(report), _errors(report)


def test_legacy_phi_wqkv_names_are_refused(work: Path) -> None:
    phi = save_base("phi", work / "phi")
    adapter = _save(phi, work / "phi-today", peft.LoraConfig(r=4, target_modules=["q_proj", "dense"]))
    # remote-code Phi (phi-1.5 / phi-2 before transformers' port) named them transformer.h.N.mixer.Wqkv / out_proj
    legacy = _rewrite(
        adapter,
        work / "phi-legacy",
        {
            "model.layers.": "transformer.h.",
            ".self_attn.q_proj.": ".mixer.Wqkv.",
            ".self_attn.dense.": ".mixer.out_proj.",
        },
        {"target_modules": ["Wqkv", "out_proj"]},
    )
    truth, predicted, report = _agree(phi, legacy)
    assert truth.outcome == "raises" and "NoMatchingPeftModuleError" in (truth.message or "")
    assert predicted.message is not None and "NoMatchingPeftModuleError" in predicted.message
    assert "Wqkv" in _errors(report)["COMPAT-NO-TARGET"]


def test_target_parameters_on_fewer_experts_is_a_shape_error(work: Path) -> None:
    four = _custom_base("mixtral", work / "mixtral-4", num_local_experts=4)
    eight = _custom_base("mixtral", work / "mixtral-8", num_local_experts=8)
    adapter = scenarios.peft_experts(four, work / "experts-4")
    assert adapter is not None
    assert check(adapter, four.path).status.exit_code == 0
    truth, _, report = _agree(eight, adapter)
    assert truth.outcome == "raises" and "size mismatch" in (truth.message or "")
    assert "COMPAT-SHAPE" in _errors(report)


def test_per_expert_half_pair_quotes_peft(work: Path) -> None:
    mixtral = save_base("mixtral", work / "mixtral")
    adapter = scenarios.old_experts_half(mixtral, work / "half")
    assert adapter is not None
    truth, _, report = _agree(mixtral, adapter)
    assert truth.outcome == "raises" and (truth.message or "").startswith("ValueError: Cannot convert")
    assert "Cannot convert PEFT target(s) w1 without also targeting w3" in _errors(report)["COMPAT-PEFT-REFUSES"]


def test_adalora_modules_pruned_to_rank_zero_apply(work: Path) -> None:
    llama = save_base("llama", work / "llama-pruned")
    from tests.oracle.bases import load

    config = peft.AdaLoraConfig(init_r=4, target_r=2, total_step=10, target_modules=["q_proj", "v_proj"])
    peft_model = peft.get_peft_model(load(llama), config)
    modules = sorted({n.rsplit(".lora_E", 1)[0] for n, _ in peft_model.named_parameters() if ".lora_E" in n})
    # what AdaLoRA's budget allocator leaves: the first module pruned to rank 0, the others to rank 2
    pattern = {
        m.removeprefix("base_model.model.") + ".lora_E": [False] * 4 if i == 0 else [True, True, False, False]
        for i, m in enumerate(modules)
    }
    peft_model.peft_config["default"].rank_pattern = pattern
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    adapter = work / "adalora-pruned"
    peft_model.save_pretrained(str(adapter))
    shapes = {k: tuple(v.shape) for k, v in load_file(str(adapter / ADAPTER_FILE)).items()}
    assert (0, llama.hidden) in shapes.values()  # a rank-0 lora_A
    truth, _, report = _agree(llama, adapter)
    assert truth.outcome == "applies"
    assert not _errors(report), _errors(report)
