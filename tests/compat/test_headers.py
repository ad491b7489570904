"""``lora_lock.check`` on size-real, header-only bases of real architectures (see tests/fixtures/header_bases.py).

Each base is the architecture's real config.json plus sparse safetensors whose headers carry the Hub checkpoint's
tensor names and shapes; each adapter is written from PEFT's saved-key rules. The cases are the ways an adapter
meets the wrong base in practice: another KV-head count, more or fewer layers, renamed modules, another vocabulary,
tied heads, GPT-2's Conv1D and prefix-less checkpoint keys, quantized storage, and files that are simply broken.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from lora_lock import Category, Finding, Report, Severity, Status, check
from lora_lock._cli import main
from tests.fixtures.header_bases import (
    HeaderBase,
    MakeAdapter,
    adapter_config,
    lora_tensors,
    write_header_only_base,
)
from tests.helpers import copy_sparse

P7 = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
LLAMA3 = "meta-llama/Meta-Llama-3-8B"
LLAMA2 = "meta-llama/Llama-2-7b-hf"
IDENTITY = "COMPAT-IDENTITY"


# --- helpers -----------------------------------------------------------------------------------------------------


def codes(report: Report, severity: Severity | None = None) -> set[str]:
    return {f.code for f in report.findings if severity is None or f.severity is severity}


def errors(report: Report) -> list[Finding]:
    return [f for f in report.findings if f.severity is Severity.ERROR]


def only(report: Report, code: str, subject: str | None = None) -> Finding:
    found = [f for f in report.findings if f.code == code and (subject is None or f.subject == subject)]
    assert len(found) == 1, f"expected one {code} ({subject}), got {[(f.code, f.subject) for f in report.findings]}"
    return found[0]


def describe(report: Report) -> str:
    return "\n".join(f"{f.severity.value} {f.code} {f.subject}: {f.message}" for f in report.findings)


def header_of(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (read directly, not through lora-lock)."""
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        doc: dict[str, Any] = json.loads(fh.read(length))
    return doc


def assert_passes(report: Report, warnings: set[str] | None = None) -> None:
    """Status pass; the warnings are exactly ``warnings`` (default: only the identity caveat of a local base)."""
    assert report.status is Status.PASS, describe(report)
    assert not errors(report), describe(report)
    assert codes(report, Severity.WARNING) == ({IDENTITY} if warnings is None else warnings), describe(report)


@pytest.fixture(scope="module")
def llama3(header_base: HeaderBase) -> Path:
    """Meta-Llama-3-8B as the Hub stores it: four shards plus an index (16 GB apparent size, sparse)."""
    return header_base("llama-3-8b", shards=4)


# --- the size-real bases themselves --------------------------------------------------------------------------------


def test_sharded_base_is_size_real_sparse_and_indexed(llama3: Path) -> None:
    shards = sorted(p.name for p in llama3.glob("*.safetensors"))
    assert shards == [f"model-{i:05d}-of-00004.safetensors" for i in range(1, 5)]
    index = json.loads((llama3 / "model.safetensors.index.json").read_text())
    sizes = 0
    for shard in shards:
        path = llama3 / shard
        header = header_of(path)
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
        assert header.pop("__metadata__") == {"format": "pt"}
        data = path.stat().st_size - 8 - length
        assert sum(e["data_offsets"][1] - e["data_offsets"][0] for e in header.values()) == data
        assert all(index["weight_map"][name] == shard for name in header)
        sizes += data
        assert path.stat().st_blocks * 512 < 1 << 20  # sparse: the data section takes no disk
    assert index["metadata"]["total_size"] == sizes == 16_060_522_496  # Meta-Llama-3-8B's bf16 parameter bytes
    assert len(index["weight_map"]) == 291
    # The Hub's facts: GQA with 8 KV heads → k/v_proj [1024, 4096]; MLP 14336; untied lm_head of 128256 rows.
    config = json.loads((llama3 / "config.json").read_text())
    assert (config["num_key_value_heads"], config["intermediate_size"], config["vocab_size"]) == (8, 14336, 128256)


#: Public facts the builders must reproduce: (base, checkpoint tensor, shape).
KNOWN_SHAPES = [
    ("llama-2-7b", "model.layers.31.self_attn.k_proj.weight", [4096, 4096]),
    ("llama-2-7b", "lm_head.weight", [32000, 4096]),
    ("llama-3-8b", "model.layers.0.self_attn.v_proj.weight", [1024, 4096]),
    ("llama-3-8b", "model.layers.0.mlp.down_proj.weight", [4096, 14336]),
    ("mistral-7b-v0.1", "model.layers.0.self_attn.k_proj.weight", [1024, 4096]),
    ("mistral-7b-v0.1", "model.embed_tokens.weight", [32000, 4096]),
    ("qwen2-1.5b", "model.layers.27.self_attn.k_proj.bias", [256]),
    ("qwen2-1.5b", "model.layers.0.mlp.gate_proj.weight", [8960, 1536]),
    ("smollm-135m", "model.layers.29.self_attn.v_proj.weight", [192, 576]),
    ("gpt2", "h.11.attn.c_attn.weight", [768, 2304]),
    ("gpt2", "h.0.mlp.c_fc.weight", [768, 3072]),
    ("gpt2", "h.0.mlp.c_proj.weight", [3072, 768]),
    ("gpt2", "wpe.weight", [1024, 768]),
    ("distilgpt2", "transformer.h.5.attn.c_attn.weight", [768, 2304]),
    ("distilbert-base-uncased", "distilbert.transformer.layer.5.attention.q_lin.weight", [768, 768]),
    ("distilbert-base-uncased", "distilbert.transformer.layer.0.ffn.lin1.weight", [3072, 768]),
    ("bert-base-uncased", "bert.encoder.layer.11.attention.self.query.weight", [768, 768]),
    ("roberta-base", "roberta.embeddings.word_embeddings.weight", [50265, 768]),
    ("roberta-base", "roberta.embeddings.position_embeddings.weight", [514, 768]),
    ("opt-125m", "decoder.layers.11.self_attn.q_proj.weight", [768, 768]),
    ("opt-125m", "decoder.embed_positions.weight", [2050, 768]),
    ("opt-125m", "decoder.embed_tokens.weight", [50272, 768]),
    ("gpt-neo-125m", "transformer.h.11.attn.attention.q_proj.weight", [768, 768]),
    ("vit-base-patch16-224", "vit.encoder.layer.11.attention.attention.query.weight", [768, 768]),
    ("vit-base-patch16-224", "classifier.weight", [1000, 768]),
    ("open-calm-1b", "gpt_neox.layers.23.attention.query_key_value.weight", [6144, 2048]),
    ("open-calm-1b", "embed_out.weight", [52224, 2048]),
    ("gpt-oss-20b", "model.layers.23.self_attn.q_proj.weight", [4096, 2880]),
    ("phi-2", "model.layers.31.self_attn.dense.weight", [2560, 2560]),
    ("chatglm-6b", "transformer.layers.27.attention.query_key_value.weight", [12288, 4096]),
]


@pytest.mark.parametrize(("key", "tensor", "shape"), KNOWN_SHAPES, ids=[f"{k}:{t}" for k, t, _ in KNOWN_SHAPES])
def test_builders_reproduce_public_checkpoint_shapes(
    key: str, tensor: str, shape: list[int], header_base: HeaderBase
) -> None:
    assert header_of(header_base(key) / "model.safetensors")[tensor]["shape"] == shape


@pytest.mark.parametrize("quant", [None, "bnb-4bit"])
def test_header_only_files_are_valid_for_the_safetensors_library(quant: str | None, header_base: HeaderBase) -> None:
    safetensors = pytest.importorskip("safetensors")
    base = header_base("smollm-135m", quant=quant)
    with safetensors.safe_open(str(base / "model.safetensors"), "np") as fh:
        assert fh.metadata() == {"format": "pt"}
        assert set(fh.keys()) == set(header_of(base / "model.safetensors")) - {"__metadata__"}
        if quant is None:
            assert fh.get_slice("model.layers.0.self_attn.k_proj.weight").get_shape() == [192, 576]
        else:
            state = fh.get_tensor("model.layers.0.self_attn.k_proj.weight.quant_state.bitsandbytes__nf4")
            assert json.loads(state.tobytes())["shape"] == [192, 576]


# --- shapes --------------------------------------------------------------------------------------------------------


def test_llama2_adapter_on_llama3_reports_kv_heads_once_per_pattern(llama3: Path, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(adapter_config(LLAMA2, ATTN), lora_tensors("llama-2-7b", ATTN, 16))
    report = check(adapter, llama3)
    assert report.status is Status.FAIL
    shape = [f for f in report.findings if f.code == "COMPAT-SHAPE"]
    # q_proj and o_proj are [4096, 4096] in both; k/v_proj are [4096, 4096] (32 KV heads) vs [1024, 4096] (8).
    assert sorted(f.subject or "" for f in shape) == [
        "model.layers.*.self_attn.k_proj",
        "model.layers.*.self_attn.v_proj",
    ]
    for finding in shape:
        assert finding.category is Category.COMPAT and finding.severity is Severity.ERROR
        assert "32 modules, layers 0-31" in finding.message
        assert finding.actual == "lora_A [16, 4096], lora_B [4096, 16]"
        assert finding.expected is not None and "lora_B [1024, 16]" in finding.expected
        assert finding.hint is not None and "32 KV heads" in finding.hint and "this base has 8" in finding.hint
    assert codes(report, Severity.ERROR) == {"COMPAT-SHAPE"}


def test_llama2_mlp_on_llama3_names_the_mlp_size(llama3: Path, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(adapter_config(LLAMA2, P7), lora_tensors("llama-2-7b", P7, 16))
    report = check(adapter, llama3)
    subjects = {f.subject for f in report.findings if f.code == "COMPAT-SHAPE"}
    assert subjects == {f"model.layers.*.mlp.{m}" for m in ("gate_proj", "up_proj", "down_proj")} | {
        "model.layers.*.self_attn.k_proj",
        "model.layers.*.self_attn.v_proj",
    }
    down = only(report, "COMPAT-SHAPE", "model.layers.*.mlp.down_proj")
    assert down.hint == "the adapter was trained on an MLP size of 11008; this base has 14336"


def test_llama3_adapter_on_sharded_llama3_passes(llama3: Path, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(adapter_config(LLAMA3, P7), lora_tensors("llama-3-8b", P7, 16))
    report = check(adapter, llama3)
    assert_passes(report)
    identity = only(report, IDENTITY)
    assert identity.expected == LLAMA3 and "local directory" in (identity.actual or "")


def test_base_in_the_hub_cache_layout_confirms_identity(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    base = header_base("llama-3-8b", shards=4, snapshot=LLAMA3)
    assert base.parent.parent.name == "models--meta-llama--Meta-Llama-3-8B"
    adapter = make_adapter(adapter_config(LLAMA3, P7), lora_tensors("llama-3-8b", P7, 16))
    assert_passes(check(adapter, base), warnings=set())


def test_bare_repo_id_snapshot_confirms_identity(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    base = header_base("gpt2", snapshot="gpt2")
    assert base.parent.parent.name == "models--gpt2"
    adapter = make_adapter(
        adapter_config("gpt2", ["c_attn"], r=8, fan_in_fan_out=True), lora_tensors("gpt2", ["c_attn"], 8)
    )
    assert_passes(check(adapter, base), warnings=set())


def test_llama3_adapter_on_mistral_fits_but_warns_identity(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    mistral = header_base("mistral-7b-v0.1", shards=2)
    adapter = make_adapter(adapter_config(LLAMA3, P7), lora_tensors("llama-3-8b", P7, 16))
    report = check(adapter, mistral)
    assert_passes(report)
    identity = only(report, IDENTITY)
    assert identity.severity is Severity.WARNING
    assert f"`{LLAMA3}`" in identity.message and identity.message.startswith("the shapes fit")
    assert identity.hint is not None and "Mistral-7B" in identity.hint


def test_identity_warning_does_not_claim_shapes_fit_when_they_do_not(llama3: Path, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(adapter_config(LLAMA2, ATTN), lora_tensors("llama-2-7b", ATTN, 16))
    identity = only(check(adapter, llama3), IDENTITY)
    assert "shapes fit" not in identity.message


def test_more_layers_than_the_base_is_a_silent_drop(llama3: Path, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("llama-3-8b", P7, 16, overrides={"num_hidden_layers": 40})
    report = check(make_adapter(adapter_config(LLAMA3, P7), tensors), llama3)
    assert report.status is Status.FAIL
    finding = only(report, "COMPAT-UNMATCHED")
    assert finding.severity is Severity.ERROR and finding.category is Category.COMPAT
    assert "silently ignore 56 of its 280 LoRA modules (112 tensors)" in finding.message
    assert "model.layers.*.self_attn.k_proj (8 modules, layers 32-39)" in finding.message
    assert finding.hint == "the adapter was trained on a base with at least 40 layers; this base has 32"
    assert codes(report, Severity.ERROR) == {"COMPAT-UNMATCHED"}


def test_fewer_layers_than_the_base_leaves_modules_untrained(llama3: Path, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("llama-3-8b", P7, 16, overrides={"num_hidden_layers": 24})
    report = check(make_adapter(adapter_config(LLAMA3, P7), tensors), llama3)
    finding = only(report, "COMPAT-UNTRAINED")
    assert "56 base modules" in finding.message and "(8 modules, layers 24-31)" in finding.message
    assert finding.hint is not None and "more layers" in finding.hint
    assert codes(report, Severity.ERROR) == {"COMPAT-UNTRAINED"}


def test_layers_to_transform_limits_what_is_expected(llama3: Path, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("llama-3-8b", ["q_proj", "v_proj"], 16, layers=range(16))
    config = adapter_config(LLAMA3, ["q_proj", "v_proj"], layers_to_transform=list(range(16)), layers_pattern="layers")
    assert_passes(check(make_adapter(config, tensors), llama3))


def test_renamed_module_paths_load_as_no_adapter_at_all(llama3: Path, make_adapter: MakeAdapter) -> None:
    # Same leaf names (target_modules still match, so PEFT loads), but the saved keys say `self_attention`:
    # PEFT drops every tensor with only a "missing adapter keys" warning.
    targets = ["q_proj", "v_proj"]
    tensors = lora_tensors("llama-3-8b", targets, 16, rename={".self_attn.": ".self_attention."})
    report = check(make_adapter(adapter_config(LLAMA3, targets), tensors), llama3)
    finding = only(report, "COMPAT-NO-MATCH")
    assert finding.severity is Severity.ERROR
    assert "none of the adapter's 64 LoRA modules" in finding.message and "no effect at all" in finding.message
    assert "model.layers.*.self_attention.q_proj (32 modules, layers 0-31)" in finding.message
    assert finding.hint is not None and "`self_attention` → `self_attn`" in finding.hint
    untrained = only(report, "COMPAT-UNTRAINED")
    assert untrained.hint is not None and "renamed" in untrained.hint


def test_renamed_target_names_are_refused_by_peft(llama3: Path, make_adapter: MakeAdapter) -> None:
    # A Falcon/BERT-style adapter (`self_attention.query`, target_modules query/value) on Llama: PEFT raises
    # "Target modules ... not found in the base model" before loading anything.
    tensors = lora_tensors("llama-3-8b", ["q_proj"], 16, rename={"self_attn.q_proj": "self_attention.query"})
    report = check(make_adapter(adapter_config("tiiuae/falcon-7b", ["query", "value"]), tensors), llama3)
    finding = only(report, "COMPAT-NO-TARGET")
    assert finding.severity is Severity.ERROR and "[query, value]" in finding.message
    assert codes(report, Severity.ERROR) == {"COMPAT-NO-TARGET"}


def test_partly_renamed_modules_name_the_rename(llama3: Path, make_adapter: MakeAdapter) -> None:
    targets = ["q_proj", "v_proj"]
    tensors = lora_tensors("llama-3-8b", targets, 16, rename={"self_attn.q_proj": "attn.q_proj"})
    report = check(make_adapter(adapter_config(LLAMA3, targets), tensors), llama3)
    finding = only(report, "COMPAT-UNMATCHED")
    assert "32 of its 64 LoRA modules" in finding.message
    assert finding.hint is not None and "`attn` → `self_attn`" in finding.hint
    assert only(report, "COMPAT-UNTRAINED").subject == "model.layers.*.self_attn.q_proj"


# --- ranks, DoRA, biases -------------------------------------------------------------------------------------------


def test_rank_in_tensors_differs_from_config(llama3: Path, make_adapter: MakeAdapter) -> None:
    report = check(make_adapter(adapter_config(LLAMA3, P7, r=8), lora_tensors("llama-3-8b", P7, 16)), llama3)
    ranks = [f for f in report.findings if f.code == "COMPAT-RANK"]
    assert len(ranks) == 7  # one per projection pattern, each naming its 32 layers
    for finding in ranks:
        assert finding.category is Category.ADAPTER and finding.severity is Severity.ERROR
        assert finding.expected == "r=8 (adapter_config.json)" and finding.actual == "r=16 (tensors)"
        assert "32 modules, layers 0-31" in finding.message


def test_rank_pattern_is_honoured(llama3: Path, make_adapter: MakeAdapter) -> None:
    ranks = {"k_proj": 32, "v_proj": 32}
    tensors = lora_tensors("llama-3-8b", P7, 8, ranks=ranks)
    assert tensors["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] == (32, 4096)
    assert_passes(check(make_adapter(adapter_config(LLAMA3, P7, r=8, rank_pattern=ranks), tensors), llama3))
    # Without the pattern, exactly the two patterned projections disagree with r.
    report = check(make_adapter(adapter_config(LLAMA3, P7, r=8), tensors), llama3)
    assert {f.subject for f in report.findings if f.code == "COMPAT-RANK"} == {
        "model.layers.*.self_attn.k_proj",
        "model.layers.*.self_attn.v_proj",
    }


def test_rank_pattern_with_a_full_module_path(llama3: Path, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("llama-3-8b", ["q_proj"], 8)
    tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = (4, 4096)
    tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] = (4096, 4)
    config = adapter_config(LLAMA3, ["q_proj"], r=8, rank_pattern={"model.layers.0.self_attn.q_proj": 4})
    assert_passes(check(make_adapter(config, tensors), llama3))


def _adalora_tensors(kv_out: int) -> dict[str, tuple[int, ...]]:
    """AdaLoRA as PEFT saves it after budget masking: per-module ranks, lora_E [r, 1] and ranknum."""
    tensors: dict[str, tuple[int, ...]] = {}
    for i in range(32):
        for module, out in (("q_proj", 4096), ("v_proj", kv_out)):
            r = 12 if i % 2 else 16
            key = f"base_model.model.model.layers.{i}.self_attn.{module}"
            tensors |= {f"{key}.lora_A.weight": (r, 4096), f"{key}.lora_B.weight": (out, r)}
            tensors |= {f"{key}.lora_E": (r, 1), f"{key}.ranknum": (1,)}
    return tensors


def test_adalora_per_module_ranks(llama3: Path, header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    masks = {f"model.layers.{i}.self_attn.q_proj.lora_E": [True] * 16 for i in range(2)}
    config = adapter_config(LLAMA3, ["q_proj", "v_proj"], r=8, peft_type="ADALORA", init_r=16, rank_pattern=masks)
    adapter = make_adapter(config, _adalora_tensors(1024))
    assert_passes(check(adapter, llama3))
    report = check(adapter, header_base("llama-2-7b"))
    assert codes(report, Severity.ERROR) == {"COMPAT-SHAPE"}
    assert {f.subject for f in errors(report)} == {"model.layers.*.self_attn.v_proj"}
    assert all(f.hint is not None and "8 KV heads" in f.hint for f in errors(report))


def test_exclude_modules_are_not_expected(llama3: Path, make_adapter: MakeAdapter) -> None:
    layer0 = "model.layers.0.self_attn.q_proj"
    tensors = {k: v for k, v in lora_tensors("llama-3-8b", ["q_proj"], 16).items() if f".{layer0}." not in k}
    assert_passes(check(make_adapter(adapter_config(LLAMA3, ["q_proj"], exclude_modules=[layer0]), tensors), llama3))
    report = check(make_adapter(adapter_config(LLAMA3, ["q_proj"]), tensors), llama3)
    assert f"(in {layer0})" in only(report, "COMPAT-UNTRAINED").message


def test_dora_magnitude_and_lora_bias_fit(llama3: Path, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("llama-3-8b", P7, 16, dora=True, lora_bias=True)
    assert tensors["base_model.model.model.layers.0.self_attn.k_proj.lora_magnitude_vector"] == (1024,)
    config = adapter_config(LLAMA3, P7, use_dora=True, lora_bias=True)
    assert_passes(check(make_adapter(config, tensors), llama3))


def test_dora_magnitude_and_lora_bias_of_another_base(llama3: Path, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("llama-3-8b", P7, 16, dora=True, lora_bias=True)
    for i in range(32):
        tensors[f"base_model.model.model.layers.{i}.self_attn.k_proj.lora_magnitude_vector"] = (4096,)
        tensors[f"base_model.model.model.layers.{i}.self_attn.v_proj.lora_B.bias"] = (4096,)
    report = check(make_adapter(adapter_config(LLAMA3, P7, use_dora=True, lora_bias=True), tensors), llama3)
    k = only(report, "COMPAT-SHAPE", "model.layers.*.self_attn.k_proj")
    v = only(report, "COMPAT-SHAPE", "model.layers.*.self_attn.v_proj")
    assert (k.expected, k.actual) == ("magnitude [1024]", "magnitude [4096]")
    assert (v.expected, v.actual) == ("B_bias [1024]", "B_bias [4096]")
    assert "32 modules" in k.message and "32 modules" in v.message


def test_incomplete_lora_pair(llama3: Path, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("llama-3-8b", ["q_proj"], 16)
    del tensors["base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight"]
    report = check(make_adapter(adapter_config(LLAMA3, ["q_proj"]), tensors), llama3)
    finding = only(report, "ADAPTER-INCOMPLETE")
    assert finding.category is Category.ADAPTER and "model.layers.3.self_attn.q_proj" in finding.message


# --- vocabulary, embeddings, saved modules, tied heads --------------------------------------------------------------


def test_embedding_lora_with_another_vocabulary(llama3: Path, make_adapter: MakeAdapter) -> None:
    targets = ["embed_tokens", "q_proj"]
    tensors = lora_tensors("llama-2-7b", targets, 8)
    assert tensors["base_model.model.model.embed_tokens.lora_embedding_A"] == (8, 32000)
    assert tensors["base_model.model.model.embed_tokens.lora_embedding_B"] == (4096, 8)
    report = check(make_adapter(adapter_config(LLAMA2, targets, r=8), tensors), llama3)
    finding = only(report, "COMPAT-SHAPE", "model.embed_tokens")
    assert finding.actual == "lora_A [8, 32000], lora_B [4096, 8]"
    assert finding.hint is not None and "vocabulary of 32000 tokens; this base has 128256" in finding.hint
    assert codes(report, Severity.ERROR) == {"COMPAT-SHAPE"}


def test_embedding_lora_with_peft_saved_embedding_copy(llama3: Path, make_adapter: MakeAdapter) -> None:
    targets = ["embed_tokens", "q_proj"]
    good = lora_tensors("llama-3-8b", targets, 8, save_embedding_layers=True)
    assert good["base_model.model.model.embed_tokens.base_layer.weight"] == (128256, 4096)
    assert_passes(check(make_adapter(adapter_config(LLAMA3, targets, r=8), good), llama3))
    bad = lora_tensors("llama-2-7b", targets, 8, save_embedding_layers=True)
    report = check(make_adapter(adapter_config(LLAMA2, targets, r=8), bad), llama3)
    assert {f.code for f in errors(report)} == {"COMPAT-SHAPE", "COMPAT-SAVED-SHAPE"}
    saved = only(report, "COMPAT-SAVED-SHAPE")
    assert saved.actual == "[32000, 4096]" and saved.expected == "[128256, 4096]"


def test_saved_head_and_embeddings_of_a_smaller_vocabulary(llama3: Path, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("llama-3-8b", ["q_proj", "v_proj"], 8)
    tensors["base_model.model.lm_head.weight"] = (32000, 4096)
    tensors["base_model.model.model.embed_tokens.weight"] = (32000, 4096)
    config = adapter_config(LLAMA3, ["q_proj", "v_proj"], r=8, modules_to_save=["lm_head", "embed_tokens"])
    report = check(make_adapter(config, tensors), llama3)
    assert report.status is Status.FAIL
    for subject in ("lm_head.weight", "model.embed_tokens.weight"):
        finding = only(report, "COMPAT-SAVED-SHAPE", subject)
        assert finding.severity is Severity.ERROR
        assert (finding.expected, finding.actual) == ("[128256, 4096]", "[32000, 4096]")
        assert finding.hint is not None and "32000-token" in finding.hint and "128256 tokens" in finding.hint


def test_saved_head_and_embeddings_of_the_same_vocabulary(llama3: Path, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("llama-3-8b", ["q_proj", "v_proj"], 8)
    tensors["base_model.model.lm_head.weight"] = (128256, 4096)
    tensors["base_model.model.model.embed_tokens.weight"] = (128256, 4096)
    config = adapter_config(LLAMA3, ["q_proj", "v_proj"], r=8, modules_to_save=["lm_head", "embed_tokens"])
    assert_passes(check(make_adapter(config, tensors), llama3))


@pytest.mark.parametrize("key", ["qwen2-1.5b", "qwen2.5-1.5b", "smollm-135m", "llama-3.2-1b"])
def test_tied_head_absent_from_the_checkpoint(key: str, header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    base = header_base(key)
    weight_names = header_of(base / "model.safetensors")
    assert "lm_head.weight" not in weight_names and "model.embed_tokens.weight" in weight_names
    vocab, hidden = weight_names["model.embed_tokens.weight"]["shape"]
    # LoRA on lm_head (PEFT wraps the tied Linear): fits.
    lora = lora_tensors(key, ["q_proj", "lm_head"], 8)
    assert lora["base_model.model.lm_head.lora_B.weight"] == (vocab, 8)
    assert_passes(check(make_adapter(adapter_config("x/y", ["q_proj", "lm_head"], r=8), lora), base))
    # A full lm_head copy in modules_to_save: fits.
    saved = lora_tensors(key, ["q_proj"], 8) | {"base_model.model.lm_head.weight": (vocab, hidden)}
    config = adapter_config("x/y", ["q_proj"], r=8, modules_to_save=["lm_head"])
    assert_passes(check(make_adapter(config, saved), base))
    # The same LoRA from a smaller vocabulary does not.
    smaller = lora_tensors(key, ["q_proj", "lm_head"], 8, overrides={"vocab_size": vocab - 1000})
    report = check(make_adapter(adapter_config("x/y", ["q_proj", "lm_head"], r=8), smaller), base)
    finding = only(report, "COMPAT-SHAPE", "lm_head")
    assert finding.hint is not None and f"vocabulary of {vocab - 1000} tokens" in finding.hint


def test_qwen2_qkv_biases_do_not_confuse_the_engine(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    base = header_base("qwen2.5-1.5b")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    tensors = lora_tensors("qwen2.5-1.5b", targets, 8, dora=True)
    assert tensors["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"] == (256, 8)
    report = check(make_adapter(adapter_config("Qwen/Qwen2.5-1.5B", targets, r=8, use_dora=True), tensors), base)
    assert_passes(report)


# --- GPT-2: Conv1D and checkpoint keys without `transformer.` -----------------------------------------------------


def test_gpt2_conv1d_adapter_across_the_prefix_difference(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    base = header_base("gpt2")
    names = set(header_of(base / "model.safetensors"))
    assert "h.0.attn.c_attn.weight" in names and not any(n.startswith("transformer.") for n in names)
    tensors = lora_tensors("gpt2", ["c_attn", "c_proj"], 8)
    assert tensors["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"] == (8, 768)
    assert tensors["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"] == (2304, 8)
    assert tensors["base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight"] == (8, 3072)
    config = adapter_config("gpt2", ["c_attn", "c_proj"], r=8, fan_in_fan_out=True)
    assert_passes(check(make_adapter(config, tensors), base))


def test_gpt2_lora_shaped_from_the_stored_conv1d_weight_is_caught(
    header_base: HeaderBase, make_adapter: MakeAdapter
) -> None:
    # Conv1D stores [in, out] = [768, 2304]; a tool that reads it as Linear's [out, in] gets A [r, 2304].
    base = header_base("gpt2")
    tensors: dict[str, tuple[int, ...]] = {}
    for i in range(12):
        tensors[f"base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight"] = (8, 2304)
        tensors[f"base_model.model.transformer.h.{i}.attn.c_attn.lora_B.weight"] = (768, 8)
    report = check(make_adapter(adapter_config("gpt2", ["c_attn"], r=8, fan_in_fan_out=True), tensors), base)
    finding = only(report, "COMPAT-SHAPE", "transformer.h.*.attn.c_attn")
    assert finding.expected == "lora_A [8, 768], lora_B [2304, 8] (base [2304, 768])"


def test_gpt2_adapter_on_distilgpt2_drops_layers_6_to_11(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("gpt2", ["c_attn"], 8)
    config = adapter_config("gpt2", ["c_attn"], r=8, fan_in_fan_out=True)
    report = check(make_adapter(config, tensors), header_base("distilgpt2"))
    finding = only(report, "COMPAT-UNMATCHED")
    assert "6 of its 12 LoRA modules" in finding.message and "layers 6-11" in finding.message
    assert finding.hint == "the adapter was trained on a base with at least 12 layers; this base has 6"


def test_gpt2_embedding_lora_on_wte(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("gpt2", ["wte", "c_attn"], 8)
    assert tensors["base_model.model.transformer.wte.lora_embedding_A"] == (8, 50257)
    config = adapter_config("gpt2", ["wte", "c_attn"], r=8, fan_in_fan_out=True)
    assert_passes(check(make_adapter(config, tensors), header_base("gpt2")))


def test_opt_checkpoint_without_model_prefix(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    base = header_base("opt-125m")
    names = set(header_of(base / "model.safetensors"))
    assert "decoder.layers.0.self_attn.q_proj.weight" in names and "lm_head.weight" not in names
    tensors = lora_tensors("opt-125m", ["q_proj", "v_proj", "embed_tokens"], 8)
    assert "base_model.model.model.decoder.layers.0.self_attn.q_proj.lora_A.weight" in tensors
    tensors["base_model.model.lm_head.weight"] = (50272, 768)  # tied to decoder.embed_tokens in the checkpoint
    config = adapter_config("facebook/opt-125m", ["q_proj", "v_proj", "embed_tokens"], r=8, modules_to_save=["lm_head"])
    assert_passes(check(make_adapter(config, tensors), base))


def test_bert_adapter_on_roberta_is_not_aligned_by_prefix_swap(
    header_base: HeaderBase, make_adapter: MakeAdapter
) -> None:
    tensors = lora_tensors("bert-base-uncased", ["query", "value"], 8)
    config = adapter_config("bert-base-uncased", ["query", "value"], r=8, task_type="SEQ_CLS")
    report = check(make_adapter(config, tensors), header_base("roberta-base"))
    assert only(report, "COMPAT-NO-MATCH").severity is Severity.ERROR


def test_keys_with_the_adapter_name_left_in_load_nothing(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    tensors = {
        k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight"): v
        for k, v in lora_tensors("gpt2", ["c_attn"], 8).items()
    }
    config = adapter_config("gpt2", ["c_attn"], r=8, fan_in_fan_out=True)
    report = check(make_adapter(config, tensors), header_base("gpt2"))
    assert report.status is Status.FAIL
    keys = only(report, "ADAPTER-KEYS")
    assert keys.severity is Severity.ERROR and "24 tensor key(s) still carry an adapter name" in keys.message
    untrained = only(report, "COMPAT-UNTRAINED")  # the cause is the key names, not another base
    assert untrained.hint is not None and "see ADAPTER-KEYS" in untrained.hint


def test_gpt_oss_attention_adapter(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    tensors = lora_tensors("gpt-oss-20b", ["q_proj", "v_proj"], 4)
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] == (4096, 4)  # 64 heads x 64
    assert tensors["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"] == (512, 4)
    config = adapter_config("openai/gpt-oss-20b", ["q_proj", "v_proj"], r=4)
    assert_passes(check(make_adapter(config, tensors), header_base("gpt-oss-20b")))


# --- quantized bases ----------------------------------------------------------------------------------------------

QUANT_METHOD = {"bnb-4bit": "bitsandbytes", "bnb-8bit": "bitsandbytes", "gptq": "gptq", "awq": "awq"}


@pytest.mark.parametrize("quant", sorted(QUANT_METHOD))
def test_quantized_base_checked_through_unpacked_sizes(
    quant: str, header_base: HeaderBase, make_adapter: MakeAdapter
) -> None:
    base = header_base("llama-3-8b", quant=quant)
    header = header_of(base / "model.safetensors")
    k_proj = "model.layers.0.self_attn.k_proj"
    if quant == "bnb-4bit":
        assert header[f"{k_proj}.weight"]["shape"] == [1024 * 4096 // 2, 1]  # packed: the shape is in the quant state
        assert header[f"{k_proj}.weight"]["dtype"] == "U8"
        assert f"{k_proj}.weight.quant_state.bitsandbytes__nf4" in header
    elif quant == "gptq":
        assert header[f"{k_proj}.qweight"]["shape"] == [4096 // 8, 1024] and header[f"{k_proj}.g_idx"]["shape"] == [
            4096
        ]
    elif quant == "awq":
        assert header[f"{k_proj}.qweight"]["shape"] == [4096, 1024 // 8]
    config = json.loads((base / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == QUANT_METHOD[quant]

    good = check(make_adapter(adapter_config(LLAMA3, P7), lora_tensors("llama-3-8b", P7, 16)), base)
    assert_passes(good)
    info = only(good, "QUANT-FORMAT")
    assert info.severity is Severity.INFO and info.category is Category.QUANTIZATION
    assert QUANT_METHOD[quant] in (info.actual or "")

    bad = check(make_adapter(adapter_config(LLAMA2, ATTN), lora_tensors("llama-2-7b", ATTN, 16)), base)
    assert {f.subject for f in bad.findings if f.code == "COMPAT-SHAPE"} == {
        "model.layers.*.self_attn.k_proj",
        "model.layers.*.self_attn.v_proj",
    }
    k = only(bad, "COMPAT-SHAPE", "model.layers.*.self_attn.k_proj")
    assert k.expected == "lora_A [16, 4096], lora_B [1024, 16] (base [1024, 4096])"
    assert "QUANT-FORMAT" in codes(bad)


def test_sharded_bnb_4bit_base_reads_its_quant_state_from_the_right_shard(
    header_base: HeaderBase, make_adapter: MakeAdapter
) -> None:
    base = header_base("llama-3-8b", quant="bnb-4bit", shards=3)
    assert len(list(base.glob("model-*-of-00003.safetensors"))) == 3
    report = check(make_adapter(adapter_config(LLAMA3, P7), lora_tensors("llama-3-8b", P7, 16)), base)
    assert_passes(report)


def test_quantized_base_with_a_saved_full_precision_head(header_base: HeaderBase, make_adapter: MakeAdapter) -> None:
    base = header_base("llama-3-8b", quant="bnb-4bit")
    tensors = lora_tensors("llama-3-8b", ["q_proj"], 16) | {"base_model.model.lm_head.weight": (32000, 4096)}
    report = check(make_adapter(adapter_config(LLAMA3, ["q_proj"], modules_to_save=["lm_head"]), tensors), base)
    finding = only(report, "COMPAT-SAVED-SHAPE", "lm_head.weight")
    assert finding.expected == "[128256, 4096]"


# --- unusable input -----------------------------------------------------------------------------------------------

Mutator = Callable[[Path], None]


def _rewriteheader_of(path: Path, change: Callable[[dict[str, Any]], None], extra: int = 0) -> None:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    doc = json.loads(raw[8 : 8 + length])
    change(doc)
    new = json.dumps(doc).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + length :] + b"\0" * extra)


def _by_offset(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((v for k, v in doc.items() if k != "__metadata__"), key=lambda e: e["data_offsets"][0])


def _shift_after_first(delta: int) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        for entry in _by_offset(doc)[1:]:
            entry["data_offsets"] = [entry["data_offsets"][0] + delta, entry["data_offsets"][1] + delta]

    return change


def _weights(mutate: Callable[[Path], None]) -> Mutator:
    return lambda root: mutate(root / "adapter_model.safetensors")


def _config(**fields: Any) -> Mutator:
    def mutate(root: Path) -> None:
        path = root / "adapter_config.json"
        doc = json.loads(path.read_text())
        doc.update(fields)
        path.write_text(json.dumps(doc))

    return mutate


def _truncate(size: int) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        with path.open("r+b") as fh:
            fh.truncate(size)

    return mutate


def _truncate_data(keep: int) -> Callable[[Path], None]:
    """Keep the header and ``keep`` bytes of the data section."""

    def mutate(path: Path) -> None:
        with path.open("r+b") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            fh.truncate(8 + length + keep)

    return mutate


def _prefix(data: bytes) -> Callable[[Path], None]:
    """Replace the whole file with ``data``."""

    def mutate(path: Path) -> None:
        path.write_bytes(data)

    return mutate


def _set_first(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        _by_offset(doc)[0][key] = value

    return change


def _past_end(doc: dict[str, Any]) -> None:
    _by_offset(doc)[-1]["data_offsets"][1] += 4


def _bin_only(root: Path) -> None:
    (root / "adapter_model.safetensors").unlink()
    (root / "adapter_model.bin").write_bytes(b"PK\x03\x04 pickle archive")


def _no_config(root: Path) -> None:
    (root / "adapter_config.json").unlink()


def _config_text(text: str) -> Mutator:
    def mutate(root: Path) -> None:
        (root / "adapter_config.json").write_text(text)

    return mutate


ADAPTER_CASES: dict[str, tuple[Mutator, str, str]] = {
    # case: (mutation, file the message must name, words it must contain)
    "truncated-to-5-bytes": (_weights(_truncate(5)), "adapter_model.safetensors", "fewer than the 8-byte"),
    "empty-file": (_weights(_truncate(0)), "adapter_model.safetensors", "not a safetensors file"),
    "truncated-data": (_weights(_truncate_data(100)), "adapter_model.safetensors", "past the end"),
    "header-longer-than-file": (
        _weights(_prefix(struct.pack("<Q", 10_000) + b"{}")),
        "adapter_model.safetensors",
        "truncated",
    ),
    "header-over-100MB": (
        _weights(_prefix(struct.pack("<Q", 200_000_000) + b"{}")),
        "adapter_model.safetensors",
        "limit",
    ),
    "non-json-header": (_weights(_prefix(struct.pack("<Q", 8) + b"not json")), "adapter_model.safetensors", "JSON"),
    "json-array-header": (_weights(_prefix(struct.pack("<Q", 2) + b"[]")), "adapter_model.safetensors", "object"),
    "git-lfs-pointer": (
        _weights(_prefix(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 99\n")),
        "adapter_model.safetensors",
        "header length",
    ),
    "offsets-past-end": (
        _weights(lambda p: _rewriteheader_of(p, _past_end)),
        "adapter_model.safetensors",
        "past the end",
    ),
    "gap-between-tensors": (
        _weights(lambda p: _rewriteheader_of(p, _shift_after_first(4), extra=4)),
        "adapter_model.safetensors",
        "gap",
    ),
    "overlapping-tensors": (
        _weights(lambda p: _rewriteheader_of(p, _shift_after_first(-4))),
        "adapter_model.safetensors",
        "overlaps",
    ),
    "unknown-dtype": (
        _weights(lambda p: _rewriteheader_of(p, _set_first("dtype", "F12"))),
        "adapter_model.safetensors",
        "unknown dtype 'F12'",
    ),
    "shape-disagrees-with-offsets": (
        _weights(lambda p: _rewriteheader_of(p, _set_first("shape", [16, 4096]))),
        "adapter_model.safetensors",
        "bytes",
    ),
    "negative-dimension": (
        _weights(lambda p: _rewriteheader_of(p, _set_first("shape", [-1, 576]))),
        "adapter_model.safetensors",
        "non-negative",
    ),
    "metadata-not-strings": (
        _weights(lambda p: _rewriteheader_of(p, lambda d: d.update({"__metadata__": {"format": 1}}))),
        "adapter_model.safetensors",
        "__metadata__",
    ),
    "r-is-a-string": (_config(r="8"), "adapter_config.json", "`r`"),
    "r-is-zero": (_config(r=0), "adapter_config.json", "`r`"),
    "lora-alpha-is-a-string": (_config(lora_alpha="16"), "adapter_config.json", "`lora_alpha`"),
    "target-modules-is-a-number": (_config(target_modules=5), "adapter_config.json", "`target_modules`"),
    "fan-in-fan-out-is-a-string": (_config(fan_in_fan_out="yes"), "adapter_config.json", "`fan_in_fan_out`"),
    "bias-unknown": (_config(bias="some"), "adapter_config.json", "`bias`"),
    "peft-type-ia3": (_config(peft_type="IA3"), "adapter_config.json", "'IA3' is not supported"),
    "peft-type-missing": (_config(peft_type=None), "adapter_config.json", "`peft_type`"),
    "config-not-json": (_config_text("{r: 8,"), "adapter_config.json", "not valid JSON"),
    "config-is-a-list": (_config_text("[1, 2]"), "adapter_config.json", "JSON object"),
    "not-an-adapter-dir": (_no_config, "adapter_config.json", "not a PEFT adapter directory"),
    "pickle-only": (_bin_only, "adapter_model.bin", "never unpickles"),
}


@pytest.fixture(scope="module")
def smollm(header_base: HeaderBase) -> Path:
    return header_base("smollm-135m")


def _fresh_adapter(make_adapter: MakeAdapter) -> Path:
    """A tiny real adapter (every byte written) on two layers of SmolLM-135M: 8 tensors, 74 KB."""
    targets = ["q_proj", "v_proj"]
    return make_adapter(
        adapter_config("HuggingFaceTB/SmolLM-135M", targets, r=4, layers_to_transform=[0, 1], layers_pattern="layers"),
        lora_tensors("smollm-135m", targets, 4, layers=range(2)),
        real=True,
    )


def _assert_unusable(report: Report, file_name: str, words: str) -> Finding:
    assert report.status is Status.ERROR, describe(report)
    assert [f.category for f in report.findings] == [Category.INPUT], describe(report)
    finding = report.findings[0]
    assert finding.severity is Severity.ERROR and finding.code == "INPUT-UNUSABLE"
    assert file_name in finding.message, finding.message
    assert words in finding.message, finding.message
    return finding


def _assert_cli_exit_2(capsys: pytest.CaptureFixture[str], adapter: Path | str, base: Path | str) -> None:
    capsys.readouterr()
    rc = main(["check", str(adapter), "--base", str(base)])
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert "Traceback" not in out + err


def test_the_unbroken_adapter_passes(smollm: Path, make_adapter: MakeAdapter) -> None:
    report = check(_fresh_adapter(make_adapter), smollm)
    assert_passes(report)


@pytest.mark.parametrize("case", sorted(ADAPTER_CASES))
def test_unusable_adapter_is_an_input_error_naming_the_file(
    case: str, smollm: Path, make_adapter: MakeAdapter, capsys: pytest.CaptureFixture[str]
) -> None:
    mutate, file_name, words = ADAPTER_CASES[case]
    adapter = _fresh_adapter(make_adapter)
    mutate(adapter)
    _assert_unusable(check(adapter, smollm), file_name, words)
    _assert_cli_exit_2(capsys, adapter, smollm)


def test_missing_adapter_directory(smollm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-adapter"
    _assert_unusable(check(missing, smollm), "no-such-adapter", "not a local directory")
    _assert_cli_exit_2(capsys, missing, smollm)


def test_a_bare_name_that_is_no_directory_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``check my-adapter`` with no such directory: not only "not in the Hub cache" (a bare name is also a legacy
    Hub id), but that no local directory has that name."""
    from lora_lock.errors import SourceError
    from lora_lock.sources.resolve import resolve

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError) as caught:
        resolve("no-such-adapter", what="adapter", offline=True)
    assert caught.value.message.startswith("adapter 'no-such-adapter': no local directory of that name")
    assert caught.value.hint and "./NAME" in caught.value.hint
    with pytest.raises(SourceError) as caught:  # an org/name id is a Hub id only: its own message
        resolve("org/no-such-adapter", what="adapter", offline=True)
    assert "no local directory" not in caught.value.message


def _base_copy(src: Path, dst: Path) -> Path:
    return copy_sparse(src, dst)


def _base_cases() -> dict[str, tuple[Callable[[Path], None], str, str]]:
    def truncate_shard(root: Path) -> None:
        path = root / "model-00002-of-00004.safetensors"
        with path.open("r+b") as fh:
            fh.truncate(path.stat().st_size - 10)

    def remove_shard(root: Path) -> None:
        (root / "model-00003-of-00004.safetensors").unlink()

    def edit_index(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
        def mutate(root: Path) -> None:
            path = root / "model.safetensors.index.json"
            doc = json.loads(path.read_text())
            change(doc)
            path.write_text(json.dumps(doc))

        return mutate

    def edit_config(**fields: Any) -> Callable[[Path], None]:
        def mutate(root: Path) -> None:
            path = root / "config.json"
            doc = json.loads(path.read_text())
            doc.update(fields)
            path.write_text(json.dumps(doc))

        return mutate

    def no_config(root: Path) -> None:
        (root / "config.json").unlink()

    def no_weights(root: Path) -> None:
        for path in root.glob("model*"):
            path.unlink()

    def pickle_only(root: Path) -> None:
        no_weights(root)
        (root / "pytorch_model.bin").write_bytes(b"PK\x03\x04")

    return {
        "truncated-shard": (truncate_shard, "model-00002-of-00004.safetensors", "past the end"),
        "missing-shard": (remove_shard, "model.safetensors.index.json", "model-00003-of-00004.safetensors"),
        "index-places-tensor-in-wrong-shard": (
            edit_index(
                lambda d: d["weight_map"].update({"model.embed_tokens.weight": d["weight_map"]["lm_head.weight"]})
            ),
            "model.safetensors.index.json",
            "does not hold it",
        ),
        "index-path-traversal": (
            edit_index(lambda d: d["weight_map"].update({"x": "../../../etc/passwd"})),
            "model.safetensors.index.json",
            "plain relative path",
        ),
        "index-weight-map-not-a-dict": (
            edit_index(lambda d: d.update({"weight_map": ["a"]})),
            "model.safetensors.index.json",
            "weight_map",
        ),
        "no-config": (no_config, "", "no config.json"),
        "config-hidden-size-string": (edit_config(hidden_size="4096"), "config.json", "`hidden_size`"),
        "config-quantization-not-object": (edit_config(quantization_config="4bit"), "config.json", "quantization"),
        "no-weights": (no_weights, "", "no model.safetensors"),
        "pickle-only-base": (pickle_only, "", "pytorch_model.bin"),
    }


BASE_CASES = _base_cases()


@pytest.mark.parametrize("case", sorted(BASE_CASES))
def test_unusable_base_is_an_input_error_naming_the_file(
    case: str,
    llama3: Path,
    make_adapter: MakeAdapter,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mutate, file_name, words = BASE_CASES[case]
    base = _base_copy(llama3, tmp_path / "base")
    mutate(base)
    adapter = make_adapter(adapter_config(LLAMA3, ["q_proj"]), lora_tensors("llama-3-8b", ["q_proj"], 16))
    finding = _assert_unusable(check(adapter, base), file_name, words)
    assert str(base) in finding.message
    _assert_cli_exit_2(capsys, adapter, base)


def _corrupt_quant_state(base: Path) -> None:
    path = base / "model.safetensors"
    header = header_of(path)
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
    entry = header["model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4"]
    begin, end = entry["data_offsets"]
    with path.open("r+b") as fh:
        fh.seek(8 + length + begin)
        fh.write(b"x" * (end - begin))


def test_corrupt_bnb_quant_state_exits_2_without_traceback(
    header_base: HeaderBase, make_adapter: MakeAdapter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = copy_sparse(header_base("llama-3-8b", quant="bnb-4bit"), tmp_path / "bnb")
    _corrupt_quant_state(base)
    adapter = make_adapter(adapter_config(LLAMA3, ["q_proj"]), lora_tensors("llama-3-8b", ["q_proj"], 16))
    _assert_cli_exit_2(capsys, adapter, base)


def test_corrupt_bnb_quant_state_is_an_input_finding(
    header_base: HeaderBase, make_adapter: MakeAdapter, tmp_path: Path
) -> None:
    base = copy_sparse(header_base("llama-3-8b", quant="bnb-4bit"), tmp_path / "bnb")
    _corrupt_quant_state(base)
    adapter = make_adapter(adapter_config(LLAMA3, ["q_proj"]), lora_tensors("llama-3-8b", ["q_proj"], 16))
    _assert_unusable(check(adapter, base), "model.safetensors", "quant state")


def test_unusable_input_does_not_mark_categories_as_passed(smollm: Path, make_adapter: MakeAdapter) -> None:
    adapter = _fresh_adapter(make_adapter)
    _config(r="8")(adapter)
    report = check(adapter, smollm)
    assert report.status is Status.ERROR
    assert all(state.value != "pass" for state in report.checked.values()), dict(report.checked)


# --- the command line on size-real bases --------------------------------------------------------------------------


def test_cli_exit_codes_and_json_report(
    llama3: Path, make_adapter: MakeAdapter, capsys: pytest.CaptureFixture[str]
) -> None:
    good = make_adapter(adapter_config(LLAMA3, P7), lora_tensors("llama-3-8b", P7, 16))
    bad = make_adapter(adapter_config(LLAMA2, ATTN), lora_tensors("llama-2-7b", ATTN, 16))
    capsys.readouterr()
    assert main(["check", str(good), "--base", str(llama3)]) == 0
    capsys.readouterr()
    assert main(["check", str(bad), "--base", str(llama3), "--format", "json"]) == 1
    out, err = capsys.readouterr()
    doc: Mapping[str, Any] = json.loads(out)
    assert doc["status"] == "fail"
    shape = [f for f in doc["findings"] if f["code"] == "COMPAT-SHAPE"]
    assert {f["subject"] for f in shape} == {"model.layers.*.self_attn.k_proj", "model.layers.*.self_attn.v_proj"}
    assert all(f["category"] == "compat" and f["severity"] == "error" for f in shape)
    assert "Traceback" not in err


def test_cli_github_annotations_point_at_the_adapter_config(
    llama3: Path, make_adapter: MakeAdapter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = make_adapter(adapter_config(LLAMA2, ATTN), lora_tensors("llama-2-7b", ATTN, 16))
    monkeypatch.chdir(bad.parent)
    capsys.readouterr()
    assert main(["check", bad.name, "--base", str(llama3), "--format", "github"]) == 1
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("::error ")]
    assert errors and all(line.startswith(f"::error file={bad.name}/adapter_config.json,title=") for line in errors)
    # An adapter that is no workspace file (a Hub id): annotations on the run, no file= property.
    from lora_lock._cli import _adapter_config_file

    assert _adapter_config_file("org/not-a-local-dir") is None


def test_whole_header_only_base_builder_is_fast_and_sparse(tmp_path: Path) -> None:
    # 30 shards of Llama-3-70B (141 GB apparent size): headers only, so it is cheap to write and to check.
    base = write_header_only_base(tmp_path / "70b", "llama-3-70b", shards=30)
    index = json.loads((base / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 30
    assert index["metadata"]["total_size"] == 141_107_412_992
    assert sum(p.stat().st_blocks * 512 for p in base.iterdir()) < 8 << 20
