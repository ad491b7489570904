"""The typed lock: an exact round trip with the canonical TOML, the schema still the gate for untrusted input."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.seeds import valid_lock
from lora_lock.commands.generate import generate
from lora_lock.errors import InputError, LockfileError
from lora_lock.hashing import Digest
from lora_lock.lock import io as lockfile
from lora_lock.lock.model import Adapter, Hashing, Lock, ModuleRow, read_lock
from lora_lock.lock.values import FileRef, FileSet, FrozenMap, freeze, thaw
from tests.fixtures.header_bases import adapter_config, lora_tensors

HEX = "ab" * 32
FUZZ_LOCK = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "lock" / "lora.lock"


def assert_round_trip(text: str) -> Lock:
    """Both directions of the contract, and the model's table is what tomllib reads."""
    lock = Lock.from_toml(text)
    assert lock.to_toml() == text
    assert Lock.from_toml(lock.to_toml()) == lock
    assert lock.to_dict() == lockfile.parse(text)
    assert hash(lock) == hash(Lock.from_toml(text))
    return lock


def as_0_1_0(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The lock written before runtime names for the same world: rows under checkpoint names, no runtime fields."""
    old: dict[str, Any] = json.loads(json.dumps(doc))
    old["base"].pop("runtime-rules", None)
    for section in old["adapter"]:
        section.pop("module-names", None)
        section["modules"] = [
            {**{k: v for k, v in row.items() if k != "checkpoint"}, "pattern": row.get("checkpoint", row["pattern"])}
            for row in section["modules"]
        ]
    return old


# --- values ------------------------------------------------------------------------------------------------------


def test_digest_round_trips_with_its_text() -> None:
    text = f"sha256:{HEX}"
    digest = Digest.from_str(text)
    assert str(digest) == text and Digest.from_str(str(digest)) == digest and digest.hex == HEX
    for bad in ("", HEX, f"sha512:{HEX}", f"sha256:{HEX.upper()}", f"sha256:{HEX}0", f" sha256:{HEX}"):
        with pytest.raises(InputError):
            Digest.from_str(bad)
    with pytest.raises(InputError):
        Digest("xyz")


def test_file_set_is_in_path_order_and_looked_up_by_path() -> None:
    d = Digest(HEX)
    files = FileSet((FileRef(path="b.json", digest=d, size=2), FileRef(path="a.json", digest=d, size=1)))
    assert files.paths() == ("a.json", "b.json") and "a.json" in files and len(files) == 2
    assert files.get("b.json") == FileRef(path="b.json", digest=d, size=2) and files.get("c") is None
    assert FileSet.from_dict(files.to_dict()) == files
    with pytest.raises(ValueError, match="twice"):
        FileSet((FileRef(path="a", digest=d, size=1), FileRef(path="a", digest=d, size=2)))


def test_frozen_values_thaw_to_what_was_read() -> None:
    value = {"b": [1, {"c": dt.date(2024, 1, 2)}], "a": 1.5, "t": True}
    frozen = freeze(value)
    assert isinstance(frozen, FrozenMap) and hash(frozen) == hash(freeze(value))
    assert frozen == {"a": 1.5, "b": (1, {"c": dt.date(2024, 1, 2)}), "t": True}  # arrays are tuples
    assert thaw(frozen) == value and list(frozen) == ["a", "b", "t"]


# --- locks the suite and the fuzzer hold -------------------------------------------------------------------------


def test_the_seed_lock_and_the_fuzz_corpus_lock_round_trip() -> None:
    lock = assert_round_trip(lockfile.dumps(valid_lock()))
    assert lock.adapter_names() == ("adapter",)
    adapter = lock.adapter("adapter")
    assert isinstance(adapter, Adapter) and adapter.module_names is None  # an earlier lock: checkpoint names
    ref = adapter.files.get("adapter_config.json")
    assert ref is not None and ref.digest == Digest(HEX) and ref.size == 1186
    assert adapter.settings.target_modules == ("q_proj", "v_proj") and adapter.settings.lora_alpha == 16
    assert lock.base.config.hidden_size == 64 and lock.base.runtime_rules is None and lock.probe is None
    assert_round_trip(FUZZ_LOCK.read_text(encoding="utf-8"))


def test_fields_the_schema_leaves_open_are_kept() -> None:
    doc = valid_lock()
    doc["hashing"]["x-note"] = "kept"
    doc["adapter"][0]["settings"]["init_lora_weights"] = "gaussian"
    doc["base"]["quantization"] = {"method": "bitsandbytes", "params": {"load_in_4bit": True, "skip": []}}
    doc["golden"] = {
        "adapter": [
            {"name": "adapter", "accuracy": 0.5, "correct": "0f", "unstable": "00", "noise-ll": 0.1, "x-seen": 2}
        ],
        "dataset": "golden.jsonl",
        "dataset-digest": f"sha256:{HEX}",
        "items": 8,
        "kinds": {},
        "convention": "lm-eval-0.4.13",
        "x-note": "kept",
    }
    lock = assert_round_trip(lockfile.dumps(doc))
    assert dict(lock.hashing.extra or {}) == {"x-note": "kept"}
    assert dict(lock.adapters[0].settings.extra or {}) == {"init_lora_weights": "gaussian"}
    assert dict(lock.base.quantization.params or {}) == {"load_in_4bit": True, "skip": ()}
    assert (
        lock.golden is not None
        and dict(lock.golden.kinds or {}) == {}
        and lock.golden.convention == "lm-eval-0.4.13"
        and dict(lock.golden.extra or {}) == {"x-note": "kept"}
    )
    row = lock.golden.adapters[0]
    assert (row.unstable, row.noise_ll, dict(row.extra)) == ("00", 0.1, {"x-seen": 2})


def test_records_refuse_keys_the_schema_closes_and_extras_that_shadow_a_field() -> None:
    row = {"pattern": "p", "count": 1, "layers": "0", "kind": "linear", "base-shape": "1", "rank": 1}
    with pytest.raises(ValueError, match="unexpected keys"):
        ModuleRow.from_dict({**row, "lora-a": "1", "lora-b": "1", "bogus": 1})
    shadow = Hashing(algorithm="sha256", files="f", tokenizer_fingerprint="t", extra=FrozenMap({"files": "g"}))
    with pytest.raises(ValueError, match="repeats"):
        shadow.to_dict()


# --- untrusted input: refused by the schema, with lockfile.read's words -------------------------------------------


def _edited(edit: Any) -> str:
    doc = valid_lock()
    edit(doc)
    return lockfile.dumps(doc)


REFUSED = {
    "not toml": "lock-version = = 1\n",
    "newer": _edited(lambda d: d.__setitem__("lock-version", 2)),
    "no version": _edited(lambda d: d.pop("lock-version")),
    "bad digest": _edited(lambda d: d["base"]["files"]["config.json"].__setitem__("digest", "sha256:00")),
    "unknown section": _edited(lambda d: d.__setitem__("extra", {"a": 1})),
    "closed table": _edited(lambda d: d["base"]["config"].__setitem__("layers", 3)),
    "twice": _edited(lambda d: d["adapter"].append(dict(d["adapter"][0]))),
    "deep keys": "a" + ".a" * 40 + " = 1\n",
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_invalid_locks_are_refused_as_lockfile_read_refuses_them(case: str, tmp_path: Path) -> None:
    path = tmp_path / "lora.lock"
    path.write_text(REFUSED[case], encoding="utf-8")
    with pytest.raises(LockfileError) as by_read:
        lockfile.read(path)
    with pytest.raises(LockfileError) as by_text:
        Lock.from_toml(REFUSED[case], path)
    with pytest.raises(LockfileError) as by_model:
        read_lock(path)
    assert str(by_text.value) == str(by_read.value) == str(by_model.value)
    if case not in ("not toml", "deep keys"):
        with pytest.raises(LockfileError) as by_dict:
            Lock.from_dict(lockfile.parse(REFUSED[case]), path)
        assert str(by_dict.value) == str(by_read.value)


# --- locks the real generate writes ------------------------------------------------------------------------------


def test_a_static_lock_of_the_tiny_llama_round_trips_and_so_does_its_0_1_0_form(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path
) -> None:
    shutil.copytree(tiny_llama, tmp_path / "base")
    shutil.copytree(tiny_llama_adapter, tmp_path / "adapter")
    result = generate([tmp_path / "adapter"], tmp_path / "base", tmp_path / "lora.lock", probe=False)
    assert result.written, [f.to_dict() for f in result.report.findings]
    lock = assert_round_trip((tmp_path / "lora.lock").read_text(encoding="utf-8"))
    assert read_lock(tmp_path / "lora.lock") == lock
    assert lock.adapters[0].module_names == "runtime" and lock.base.runtime_rules
    assert "model.safetensors" in lock.base.files and lock.tokenizer.fingerprint is not None
    assert_round_trip(lockfile.dumps(as_0_1_0(lockfile.parse(lock.to_toml()))))


def test_a_static_lock_of_a_quantized_base_with_two_adapters_round_trips(
    header_base: Any, make_adapter: Any, tmp_path: Path
) -> None:
    base = header_base("smollm-135m", quant="bnb-4bit")
    targets = ("q_proj", "v_proj")
    one = make_adapter(
        adapter_config("HuggingFaceTB/SmolLM-135M", targets, r=4), lora_tensors("smollm-135m", targets, 4)
    )
    two = make_adapter(
        adapter_config("HuggingFaceTB/SmolLM-135M", ["k_proj"], rank_pattern={"k_proj": 2}, use_dora=True),
        lora_tensors("smollm-135m", ["k_proj"], ranks={"k_proj": 2}, dora=True),
        name="dora",
    )
    result = generate([one, two], base, tmp_path / "lora.lock", probe=False, names=["one", "two"])
    assert result.written, [f.to_dict() for f in result.report.findings]
    lock = assert_round_trip((tmp_path / "lora.lock").read_text(encoding="utf-8"))
    assert lock.base.quantization.method != "none" and lock.base.quantization.params
    assert lock.adapter_names() == ("one", "two")
    two_settings = lock.adapters[1].settings
    assert two_settings.use_dora is True and dict(two_settings.rank_pattern or {}) == {"k_proj": 2}


@pytest.mark.slow
def test_a_lock_with_the_probe_and_a_golden_set_round_trips(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path
) -> None:
    shutil.copytree(tiny_llama, tmp_path / "base")
    shutil.copytree(tiny_llama_adapter, tmp_path / "adapter")
    golden = tmp_path / "golden.jsonl"
    items = [{"prompt": f"{i}+{i}=", "choices": [str(2 * i), "x"], "answer": 0} for i in range(4)]
    golden.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    out = tmp_path / "lora.lock"
    result = generate([tmp_path / "adapter"], tmp_path / "base", out, probe=True, device="cpu", golden=golden)
    assert result.written, [f.to_dict() for f in result.report.findings]
    lock = assert_round_trip(out.read_text(encoding="utf-8"))
    assert lock.probe is not None and lock.probe.adapters[0].name == "adapter"
    assert lock.probe.sidecar_digest.hex and lock.golden is not None and lock.golden.items == 4


# --- any schema-valid lock ---------------------------------------------------------------------------------------

names = st.from_regex(r"[a-j]([a-j0-9_.-]{0,6}[a-j])?", fullmatch=True)
texts = st.text(st.characters(codec="utf-8"), max_size=10)
counts = st.integers(0, 2**40)
digests = st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}")
commits = st.text("0123456789abcdef", min_size=40, max_size=40)
relpaths = st.lists(names, min_size=1, max_size=3).map("/".join)
shapes = st.lists(st.integers(0, 4096), min_size=1, max_size=3).map(lambda d: "x".join(map(str, d)))
scalars = st.one_of(texts, counts, st.booleans(), st.floats(allow_nan=False), st.dates(), st.datetimes(), st.times())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3))


def opt(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A table with some of ``fields``."""
    return st.fixed_dictionaries({}, optional=fields)


def table(required: Mapping[str, st.SearchStrategy[Any]], /, **optional: st.SearchStrategy[Any]) -> Any:
    """A table with every ``required`` key and some ``optional`` ones."""
    return st.fixed_dictionaries(dict(required), optional=optional)


def open_table(required: Mapping[str, st.SearchStrategy[Any]], /, **optional: st.SearchStrategy[Any]) -> Any:
    """A table the schema leaves open: every ``required`` key, some ``optional`` ones and up to two more."""
    more = st.dictionaries(names.map(lambda n: "x-" + n), values, max_size=2)
    return st.builds(lambda a, b: {**b, **a}, table(required, **optional), more)


files = st.dictionaries(relpaths, st.fixed_dictionaries({"digest": digests, "size": counts}), max_size=3)
origin = st.one_of(
    st.fixed_dictionaries({"source": relpaths}, optional={"ref": texts}),
    st.fixed_dictionaries({"repo": st.just("org/model"), "revision": commits}, optional={"ref": texts}),
)
base_section = st.builds(
    lambda o, t: {**o, **t},
    origin,
    table(
        {
            "config": opt(architecture=texts, hidden_size=counts, tie_word_embeddings=st.booleans()),
            "weights-dtypes": st.dictionaries(names, counts, max_size=2),
            "quantization": table({"method": texts}, params=st.dictionaries(names, values, max_size=2)),
            "files": files,
        },
        dtype=texts,
        **{"runtime-rules": texts},
    ),
)
tokenizer_section = st.builds(
    lambda o, t: {**o, **t},
    origin,
    table(
        {"files": files},
        fingerprint=digests,
        **{
            "vocab-size": counts,
            "special-tokens": st.dictionaries(names, counts, max_size=2),
            "chat-template": digests,
        },
    ),
)
row = table(
    {k: shapes for k in ("base-shape", "lora-a", "lora-b")}
    | {"pattern": texts, "count": st.integers(1, 99), "layers": st.just("0-3,5"), "rank": counts},
    kind=st.sampled_from(["linear", "conv1d", "embedding", "conv"]),
    checkpoint=texts,
).map(lambda r: {"kind": "linear", **r})
settings_table = open_table(
    {"peft_type": texts, "r": st.integers(1, 64), "lora_alpha": st.integers(1, 64) | st.floats(0, 64)},
    target_modules=texts | st.lists(values, max_size=2),
    rank_pattern=st.dictionaries(names, values, max_size=2),
    use_dora=st.booleans(),
    layers_to_transform=st.lists(counts, max_size=2),
)
adapter_body = table(
    {"settings": settings_table, "files": files, "modules": st.lists(row, max_size=2)},
    saved=st.lists(st.fixed_dictionaries({"name": texts, "shape": shapes}), max_size=2),
    **{"module-names": st.just("runtime"), "base-named": texts},
)
numbers = st.integers(-5, 5) | st.floats(allow_nan=False)
probe_section = open_table(
    {
        "adapter": st.lists(
            # A model with token or class distributions records KL; a feature extractor, embedding distances.
            open_table({"name": names, "effect-kl": numbers, "noise-kl": numbers, "tolerance": numbers})
            | open_table(
                {
                    "name": names,
                    "embedding": st.just("mean-last-hidden-state"),
                    "effect-distance": st.floats(0, 10),
                    "noise-distance": st.floats(0, 10),
                    "tolerance": numbers,
                }
            ),
            max_size=2,
        ),
        "device": names,
        "dtype": st.sampled_from(["float32", "bfloat16", "float16"]),
        "positions": st.integers(1, 9),
        "prompts": st.integers(1, 9),
        "prompts-digest": digests,
        "sidecar": st.just("lora.lock.probe-0123456789ab.json"),
        "sidecar-digest": digests,
        "top-k": st.integers(1, 9),
    },
    torch=texts,
)
golden_section = open_table(
    {
        "adapter": st.lists(
            open_table({"name": names, "accuracy": st.floats(0, 1), "correct": st.just("0f")}), max_size=2
        ),
        "dataset": relpaths,
        "dataset-digest": digests,
        "items": st.integers(1, 99),
    },
    kinds=st.dictionaries(names, counts, max_size=2),
)


@st.composite
def locks(draw: st.DrawFn) -> dict[str, Any]:
    adapter_names = draw(st.lists(names, min_size=0, max_size=3, unique=True))
    doc: dict[str, Any] = {
        "lock-version": 1,
        "generated-by": "lora-lock " + draw(texts),
        "hashing": draw(open_table({"algorithm": st.just("sha256"), "files": texts, "tokenizer-fingerprint": texts})),
        "base": draw(base_section),
        "tokenizer": draw(tokenizer_section),
        "adapter": [{"name": n, **draw(origin), **draw(adapter_body)} for n in adapter_names],
        "environment": draw(
            table(
                {"versions": st.dictionaries(names, st.just("1.0+cpu"), max_size=2), "policy": st.just({"a": "exact"})},
                gpu=st.dictionaries(names, texts, max_size=1),
            )
        ),
    }
    doc.update(draw(opt(probe=probe_section, golden=golden_section)))
    return doc


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(locks())
def test_every_schema_valid_lock_round_trips(doc: dict[str, Any]) -> None:
    lockfile.validate(doc, Path("lora.lock"))  # the strategy makes valid locks only
    text = lockfile.dumps(doc)
    lock = assert_round_trip(text)
    assert Lock.from_dict(doc) == lock


# --- consumers on the model --------------------------------------------------------------------------------------


def test_export_env_and_list_read_the_typed_lock(tmp_path: Path) -> None:
    """fleet reads the lock through the model: the same bytes as it wrote from the parsed table."""
    from lora_lock.commands.fleet import adapter_names, pins
    from lora_lock.report.fleet import constraints, matrix_json

    doc = valid_lock()
    doc["environment"]["versions"].update({"cuda": "12.4", "huggingface_hub": "1.0.0"})
    doc["adapter"].append({**doc["adapter"][0], "name": "b-two"})
    path = tmp_path / "lora.lock"
    path.write_text(lockfile.dumps(doc), encoding="utf-8")
    assert adapter_names(path) == ["adapter", "b-two"]
    assert matrix_json(adapter_names(path)) == '{"adapter":["adapter","b-two"]}\n'
    assert constraints(pins(path)) == (
        "# Generated by `lora-lock export-env` from lora.lock. Use with: pip install -c <this file> ...\n"
        "# python 3.11.7, CUDA 12.4\n"
        "huggingface-hub==1.0.0\n"
        "peft==0.13.2\n"
        "torch==2.4.0  # locked with the cpu build\n"
    )
