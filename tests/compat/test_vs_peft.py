"""The static engine agrees with what PEFT actually does when it loads an adapter onto a base.

Every case builds (once per module) a tiny real base and loads the session's trained adapter onto it with
``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)``, then compares PEFT's behaviour
(raises, warns, silently drops tensors, or leaves modules untrained) with ``lora_lock.check``'s findings.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, cast

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

from lora_lock import Report, Severity, Status, check  # noqa: E402
from lora_lock.testing import tiny  # noqa: E402
from tests.fixtures.tiny_models import LLAMA_SHAPE, LLAMA_TARGETS, RANK, SEED, LlamaShape  # noqa: E402

pytestmark = pytest.mark.slow

PROMPT = "The quick brown fox jumps over the lazy dog."
MISSING_KEYS = "Found missing adapter keys"
ADAPTER_FILE = "adapter_model.safetensors"


# --- helpers -----------------------------------------------------------------------------------------------------


def codes(report: Report, severity: Severity = Severity.ERROR) -> set[str]:
    return {f.code for f in report.findings if f.severity is severity}


def describe(report: Report) -> str:
    return "; ".join(f"{f.severity.value} {f.code}: {f.message}" for f in report.findings) or "no findings"


def peft_load(base: Path, adapter: Path) -> tuple[Any, list[str]]:
    """Load like a user would; return the PeftModel and the texts of the warnings PEFT emitted while loading."""
    model = tiny.load_causal_lm(base)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = peft.PeftModel.from_pretrained(model, str(adapter))
    peft_model.eval()
    return peft_model, [str(w.message) for w in caught]


def missing_key_warnings(messages: list[str]) -> list[str]:
    return [m for m in messages if MISSING_KEYS in m]


def saved_tensors(adapter: Path) -> dict[str, Any]:
    return dict(safetensors_torch.load_file(str(adapter / ADAPTER_FILE)))


def key_diff(peft_model: Any, adapter: Path) -> tuple[set[str], set[str]]:
    """(missing, dropped): adapter tensors PEFT's model has but the file lacks, and file tensors PEFT dropped."""
    # save_embedding_layers=False: PEFT's "auto" adds the embeddings when the vocab differs from the named base's
    wanted = set(peft.get_peft_model_state_dict(peft_model, save_embedding_layers=False))
    have = set(saved_tensors(adapter))
    return wanted - have, have - wanted


def logits(model: Any, base: Path, prompt: str = PROMPT) -> Any:
    with torch.no_grad():
        return model(input_ids=tiny.encode(base, prompt)).logits


def kl(adapted: Any, plain: Any) -> float:
    """Mean over positions of KL(adapted ‖ plain) of the next-token distributions."""
    p, q = torch.log_softmax(adapted.float(), -1), torch.log_softmax(plain.float(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def module_pattern(key: str) -> str:
    """A saved or loaded key → its module pattern (``...layers.0.self_attn.k_proj.lora_B...`` → ``...layers.*...``)."""
    key = key.removeprefix("base_model.model.")
    module = re.split(r"\.(?:lora_[A-Za-z_]+|modules_to_save|base_layer)\b", key)[0]
    return re.sub(r"\.\d+(?=\.|$)", ".*", module.removesuffix(".weight"))


def mismatched_modules(error: BaseException) -> set[str]:
    """Module patterns PEFT names in a ``size mismatch for <key>`` load error."""
    return {module_pattern(k) for k in re.findall(r"size mismatch for (\S+?):", str(error))}


def finding_modules(report: Report, *codes_: str) -> set[str]:
    return {(f.subject or "").removesuffix(".weight") for f in report.findings if f.code in codes_}


def lora_params(peft_model: Any, layer: int, part: str) -> list[Any]:
    """The ``lora_A``/``lora_B`` weights PEFT holds for one decoder layer."""
    return [
        p
        for name, p in peft_model.named_parameters()
        if f".layers.{layer}." in name and f".{part}." in name and name.endswith(".weight")
    ]


def rewrite_keys(adapter: Path, out: Path, renames: dict[str, str]) -> Path:
    """Copy ``adapter`` to ``out`` with ``old → new`` substituted in every tensor name (a renamed architecture)."""
    shutil.copytree(adapter, out)
    tensors = saved_tensors(adapter)
    renamed = {}
    for key, value in tensors.items():
        for old, new in renames.items():
            key = key.replace(old, new)
        renamed[key] = value
    safetensors_torch.save_file(renamed, str(out / ADAPTER_FILE), metadata={"format": "pt"})
    return out


# --- module-scoped variant bases (built once; each a few hundred ms) ---------------------------------------------


def _variant(factory: pytest.TempPathFactory, tokenizer: Path, name: str, **changes: int) -> Path:
    shape = cast(LlamaShape, {**LLAMA_SHAPE, **changes})
    return tiny.build_tiny_llama(factory.mktemp(name), tokenizer, seed=SEED + 1, **shape)


@pytest.fixture(scope="module")
def llama_fewer_layers(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> Path:
    return _variant(tmp_path_factory, tiny_tokenizer, "llama-1-layer", layers=1)


@pytest.fixture(scope="module")
def llama_more_layers(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> Path:
    return _variant(tmp_path_factory, tiny_tokenizer, "llama-3-layers", layers=3)


@pytest.fixture(scope="module")
def llama_other_kv_heads(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> Path:
    return _variant(tmp_path_factory, tiny_tokenizer, "llama-4-kv-heads", kv_heads=4)


@pytest.fixture(scope="module")
def llama_larger_vocab(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> Path:
    """Same tokenizer, embedding and head padded from 1000 to 1280 rows (as real bases pad to a multiple)."""
    return _variant(tmp_path_factory, tiny_tokenizer, "llama-vocab-1280", vocab_size=1280)


@pytest.fixture(scope="module")
def attention_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return tiny.train_lora(
        tiny_llama, tmp_path_factory.mktemp("attn-adapter"), target_modules=["q_proj", "v_proj"], r=RANK, seed=SEED
    )


@pytest.fixture(scope="module")
def head_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """Attention LoRA plus a fully trained ``lm_head`` (``modules_to_save``): it carries the vocabulary size."""
    return tiny.train_lora(
        tiny_llama,
        tmp_path_factory.mktemp("head-adapter"),
        target_modules=["q_proj", "v_proj"],
        modules_to_save=["lm_head"],
        r=RANK,
        seed=SEED,
    )


@pytest.fixture(scope="module")
def embedding_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """LoRA on ``embed_tokens`` (``lora_embedding_A [r, V]``); PEFT also saves the full embedding as ``base_layer``."""
    return tiny.train_lora(
        tiny_llama,
        tmp_path_factory.mktemp("embedding-adapter"),
        target_modules=["embed_tokens", "q_proj"],
        r=RANK,
        seed=SEED,
    )


@pytest.fixture(scope="module")
def layer1_regex_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """``target_modules`` as a regex naming layer 1 only."""
    return tiny.train_lora(
        tiny_llama,
        tmp_path_factory.mktemp("regex-adapter"),
        target_modules=r".*\.1\.self_attn\.(q|v)_proj",
        r=RANK,
        seed=SEED,
    )


@pytest.fixture(scope="module")
def dora_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return tiny.train_lora(
        tiny_llama,
        tmp_path_factory.mktemp("dora-adapter"),
        target_modules=["q_proj", "k_proj", "v_proj"],
        use_dora=True,
        r=RANK,
        seed=SEED,
    )


# --- the builders themselves -------------------------------------------------------------------------------------


def test_tiny_builders_are_deterministic(tmp_path: Path, tiny_tokenizer: Path, tiny_llama: Path) -> None:
    again = tiny.train_bpe_tokenizer(tmp_path / "tok", vocab_size=1000)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (again / name).read_bytes() == (tiny_tokenizer / name).read_bytes(), name
    first = tiny.train_lora(tiny_llama, tmp_path / "a1", target_modules=["q_proj"], steps=3, seed=7)
    second = tiny.train_lora(tiny_llama, tmp_path / "a2", target_modules=["q_proj"], steps=3, seed=7)
    for name in (ADAPTER_FILE, "adapter_config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_tiny_tokenizer_loads_with_transformers(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama), local_files_only=True)
    assert len(tokenizer) == 1000
    chat = [{"role": "user", "content": "hi"}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == "<s><|user|>hi<|end|><|assistant|>"
    assert tokenizer.decode(tokenizer("Привет, мир! 你好").input_ids, skip_special_tokens=True) == "Привет, мир! 你好"


def test_tiny_adapter_names_its_base_and_changes_outputs(tiny_llama: Path, tiny_llama_adapter: Path) -> None:
    config = json.loads((tiny_llama_adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_llama)
    assert sorted(config["target_modules"]) == sorted(LLAMA_TARGETS)
    assert tiny.adapter_kl(tiny_llama, tiny_llama_adapter, PROMPT) > 0.05


# --- (a) the right base ------------------------------------------------------------------------------------------


def test_right_base_check_passes_and_peft_loads_every_tensor(tiny_llama: Path, tiny_llama_adapter: Path) -> None:
    report = check(tiny_llama_adapter, tiny_llama)
    assert report.status is Status.PASS, describe(report)
    assert not codes(report, Severity.WARNING), describe(report)  # the adapter names this very directory

    model, messages = peft_load(tiny_llama, tiny_llama_adapter)
    assert missing_key_warnings(messages) == []
    missing, dropped = key_diff(model, tiny_llama_adapter)
    assert missing == set() and dropped == set()
    loaded = peft.get_peft_model_state_dict(model, save_embedding_layers=False)
    for key, value in saved_tensors(tiny_llama_adapter).items():
        assert torch.equal(loaded[key], value), key
    adapted = logits(model, tiny_llama)
    with model.disable_adapter():
        plain = logits(model, tiny_llama)
    assert kl(adapted, plain) > 0.05  # the trained adapter really acts


def test_dora_on_right_base_passes_and_loads(tiny_llama: Path, dora_adapter: Path) -> None:
    report = check(dora_adapter, tiny_llama)
    assert report.status is Status.PASS, describe(report)
    model, messages = peft_load(tiny_llama, dora_adapter)
    assert missing_key_warnings(messages) == []
    assert key_diff(model, dora_adapter) == (set(), set())
    assert any(k.endswith("lora_magnitude_vector") for k in saved_tensors(dora_adapter))


# --- (b) fewer layers: PEFT drops tensors without a word ---------------------------------------------------------


def test_fewer_layers_peft_drops_silently_and_check_reports_unmatched(
    tiny_llama_adapter: Path, llama_fewer_layers: Path
) -> None:
    model, messages = peft_load(llama_fewer_layers, tiny_llama_adapter)  # does not raise
    assert missing_key_warnings(messages) == []  # and says nothing
    missing, dropped = key_diff(model, tiny_llama_adapter)
    assert missing == set()
    assert dropped and all(".layers.1." in key for key in dropped)
    assert len(dropped) == 2 * len(LLAMA_TARGETS)  # lora_A and lora_B of every layer-1 module
    assert lora_params(model, 0, "lora_A") and not lora_params(model, 1, "lora_A")

    report = check(tiny_llama_adapter, llama_fewer_layers)
    assert report.status is Status.FAIL
    assert "COMPAT-UNMATCHED" in codes(report), describe(report)
    unmatched = next(f for f in report.findings if f.code == "COMPAT-UNMATCHED")
    assert f"{len(LLAMA_TARGETS)} of its {2 * len(LLAMA_TARGETS)} LoRA modules" in unmatched.message
    assert f"{len(dropped)} tensors" in unmatched.message


# --- (c) other KV heads: PEFT refuses loudly ---------------------------------------------------------------------


def test_other_kv_heads_peft_raises_and_check_reports_shape(
    tiny_llama_adapter: Path, llama_other_kv_heads: Path
) -> None:
    with pytest.raises(RuntimeError, match="size mismatch") as raised:
        peft_load(llama_other_kv_heads, tiny_llama_adapter)

    report = check(tiny_llama_adapter, llama_other_kv_heads)
    assert report.status is Status.FAIL
    assert "COMPAT-SHAPE" in codes(report), describe(report)
    # The same modules, named by both: PEFT's error and the engine's findings.
    expected = {"model.layers.*.self_attn.k_proj", "model.layers.*.self_attn.v_proj"}
    assert mismatched_modules(raised.value) == expected
    assert finding_modules(report, "COMPAT-SHAPE") == expected
    hints = " ".join(f.hint or "" for f in report.findings if f.code == "COMPAT-SHAPE")
    assert "KV heads" in hints


def test_dora_other_kv_heads_peft_raises_and_check_reports_shape(
    dora_adapter: Path, llama_other_kv_heads: Path
) -> None:
    with pytest.raises(RuntimeError, match="size mismatch") as raised:
        peft_load(llama_other_kv_heads, dora_adapter)
    assert "lora_magnitude_vector" in str(raised.value)
    report = check(dora_adapter, llama_other_kv_heads)
    assert finding_modules(report, "COMPAT-SHAPE") == mismatched_modules(raised.value)


# --- (d) renamed modules: PEFT only warns, and the adapter does nothing --------------------------------------------


def test_renamed_modules_peft_warns_adapter_has_no_effect_and_check_reports_no_match(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path
) -> None:
    renamed = rewrite_keys(
        tiny_llama_adapter, tmp_path / "renamed", {".self_attn.": ".attention.", ".mlp.": ".feed_forward."}
    )
    model, messages = peft_load(tiny_llama, renamed)  # does not raise
    assert len(missing_key_warnings(messages)) <= 1  # at most a warning
    missing, dropped = key_diff(model, renamed)
    assert dropped == set(saved_tensors(renamed))  # every tensor dropped
    assert len(missing) == len(dropped)  # and every targeted module got PEFT's fresh init instead

    base_logits = logits(tiny.load_causal_lm(tiny_llama), tiny_llama)
    assert torch.equal(logits(model, tiny_llama), base_logits)  # zero lora_B: bitwise the base

    report = check(renamed, tiny_llama)
    assert report.status is Status.FAIL
    assert "COMPAT-NO-MATCH" in codes(report), describe(report)


def test_partly_renamed_modules_check_reports_unmatched(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path
) -> None:
    renamed = rewrite_keys(tiny_llama_adapter, tmp_path / "renamed", {".self_attn.": ".attention."})
    model, messages = peft_load(tiny_llama, renamed)
    warned = missing_key_warnings(messages)
    assert len(warned) == 1 and "self_attn" in warned[0] and ".mlp." not in warned[0]
    _, dropped = key_diff(model, renamed)
    assert dropped and all(".attention." in key for key in dropped)

    report = check(renamed, tiny_llama)
    assert report.status is Status.FAIL
    assert {"COMPAT-UNMATCHED", "COMPAT-UNTRAINED"} <= codes(report), describe(report)
    untrained = next(f for f in report.findings if f.code == "COMPAT-UNTRAINED")
    assert ".mlp." not in untrained.message


# --- (e) more layers: PEFT loads, the new layers get a zero lora_B ----------------------------------------------------


def test_more_layers_peft_zero_inits_new_layers_and_check_reports_untrained(
    tiny_llama_adapter: Path, llama_more_layers: Path
) -> None:
    model, messages = peft_load(llama_more_layers, tiny_llama_adapter)  # does not raise
    missing, dropped = key_diff(model, tiny_llama_adapter)
    assert dropped == set()
    assert missing and all(".layers.2." in key for key in missing)
    assert len(missing) == 2 * len(LLAMA_TARGETS)
    assert all(".layers.2." in w for w in missing_key_warnings(messages))
    new_b = lora_params(model, 2, "lora_B")
    assert len(new_b) == len(LLAMA_TARGETS) and all(bool((p == 0).all()) for p in new_b)
    assert all(bool((p != 0).any()) for p in lora_params(model, 1, "lora_B"))

    report = check(tiny_llama_adapter, llama_more_layers)
    assert report.status is Status.FAIL
    assert "COMPAT-UNTRAINED" in codes(report), describe(report)
    untrained = next(f for f in report.findings if f.code == "COMPAT-UNTRAINED")
    assert untrained.actual == f"{len(LLAMA_TARGETS)} without weights"


# --- (f) GPT-2's Conv1D -----------------------------------------------------------------------------------------------


def test_gpt2_conv1d_adapter_on_its_base(tiny_gpt2: Path, tiny_gpt2_adapter: Path) -> None:
    assert json.loads((tiny_gpt2_adapter / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    report = check(tiny_gpt2_adapter, tiny_gpt2)
    assert report.status is Status.PASS, describe(report)

    model, messages = peft_load(tiny_gpt2, tiny_gpt2_adapter)
    assert missing_key_warnings(messages) == []
    assert key_diff(model, tiny_gpt2_adapter) == (set(), set())
    adapted = logits(model, tiny_gpt2)
    with model.disable_adapter():
        plain = logits(model, tiny_gpt2)
    assert kl(adapted, plain) > 0.01


# --- (g) vocabulary ---------------------------------------------------------------------------------------------------


def test_larger_vocab_attention_adapter_peft_silent_and_check_passes(
    attention_adapter: Path, llama_larger_vocab: Path
) -> None:
    """An attention-only adapter never touches the embedding, so a padded vocabulary is not a compat problem.

    Whether the tokenizer still maps text to the same ids is the tokenizer's business (the lock's ``[tokenizer]``
    section and its canary fingerprint), not the static shape check's.
    """
    model, messages = peft_load(llama_larger_vocab, attention_adapter)
    assert missing_key_warnings(messages) == []
    assert key_diff(model, attention_adapter) == (set(), set())

    report = check(attention_adapter, llama_larger_vocab)
    assert report.status is Status.PASS, describe(report)
    assert not {c for c in codes(report) if c.startswith("COMPAT-")}
    assert codes(report, Severity.WARNING) <= {"COMPAT-IDENTITY"}  # another directory than the one it names


def test_larger_vocab_saved_head_peft_raises_and_check_reports_saved_shape(
    head_adapter: Path, tiny_llama: Path, llama_larger_vocab: Path
) -> None:
    assert check(head_adapter, tiny_llama).status is Status.PASS
    with pytest.raises(RuntimeError, match="size mismatch") as raised:
        peft_load(llama_larger_vocab, head_adapter)

    report = check(head_adapter, llama_larger_vocab)
    assert report.status is Status.FAIL
    assert "COMPAT-SAVED-SHAPE" in codes(report), describe(report)
    assert mismatched_modules(raised.value) == {"lm_head"}
    assert finding_modules(report, "COMPAT-SAVED-SHAPE") == {"lm_head"}


def test_embedding_lora_on_larger_vocab_peft_raises_and_check_reports_shape(
    embedding_adapter: Path, tiny_llama: Path, llama_larger_vocab: Path
) -> None:
    assert check(embedding_adapter, tiny_llama).status is Status.PASS
    with pytest.raises(RuntimeError, match="size mismatch") as raised:
        peft_load(llama_larger_vocab, embedding_adapter)

    report = check(embedding_adapter, llama_larger_vocab)
    assert report.status is Status.FAIL
    assert mismatched_modules(raised.value) == {"model.embed_tokens"}
    assert finding_modules(report, "COMPAT-SHAPE") == {"model.embed_tokens"}
    hints = " ".join(f.hint or "" for f in report.findings if f.code == "COMPAT-SHAPE")
    assert "vocabulary of 1000 tokens" in hints


def test_embedding_lora_saved_base_layer_is_peft_standard(embedding_adapter: Path, tiny_llama: Path) -> None:
    key = "base_model.model.model.embed_tokens.base_layer.weight"
    saved = saved_tensors(embedding_adapter)
    assert key in saved  # PEFT's save_embedding_layers="auto" saves the full embedding next to the LoRA
    model, _ = peft_load(tiny_llama, embedding_adapter)
    assert torch.equal(model.get_base_model().model.embed_tokens.base_layer.weight, saved[key])  # and loads it

    report = check(embedding_adapter, tiny_llama)
    assert "ADAPTER-UNLISTED-SAVED" not in codes(report, Severity.WARNING), describe(report)
    assert not any(".base_layer" in (f.subject or "") for f in report.findings), describe(report)


# --- nothing the adapter targets exists in the base: PEFT refuses -----------------------------------------------------


@pytest.mark.parametrize(
    ("adapter_fixture", "base_fixture"),
    [("tiny_llama_adapter", "tiny_gpt2"), ("layer1_regex_adapter", "llama_fewer_layers")],
    ids=["llama-adapter-on-gpt2", "regex-layer-1-on-1-layer-base"],
)
def test_no_targeted_module_peft_refuses_and_check_reports_no_target(
    request: pytest.FixtureRequest, adapter_fixture: str, base_fixture: str
) -> None:
    adapter: Path = request.getfixturevalue(adapter_fixture)
    base: Path = request.getfixturevalue(base_fixture)
    with pytest.raises(ValueError, match="not found in the base model"):
        peft_load(base, adapter)

    report = check(adapter, base)
    assert report.status is Status.FAIL
    assert "COMPAT-NO-TARGET" in codes(report), describe(report)
    assert not any("without an error" in f.message for f in report.findings), describe(report)


def test_identity_finding_does_not_claim_shapes_fit_when_they_do_not(
    tiny_llama_adapter: Path, llama_other_kv_heads: Path
) -> None:
    report = check(tiny_llama_adapter, llama_other_kv_heads)
    assert "COMPAT-SHAPE" in codes(report)
    assert not any("shapes fit" in f.message for f in report.findings), describe(report)


# --- PEFT's own conventions: conv DoRA magnitude, modules_to_save suffixes, the all-linear shorthand ----------------


def test_dora_on_a_conv_layer_loads_and_passes(tmp_path: Path) -> None:
    """PEFT's DoRA on a Conv2d keeps the weight's axes in its magnitude ([1, out, 1, 1]); PEFT loads it."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    base = tmp_path / "vit"
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    ViTModel(config).save_pretrained(base)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["projection"], use_dora=True, init_lora_weights=False)
    peft.get_peft_model(ViTModel.from_pretrained(base), lora).save_pretrained(tmp_path / "adapter")
    magnitude = [v for k, v in saved_tensors(tmp_path / "adapter").items() if "magnitude" in k]
    assert [tuple(m.shape) for m in magnitude] == [(1, 32, 1, 1)]
    peft.PeftModel.from_pretrained(ViTModel.from_pretrained(base), str(tmp_path / "adapter"))  # loads

    report = check(tmp_path / "adapter", base)
    assert report.status is Status.PASS, describe(report)


def test_modules_to_save_entries_match_by_suffix_as_in_peft(tiny_llama: Path, tmp_path: Path) -> None:
    """PEFT wraps every module whose name ends with an entry: ``"head"`` wraps and saves ``lm_head``."""
    lora = peft.LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["head"], init_lora_weights=False)
    model = peft.get_peft_model(tiny.load_causal_lm(tiny_llama), lora)
    wrapped = [n for n, m in model.named_modules() if type(m).__name__ == "ModulesToSaveWrapper"]
    assert wrapped and all(n.endswith("lm_head") for n in wrapped)
    model.save_pretrained(tmp_path / "adapter")
    assert any(".lm_head." in k for k in saved_tensors(tmp_path / "adapter"))

    report = check(tmp_path / "adapter", tiny_llama)
    assert "ADAPTER-UNLISTED-SAVED" not in codes(report, Severity.WARNING), describe(report)
    assert report.status is Status.PASS, describe(report)


def test_the_all_linear_shorthand_is_read_in_any_case(tiny_llama: Path, tmp_path: Path) -> None:
    lora = peft.LoraConfig(r=RANK, target_modules="ALL-LINEAR", init_lora_weights=False)
    peft.get_peft_model(tiny.load_causal_lm(tiny_llama), lora).save_pretrained(tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["target_modules"] = "ALL-LINEAR"  # as hand-written (PEFT saves the expanded names)
    config_path.write_text(json.dumps(config), encoding="utf-8")
    peft_model, _ = peft_load(tiny_llama, tmp_path / "adapter")
    assert key_diff(peft_model, tmp_path / "adapter") == (set(), set())

    report = check(tmp_path / "adapter", tiny_llama)
    assert report.status is Status.PASS, describe(report)
