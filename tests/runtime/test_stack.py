"""Stack selection (installed / lock / explicit), bad ``--stack`` text, and hostile configs for the runtime view."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

import pytest

from lora_lock.errors import InputError
from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.runtime import (
    Stack,
    installed_stack,
    lock_stack,
    parse_stack,
    release,
    runtime_view,
)
from lora_lock.runtime.tables import transformers_table


def _t(name: str, *shape: int) -> TensorInfo:
    return TensorInfo(name, "F32", tuple(shape), "model.safetensors", 0, 0)


def test_parse_stack_reads_both_packages() -> None:
    stack = parse_stack("transformers==5.23.0, peft==0.21.2")
    assert stack == Stack("5.23.0", "0.21.2", "explicit")
    assert stack.describe() == "transformers 5.23.0, peft 0.21.2 (explicit)"


def test_parse_stack_allows_one_package_and_says_the_other_is_unknown() -> None:
    stack = parse_stack("peft==0.18.0")
    assert stack.transformers is None
    assert stack.describe() == "transformers unknown, peft 0.18.0 (explicit)"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "expected e.g."),
        ("garbage", "NAME==VERSION"),
        ("transformers>=5", "NAME==VERSION"),
        ("torch==2.1", "is not one of transformers, peft"),
        ("transformers==5.0,transformers==5.1", "given twice"),
        ("transformers==five", "is not a version number"),
        ("transformers==5.0 rc1", "is not a version number"),
        ("x" * 5000, "expected e.g."),
        ("transformers==", "NAME==VERSION"),
    ],
)
def test_bad_stack_text_is_one_clear_sentence(spec: str, says: str) -> None:
    with pytest.raises(InputError) as err:
        parse_stack(spec)
    text = str(err.value)
    assert text.startswith("--stack: ")
    assert says in text
    assert "\n" not in text and len(text) < 300


def test_installed_stack_reads_metadata_without_importing() -> None:
    code = (
        "import sys\nfrom lora_lock.runtime import installed_stack\ns = installed_stack()\n"
        "print(s.transformers, s.peft, s.origin)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    first, second = out.stdout.strip().splitlines()
    assert first == f"{md.version('transformers')} {md.version('peft')} installed"
    assert second == "[]"
    assert installed_stack().origin == "installed"


def test_lock_stack_reads_the_environment_table() -> None:
    env = {"versions": {"transformers": "4.57.1", "peft": "0.17.0", "python": "3.11.9"}, "policy": {}}
    assert lock_stack(env) == Stack("4.57.1", "0.17.0", "lock")
    assert lock_stack({"versions": {"transformers": ["bad"]}}) == Stack(None, None, "lock")
    assert lock_stack({}) == Stack(None, None, "lock")


def test_release_parses_pre_releases_and_refuses_garbage() -> None:
    assert release("5.0.0.dev0") == (5, 0, 0)
    assert release("4.57.1+cpu") == (4, 57, 1)
    assert release("abc") is None
    assert release(None) is None


LLAVA_CONFIG = {
    "model_type": "llava",
    "architectures": ["LlavaForConditionalGeneration"],
    "text_config": {"model_type": "llama"},
    "vision_config": {"model_type": "clip_vision_model"},
}
LLAVA_OLD = {
    "language_model.model.layers.0.self_attn.q_proj.weight": _t(
        "language_model.model.layers.0.self_attn.q_proj.weight", 8, 8
    ),
    "language_model.lm_head.weight": _t("language_model.lm_head.weight", 16, 8),
    "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight": _t(
        "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight", 4, 4
    ),
    "multi_modal_projector.linear_1.weight": _t("multi_modal_projector.linear_1.weight", 8, 4),
}


def test_transformers_5_moves_vlm_prefixes() -> None:
    view = runtime_view(LLAVA_CONFIG, LLAVA_OLD, Stack("5.23.0", "0.21.2", "explicit"))
    assert sorted(view.tensors) == [
        "lm_head.weight",
        "model.language_model.layers.0.self_attn.q_proj.weight",
        "model.multi_modal_projector.linear_1.weight",
        "model.vision_tower.encoder.layers.0.self_attn.q_proj.weight",  # CLIPVisionModel drops vision_model.
    ]
    assert view.rules == "transformers 5.23.0 load conversions for LlavaForConditionalGeneration (llava)"
    assert view.notes == ()


def test_transformers_4_old_release_builds_checkpoint_names() -> None:
    view = runtime_view(LLAVA_CONFIG, LLAVA_OLD, Stack("4.45.0", "0.13.0", "lock"))
    assert set(view.tensors) == set(LLAVA_OLD)
    assert view.rules == "none: transformers 4.45.0 builds checkpoint names"


def test_transformers_4_52_vlm_key_mapping_is_approximated_and_says_so() -> None:
    view = runtime_view(LLAVA_CONFIG, LLAVA_OLD, Stack("4.57.1", "0.17.0", "lock"))
    assert "model.language_model.layers.0.self_attn.q_proj.weight" in view.tensors
    assert "approximated" in view.rules
    assert [n.code for n in view.notes] == ["RUNTIME-APPROXIMATE"]


def test_transformers_4_does_not_rename_gpt_neox_head() -> None:
    config = {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}
    tensors = {"embed_out.weight": _t("embed_out.weight", 16, 8)}
    assert set(runtime_view(config, tensors, Stack("4.57.1", None, "lock")).tensors) == {"embed_out.weight"}
    assert set(runtime_view(config, tensors, Stack("5.23.0", None, "lock")).tensors) == {"lm_head.weight"}


def test_newer_target_than_the_table_warns() -> None:
    view = runtime_view(LLAVA_CONFIG, LLAVA_OLD, Stack("5.99.0", None, "explicit"))
    assert [n.code for n in view.notes] == ["RUNTIME-TABLE-VERSION"]
    assert "newer" in view.notes[0].message
    assert view.notes[0].severity.value == "warning"


def test_unknown_transformers_version_uses_the_table_and_says_so() -> None:
    view = runtime_view(LLAVA_CONFIG, LLAVA_OLD, Stack(None, None, "installed"))
    assert transformers_table().version in view.rules
    assert "version unknown" in view.rules


def test_unknown_model_type_falls_back_to_checkpoint_names_with_a_warning() -> None:
    tensors = {"foo.layers.0.attention.query.weight": _t("foo.layers.0.attention.query.weight", 4, 4)}
    view = runtime_view({"model_type": "no_such_model"}, tensors, Stack("5.23.0", None, "explicit"))
    assert set(view.tensors) == set(tensors)
    assert [n.code for n in view.notes] == ["RUNTIME-UNKNOWN-MODEL"]
    assert view.notes[0].severity.value == "warning"


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": 7, "architectures": "LlavaForConditionalGeneration"},
        {"model_type": ["llava"] * 10_000, "architectures": [None] * 100_000},
        {"model_type": "x" * 10_000},
        {"architectures": [{"a": 1}], "text_config": "not a dict"},
        {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "text_config": {"model_type": 5}},
        {"model_type": "llava", "architectures": ["NoSuchClass"]},
        {},
    ],
)
def test_hostile_configs_never_crash(config: dict[str, object]) -> None:
    view = runtime_view(config, LLAVA_OLD, Stack("5.23.0", "0.21.2", "explicit"))
    assert len(view.tensors) == len(LLAVA_OLD)


def test_hostile_tensor_names_never_crash() -> None:
    names = ["a." + "9" * 5000 + ".weight", "model." + "layers." * 400 + "x", "language_model." + "x" * 3000]
    tensors = {n: _t(n, 2) for n in names}
    view = runtime_view(LLAVA_CONFIG, tensors, Stack("5.23.0", "0.21.2", "explicit"))
    assert len(view.tensors) == 3


def test_moe_regex_targets_resolve_and_bad_patterns_are_input_errors() -> None:
    from lora_lock.runtime import convert_moe_targets, moe_rules

    rules = moe_rules(
        {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"]}, Stack("5.23.0", "0.21.2", "x")
    )
    assert rules is not None
    names = ["model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"]
    res = convert_moe_targets(r".*\.(w1|w3)", None, 8, 16, rules, names)
    assert res.error is None and res.target_parameters == {"gate_up_proj"}
    assert res.rank_pattern == {r".*\.gate_up_proj": 16}
    half = convert_moe_targets(r".*\.w1", None, 8, 16, rules, names)
    assert half.error is not None and half.error.startswith(
        "Cannot convert PEFT target(s) w1 without also targeting w3"
    )
    with pytest.raises(InputError):
        convert_moe_targets("(", None, 8, 16, rules, names)


def test_adapter_keys_with_hostile_names_never_crash() -> None:
    from lora_lock.runtime import adapter_key_conversion, convert_adapter_keys

    conv = adapter_key_conversion(LLAVA_CONFIG, Stack("5.23.0", "0.21.2", "explicit"))
    assert conv is not None
    names = ["base_model.model." + "9" * 5000 + ".lora_A.weight", "x.lora_" * 300, "plain", "a.lora_B.weight"]
    out = convert_adapter_keys({n: _t(n, 2, 2) for n in names}, conv)
    assert len(out.tensors) == 4


def test_installed_versions_from_dist_info_names_equal_the_metadata() -> None:
    import importlib.metadata as md

    stack = installed_stack()
    for name, found in (("transformers", stack.transformers), ("peft", stack.peft)):
        try:
            expected: str | None = md.version(name)
        except md.PackageNotFoundError:
            expected = None
        assert found == expected, name
