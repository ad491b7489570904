"""Real adapters from public repositories (../shared/corpus/real-adapters, described by its INDEX.md).

Every config must parse; every adapter with weights must pass ``check`` on a header-only base of the architecture
it names and fail, for the right reason, on a wrong one; the oddities INDEX.md lists are asserted one by one.
The corpus is input only: a module fixture proves no file in it changed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from lora_lock import Finding, InputError, Report, Severity, Status, check
from lora_lock.inspect.adapter import read_adapter, read_adapter_config
from lora_lock.runtime import parse_stack
from tests.fixtures.header_bases import HeaderBase
from tests.helpers import CORPUS

if not CORPUS.is_dir():
    pytest.skip(f"the real-adapter corpus is not here ({CORPUS})", allow_module_level=True)

FOLDERS = sorted(p.name for p in CORPUS.iterdir() if (p / "adapter_config.json").is_file())
WITH_WEIGHTS = sorted(f for f in FOLDERS if (CORPUS / f / "adapter_model.safetensors").is_file())
CONFIG_ONLY = sorted(set(FOLDERS) - set(WITH_WEIGHTS))
IDENTITY = "COMPAT-IDENTITY"
NO_WEIGHTS = "ADAPTER-NO-WEIGHTS"


def folder(prefix: str) -> str:
    (match,) = [f for f in FOLDERS if f.startswith(prefix)]
    return match


def codes(report: Report, severity: Severity) -> set[str]:
    return {f.code for f in report.findings if f.severity is severity}


def describe(report: Report) -> str:
    return "\n".join(f"{f.severity.value} {f.code} {f.subject}: {f.message} [hint: {f.hint}]" for f in report.findings)


def only(report: Report, code: str) -> Finding:
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, describe(report)
    return found[0]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module", autouse=True)
def corpus_is_untouched() -> Iterator[None]:
    before = _digest(CORPUS)
    yield
    assert _digest(CORPUS) == before, "a test modified the corpus"


# --- the corpus as INDEX.md describes it ---------------------------------------------------------------------------

#: INDEX.md "Weights files": tensor count and dtype of each adapter_model.safetensors.
TENSORS: dict[str, tuple[int, str]] = {
    "abrhaleyarefaine1997": (72, "F32"),
    "amirhnazerii": (52, "F32"),
    "anirudh-ak": (25, "F32"),
    "BK7195": (48, "F16"),
    "dayanidhi04": (28, "F32"),
    "deepbiolab": (73, "F32"),
    "guilhermmeabreu": (48, "BF16"),
    "Hareshjethani": (50, "F32"),
    "lockheed886": (50, "F32"),
    "LusterSourav": (96, "F32"),
    "SARAELSAFTY": (48, "F32"),
    "Shahid-Mo": (24, "F32"),
    "Tashu014": (28, "F32"),
    "TFM-HITESH": (120, "F32"),
}


def test_corpus_holds_35_adapters_14_with_weights() -> None:
    assert len(FOLDERS) == 35
    assert sorted(folder(p) for p in TENSORS) == WITH_WEIGHTS
    # No folder has pickle weights: the one adapter that had them (xiangzuo2022) was copied without them.
    assert not list(CORPUS.rglob("*.bin"))


@pytest.mark.parametrize("name", FOLDERS)
def test_every_config_parses(name: str) -> None:
    config = read_adapter_config(CORPUS / name / "adapter_config.json")
    assert config.peft_type in ("LORA", "ADALORA")
    assert config.target_modules
    raw = json.loads((CORPUS / name / "adapter_config.json").read_text())
    assert config.base_model_name_or_path == raw.get("base_model_name_or_path")
    if isinstance(raw["target_modules"], list):
        assert set(config.target_modules) == set(raw["target_modules"])  # PEFT saves a set: order is noise


@pytest.mark.parametrize("prefix", sorted(TENSORS))
def test_every_weights_header_reads(prefix: str) -> None:
    adapter = read_adapter(CORPUS / folder(prefix))
    assert adapter.weights is not None
    count, dtype = TENSORS[prefix]
    assert len(adapter.weights.tensors) == count
    assert {t.dtype for t in adapter.weights.tensors.values()} == {dtype}
    assert adapter.weights.metadata == {"format": "pt"}
    assert all(name.startswith("base_model.model.") for name in adapter.weights.tensors)


@pytest.mark.parametrize("name", CONFIG_ONLY)
def test_config_only_adapters_need_weights_unless_told_otherwise(name: str) -> None:
    with pytest.raises(InputError, match=r"adapter_model\.safetensors"):
        read_adapter(CORPUS / name)
    assert read_adapter(CORPUS / name, require_weights=False).weights is None


def test_pickle_weights_are_refused(tmp_path: Path) -> None:
    # xiangzuo2022's repository holds adapter_model.bin (pickle) next to this config; the corpus left it out, so
    # the refusal is shown on a copy of the config with a stand-in .bin (never unpickled, so its bytes do not matter).
    source = CORPUS / folder("xiangzuo2022")
    assert "adapter_model.bin (pickle)" in (source / "SOURCE.txt").read_text()
    adapter = tmp_path / "lora-flan-t5-small"
    adapter.mkdir()
    shutil.copyfile(source / "adapter_config.json", adapter / "adapter_config.json")
    (adapter / "adapter_model.bin").write_bytes(b"PK\x03\x04not a real pickle")
    with pytest.raises(InputError, match="only pickle weights") as exc:
        read_adapter(adapter)
    assert "adapter_model.bin" in exc.value.message and exc.value.hint is not None
    with pytest.raises(InputError, match="only pickle weights"):
        read_adapter(adapter, require_weights=False)


# --- every adapter with weights, on its base and on a wrong one ------------------------------------------------------


class Base(NamedTuple):
    key: str
    overrides: Mapping[str, Any] | None = None
    snapshot: str | None = None  # build it as the Hub cache snapshot of this repo (identity can be confirmed)


#: The base each adapter names (as header-only bases) and the warnings check gives on it. Bases named with an org
#: are built in the Hub cache layout, where lora-lock confirms identity; bare ids (gpt2, bert-base-uncased) cannot
#: be confirmed (see test_compat_headers.test_bare_repo_id_snapshot_confirms_identity), nor a modified base.
RIGHT: dict[str, tuple[Base, set[str]]] = {
    "abrhaleyarefaine1997": (Base("gpt2"), {IDENTITY}),
    "amirhnazerii": (Base("roberta-base", snapshot="FacebookAI/roberta-base"), set()),
    "anirudh-ak": (Base("gpt2"), {IDENTITY}),
    "BK7195": (Base("open-calm-1b", snapshot="cyberagent/open-calm-1b"), set()),
    "dayanidhi04": (Base("distilbert-base-uncased"), {IDENTITY}),
    "deepbiolab": (Base("gpt2"), {IDENTITY}),
    "guilhermmeabreu": (Base("opt-125m", snapshot="facebook/opt-125m"), set()),
    "Hareshjethani": (Base("bert-base-uncased"), {IDENTITY}),
    # The food classifier has 101 classes: the base it runs on is ViT loaded with num_labels=101.
    "lockheed886": (
        Base("vit-base-patch16-224", overrides={"id2label": {str(i): f"food_{i}" for i in range(101)}}),
        {IDENTITY},
    ),
    "LusterSourav": (Base("gpt-oss-20b", snapshot="togethercomputer/gpt-oss-20b-bf16"), set()),
    "SARAELSAFTY": (Base("gpt-neo-125m", snapshot="EleutherAI/gpt-neo-125M"), set()),
    "Shahid-Mo": (Base("distilgpt2", snapshot="distilbert/distilgpt2"), set()),
    "Tashu014": (Base("distilbert-base-uncased"), {IDENTITY}),
    "TFM-HITESH": (Base("smollm-135m", snapshot="HuggingFaceTB/SmolLM-135M-Instruct"), set()),
}

#: A wrong base for each: the error codes check must give (exactly) and words its messages must contain.
WRONG: dict[str, tuple[Base, set[str], tuple[str, ...]]] = {
    "abrhaleyarefaine1997": (Base("distilgpt2"), {"COMPAT-UNMATCHED"}, ("18 of its 36", "layers 6-11")),
    "amirhnazerii": (Base("bert-base-uncased"), {"COMPAT-NO-MATCH", "COMPAT-UNTRAINED"}, ("no effect at all",)),
    "anirudh-ak": (Base("gpt-neo-125m"), {"COMPAT-NO-TARGET"}, ("[c_attn]",)),
    # open-calm-3b's shape: hidden 2560, 32 layers.
    "BK7195": (
        Base("open-calm-1b", overrides={"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 32}),
        {"COMPAT-SHAPE", "COMPAT-UNTRAINED"},
        ("hidden size 2048; this base has 2560", "layers 24-31"),
    ),
    "dayanidhi04": (Base("bert-base-uncased"), {"COMPAT-NO-TARGET"}, ("[q_lin, v_lin]",)),
    "deepbiolab": (Base("distilgpt2"), {"COMPAT-UNMATCHED"}, ("layers 6-11", "at least 12 layers")),
    "guilhermmeabreu": (Base("gpt-neo-125m"), {"COMPAT-NO-MATCH", "COMPAT-UNTRAINED"}, ("no effect at all",)),
    "Hareshjethani": (Base("distilbert-base-uncased"), {"COMPAT-NO-TARGET"}, ("[query, value]",)),
    "lockheed886": (Base("vit-base-patch16-224"), {"COMPAT-SAVED-SHAPE"}, ("[101, 768]", "[1000, 768]")),
    "LusterSourav": (
        Base("llama-3-8b"),
        {"COMPAT-SHAPE", "COMPAT-UNTRAINED"},
        ("hidden size 2880; this base has 4096", "layers 24-31"),
    ),
    "SARAELSAFTY": (Base("opt-125m"), {"COMPAT-NO-MATCH", "COMPAT-UNTRAINED"}, ("no effect at all",)),
    "Shahid-Mo": (Base("gpt2"), {"COMPAT-UNTRAINED"}, ("layers 6-11",)),
    "Tashu014": (Base("bert-base-uncased"), {"COMPAT-NO-TARGET"}, ("[q_lin, v_lin]",)),
    "TFM-HITESH": (
        Base("llama-3-8b"),
        {"COMPAT-SHAPE", "COMPAT-UNTRAINED"},
        ("hidden size 576; this base has 4096", "layers 30-31"),
    ),
}


#: Adapters made for transformers 4 names that transformers 5 renamed: checked with the stack they were trained on
#: (the installed transformers 5 is its own test below: PEFT refuses them there).
TRAINED_ON_V4 = {"lockheed886": parse_stack("transformers==4.57.1,peft==0.17.1")}


def build(header_base: HeaderBase, base: Base) -> Path:
    return header_base(base.key, overrides=base.overrides, snapshot=base.snapshot)


def test_every_adapter_with_weights_has_a_right_and_a_wrong_base() -> None:
    assert sorted(folder(p) for p in RIGHT) == sorted(folder(p) for p in WRONG) == WITH_WEIGHTS


@pytest.mark.parametrize("prefix", sorted(RIGHT))
def test_adapter_passes_on_the_base_it_names(prefix: str, header_base: HeaderBase) -> None:
    base, warnings = RIGHT[prefix]
    report = check(CORPUS / folder(prefix), build(header_base, base), stack=TRAINED_ON_V4.get(prefix))
    assert report.status is Status.PASS, describe(report)
    assert codes(report, Severity.ERROR) == set(), describe(report)
    assert codes(report, Severity.WARNING) == warnings, describe(report)


@pytest.mark.parametrize("prefix", sorted(WRONG))
def test_adapter_fails_on_a_wrong_base_for_the_right_reason(prefix: str, header_base: HeaderBase) -> None:
    base, expected, words = WRONG[prefix]
    report = check(CORPUS / folder(prefix), build(header_base, base), stack=TRAINED_ON_V4.get(prefix))
    assert report.status is Status.FAIL, describe(report)
    assert codes(report, Severity.ERROR) == expected, describe(report)
    text = "\n".join(f"{f.message} {f.hint or ''}" for f in report.findings if f.severity is Severity.ERROR)
    for word in words:
        assert word in text, describe(report)


def test_vit_query_value_adapter_is_refused_on_transformers_5(header_base: HeaderBase) -> None:
    # transformers 5 builds ViT's attention as q_proj / k_proj / v_proj: PEFT finds no `query` / `value` module
    base, _ = RIGHT["lockheed886"]
    report = check(CORPUS / folder("lockheed886"), build(header_base, base))
    assert report.status is Status.FAIL, describe(report)
    refused = only(report, "COMPAT-NO-TARGET")
    assert "NoMatchingPeftModuleError" in refused.message and "[query, value]" in refused.message


@pytest.mark.parametrize(("prefix", "wrong"), [("SARAELSAFTY", "opt-125m"), ("guilhermmeabreu", "gpt-neo-125m")])
def test_cross_architecture_hint_does_not_invent_renames(prefix: str, wrong: str, header_base: HeaderBase) -> None:
    hint = only(check(CORPUS / folder(prefix), header_base(wrong)), "COMPAT-NO-MATCH").hint or ""
    assert not re.search(r"`\d+` →|→ `\d+`", hint), hint
    assert "→ `q_proj`" not in hint and "→ `v_proj`" not in hint, hint


# --- the oddities INDEX.md lists -----------------------------------------------------------------------------------


def test_seq_cls_head_saved_with_modules_to_save_null(header_base: HeaderBase, tmp_path: Path) -> None:
    # anirudh-ak: SEQ_CLS, modules_to_save null, yet the file carries score.weight [6, 768]. PEFT adds the
    # classifier/score head to modules_to_save by itself for SEQ_CLS, so the saved head is expected.
    source = CORPUS / folder("anirudh-ak")
    adapter = read_adapter(source)
    assert adapter.config.task_type == "SEQ_CLS" and adapter.config.modules_to_save == ()
    assert adapter.weights is not None
    assert adapter.weights.tensors["base_model.model.score.weight"].shape == (6, 768)
    gpt2 = header_base("gpt2")
    report = check(source, gpt2)
    assert report.status is Status.PASS and codes(report, Severity.WARNING) == {IDENTITY}, describe(report)
    # The same file under a causal-LM config: nothing asks PEFT to load `score`, so the head is flagged.
    causal = tmp_path / "causal"
    causal.mkdir()
    config = json.loads((source / "adapter_config.json").read_text()) | {"task_type": "CAUSAL_LM"}
    (causal / "adapter_config.json").write_text(json.dumps(config))
    shutil.copyfile(source / "adapter_model.safetensors", causal / "adapter_model.safetensors")
    unlisted = only(check(causal, gpt2), "ADAPTER-UNLISTED-SAVED")
    assert unlisted.subject == "score" and unlisted.severity is Severity.WARNING


def test_pre_classifier_is_listed_by_the_classifier_entry(header_base: HeaderBase) -> None:
    # Tashu014: modules_to_save lists classifier and score; the file also has pre_classifier.*. PEFT wraps every
    # module whose name ends with an entry (`key.endswith("classifier")`), so pre_classifier was wrapped, trained
    # and saved as a listed module: nothing loads into the base.
    source = CORPUS / folder("Tashu014")
    assert set(read_adapter_config(source / "adapter_config.json").modules_to_save) == {"classifier", "score"}
    assert any(".pre_classifier." in name for name in read_adapter(source).weights.tensors)  # type: ignore[union-attr]
    report = check(source, header_base("distilbert-base-uncased"))
    assert "ADAPTER-UNLISTED-SAVED" not in codes(report, Severity.WARNING)


def test_duplicate_modules_to_save_entry_and_listed_pre_classifier(header_base: HeaderBase) -> None:
    # dayanidhi04: modules_to_save = pre_classifier, classifier, classifier, score.
    source = CORPUS / folder("dayanidhi04")
    raw = json.loads((source / "adapter_config.json").read_text())
    assert raw["modules_to_save"].count("classifier") == 2
    config = read_adapter_config(source / "adapter_config.json")
    assert sorted(config.modules_to_save) == ["classifier", "pre_classifier", "score"]
    report = check(source, header_base("distilbert-base-uncased"))
    assert "ADAPTER-UNLISTED-SAVED" not in codes(report, Severity.WARNING)


@pytest.mark.parametrize(
    ("prefix", "present"), [("deepbiolab", "score"), ("Hareshjethani", "classifier"), ("amirhnazerii", "classifier")]
)
def test_heads_named_but_absent_are_not_reported(prefix: str, present: str) -> None:
    # modules_to_save names both classifier and score; only the one the architecture has is saved.
    adapter = read_adapter(CORPUS / folder(prefix))
    assert {"classifier", "score"} <= set(adapter.config.modules_to_save)
    assert adapter.weights is not None
    heads = {n.split(".")[2] for n in adapter.weights.tensors if n.split(".")[2] in ("classifier", "score")}
    assert heads == {present}
    # ... and test_adapter_passes_on_the_base_it_names shows check says nothing about the absent one.


def test_bare_c_proj_hits_attention_and_mlp(header_base: HeaderBase) -> None:
    # abrhaleyarefaine1997: target_modules c_attn, c_proj; `c_proj` is attn.c_proj and mlp.c_proj in every block.
    adapter = read_adapter(CORPUS / folder("abrhaleyarefaine1997"))
    assert adapter.weights is not None
    modules = {n.removesuffix(".lora_A.weight") for n in adapter.weights.tensors if n.endswith(".lora_A.weight")}
    assert len(modules) == 36
    assert sum(m.endswith("mlp.c_proj") for m in modules) == sum(m.endswith("attn.c_proj") for m in modules) == 12
    c_attn_b = adapter.weights.tensors["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"]
    assert c_attn_b.shape == (2304, 8)  # Conv1D keeps the Linear LoRA layout (fan_in_fan_out)
    report = check(CORPUS / folder("abrhaleyarefaine1997"), header_base("gpt2"))
    assert report.status is Status.PASS, describe(report)


@pytest.mark.parametrize(
    ("prefix", "key", "repo", "unused"),
    [
        ("shettysaish20", "phi-2", "microsoft/phi-2", "dense_4h_to_h, dense_h_to_4h, query_key_value"),
        ("GowthamNats", "phi-1_5", "microsoft/phi-1_5", "Wqkv, out_proj"),
    ],
)
def test_remote_code_phi_target_names(prefix: str, key: str, repo: str, unused: str, header_base: HeaderBase) -> None:
    report = check(CORPUS / folder(prefix), header_base(key, snapshot=repo))
    assert report.status is Status.PASS, describe(report)
    assert codes(report, Severity.WARNING) == {NO_WEIGHTS, "COMPAT-TARGET-UNUSED"}, describe(report)
    finding = only(report, "COMPAT-TARGET-UNUSED")
    assert finding.actual == unused and finding.hint is not None and "Wqkv" in finding.hint


def test_chatglm_legacy_enable_lora(header_base: HeaderBase) -> None:
    source = CORPUS / folder("xyliu-uir")
    assert read_adapter_config(source / "adapter_config.json").legacy_fields == ("enable_lora", "merge_weights")
    report = check(source, header_base("chatglm-6b"))
    assert report.status is Status.PASS, describe(report)
    legacy = {f.subject: f for f in report.findings if f.code == "ADAPTER-LEGACY"}
    assert set(legacy) == {"enable_lora", "merge_weights"}
    assert all(f.severity is Severity.WARNING for f in legacy.values())
    assert "part of a fused layer" in legacy["enable_lora"].message
    # The base it names is `./glm_models`, a path on the trainer's machine: identity cannot be confirmed.
    # ChatGLM is remote code: transformers' rule table has no such architecture, so the runtime names are approximate
    assert codes(report, Severity.WARNING) == {"ADAPTER-LEGACY", NO_WEIGHTS, IDENTITY, "RUNTIME-APPROXIMATE"}


def test_old_format_with_null_enable_lora() -> None:
    config = read_adapter_config(CORPUS / folder("xiangzuo2022") / "adapter_config.json")
    assert config.legacy_fields == ("merge_weights",)  # enable_lora is null there: nothing to ignore


@pytest.mark.parametrize(
    ("prefix", "key", "repo", "warnings"),
    [
        # LoRA on embed_tokens and lm_head of Qwen2.5-1.5B, whose lm_head is tied (absent from the checkpoint).
        ("Navaneeth-45", "qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct", {NO_WEIGHTS}),
        ("csequenc", "qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B", {NO_WEIGHTS}),
        ("jeetkatariya", "mistral-7b-v0.1", "mistralai/Mistral-7B-v0.1", {NO_WEIGHTS}),
        # ELYZA's Llama-2-7B: LoRA on embed_tokens and lm_head via target_modules; a local Llama-2 base stands in.
        ("tayutayufk", "llama-2-7b", None, {NO_WEIGHTS, IDENTITY}),
        # AdaLoRA on Llama-3.1-8B-Instruct (same shapes as Llama-3-8B); the base is a path on the trainer's machine.
        ("LrArctic", "llama-3-8b", None, {NO_WEIGHTS, IDENTITY}),
    ],
)
def test_config_only_adapters_on_their_bases(
    prefix: str, key: str, repo: str | None, warnings: set[str], header_base: HeaderBase
) -> None:
    report = check(CORPUS / folder(prefix), header_base(key, snapshot=repo))
    assert report.status is Status.PASS, describe(report)
    assert codes(report, Severity.WARNING) == warnings, describe(report)


def test_config_field_oddities() -> None:
    def config(prefix: str) -> Any:
        return read_adapter_config(CORPUS / folder(prefix) / "adapter_config.json")

    assert config("csequenc").use_dora is True
    assert config("jeetkatariya").fan_in_fan_out is False  # null in the file
    assert isinstance(config("guanyuch").target_modules, str)  # a regex
    assert isinstance(config("Mar-IA-no").exclude_modules, str)  # a regex leaving out the audio/vision towers
    assert re.fullmatch(r"[0-9a-f]{40}", config("MAJORminorStudio").revision or "")
    adalora = config("LrArctic")
    assert adalora.peft_type == "ADALORA" and adalora.r == 32  # init_r: the rank the saved tensors start from
    assert adalora.rank_pattern == {}  # AdaLoRA's per-module boolean masks are not rank overrides
    assert config("AnHuanAo").task_type == "SEQ_2_SEQ_LM"
    assert config("Dheena731").base_model_name_or_path is None


@pytest.mark.parametrize("prefix", ["AnHuanAo", "Hastws", "LrArctic", "guanyuch", "xyliu-uir"])
def test_base_named_by_a_path_on_the_trainers_machine(prefix: str) -> None:
    source = CORPUS / folder(prefix)
    named = read_adapter_config(source / "adapter_config.json").base_model_name_or_path
    assert named is not None and named.startswith(("/", "./"))
    report = check(source)
    assert report.status is Status.ERROR, describe(report)
    (finding,) = report.findings
    assert finding.code == "INPUT-UNUSABLE" and named in finding.message


def test_adapter_without_a_base_name_needs_one() -> None:
    report = check(CORPUS / folder("Dheena731"))
    assert report.status is Status.ERROR
    (finding,) = report.findings
    assert "base_model_name_or_path" in finding.message and finding.hint is not None and "--base" in finding.hint
