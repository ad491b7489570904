"""check's messages claim only what was checked: config-only checks, identity of local and Hub-cache bases,
hints derived from the base's own architecture, and what a non-adapter config is called."""

from __future__ import annotations

import json
from pathlib import Path

from lora_lock import Report, Severity, check
from lora_lock.runtime import parse_stack
from tests.fixtures.header_bases import HeaderBase, MakeAdapter, adapter_config, lora_tensors
from tests.helpers import copy_sparse

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
IDENTITY = "COMPAT-IDENTITY"


def texts(report: Report) -> str:
    return "\n".join(f"{f.code}: {f.message} {f.hint or ''}" for f in report.findings)


def test_config_only_check_does_not_claim_the_shapes_fit(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    base = header_base("llama-3-8b", quant="bnb-4bit")
    adapter = make_adapter(adapter_config("someone/else", ATTN), None)
    report = check(adapter, base)
    text = texts(report)
    assert "ADAPTER-NO-WEIGHTS" in text
    assert "the shapes fit" not in text
    assert "were checked against the unpacked layer sizes" not in text
    assert "no adapter tensors were there to check" in text


def test_quantized_base_with_weights_says_the_shapes_were_checked(
    header_base: HeaderBase, make_adapter: MakeAdapter
) -> None:
    base = header_base("llama-3-8b", quant="bnb-4bit")
    adapter = make_adapter(adapter_config("someone/else", ATTN), lora_tensors("llama-3-8b", ATTN, 16))
    assert "were checked against the unpacked layer sizes" in texts(check(adapter, base))


def test_relative_training_path_with_the_same_directory_name_confirms_identity(
    header_base: HeaderBase, make_adapter: MakeAdapter, tmp_path: Path
) -> None:
    # PEFT stores the path the trainer loaded the base from, relative to the training directory
    base = header_base("llama-3-8b")
    adapter = make_adapter(adapter_config(f"./models/{base.name}", ATTN), lora_tensors("llama-3-8b", ATTN, 16))
    report = check(adapter, base)
    assert IDENTITY not in {f.code for f in report.findings}, texts(report)
    assert report.status.exit_code == 0


def test_identity_hint_follows_the_base_architecture(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    base = header_base("gpt2")
    adapter = make_adapter(
        adapter_config("someone/other-gpt2", ["c_attn"], r=8, fan_in_fan_out=True), lora_tensors("gpt2", ["c_attn"], 8)
    )
    identity = next(f for f in check(adapter, base).findings if f.code == IDENTITY)
    hint = identity.hint or ""
    assert "Llama" not in hint and "Mistral" not in hint
    assert "GPT2" in hint
    assert "`lora-lock generate`" not in hint  # the same hint is shown by generate itself
    assert identity.message.startswith("the shapes fit")


def test_peft_type_none_is_not_a_peft_adapter_type(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    config = adapter_config("someone/else", ATTN)
    config["peft_type"] = "none"
    adapter = make_adapter(config, None)
    report = check(adapter, header_base("llama-3-8b"))
    assert report.status.exit_code == 2
    assert "not a PEFT adapter type" in texts(report) and "not supported" not in texts(report)


def test_swin_per_stage_head_counts_are_accepted(
    header_base: HeaderBase, make_adapter: MakeAdapter, tmp_path: Path
) -> None:
    # Swin's config lists heads per stage ([3, 6, 12, 24]); transformers accepts it, so must check
    base = tmp_path / "base"
    copy_sparse(header_base("llama-3-8b"), base)
    config = json.loads((base / "config.json").read_text())
    config["num_heads"] = [3, 6, 12, 24]
    config.pop("num_attention_heads")
    (base / "config.json").write_text(json.dumps(config))
    adapter = make_adapter(adapter_config("someone/else", ATTN), lora_tensors("llama-3-8b", ATTN, 16))
    assert check(adapter, base).status.exit_code != 2


def test_report_names_the_rules_it_applied(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(adapter_config("someone/else", ATTN), lora_tensors("llama-3-8b", ATTN, 16))
    base = header_base("llama-3-8b")
    rules = next(f for f in check(adapter, base).findings if f.code == "COMPAT-RULES")
    assert rules.severity is Severity.INFO and "(installed)" in rules.message
    explicit = check(adapter, base, stack=parse_stack("transformers==4.46.0,peft==0.13.0"))
    rules = next(f for f in explicit.findings if f.code == "COMPAT-RULES")
    assert "transformers 4.46.0" in rules.message and "(explicit)" in rules.message


def test_a_newer_transformers_than_the_table_is_warned(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(adapter_config("someone/else", ATTN), lora_tensors("llama-3-8b", ATTN, 16))
    report = check(adapter, header_base("llama-3-8b"), stack=parse_stack("transformers==9.0.0,peft==0.30.0"))
    assert "RUNTIME-TABLE-VERSION" in {f.code for f in report.findings}, texts(report)


def test_the_stack_is_honoured_by_the_prediction(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    from lora_lock.compat.base import read_base
    from lora_lock.compat.static import static_findings
    from lora_lock.inspect.adapter import read_adapter
    from lora_lock.sources.resolve import resolve

    adapter = make_adapter(adapter_config("someone/else", ATTN), lora_tensors("llama-3-8b", ATTN, 16))
    stack = parse_stack("transformers==4.46.0,peft==0.13.0")
    fit, _ = static_findings(
        read_adapter(adapter), read_base(resolve(header_base("llama-3-8b"), what="base")), stack=stack
    )
    assert fit.prediction is not None and fit.prediction.stack == stack
    assert fit.prediction.outcome == "applies" and fit.prediction.total_tensors == 4 * 2 * 32
    json.dumps(fit.prediction.rules)  # plain strings
