"""A short, deterministic hypothesis run of every fuzz harness (fuzz/harnesses.py), inside the normal suite.

The contract: for any input bytes, lora-lock's readers return a result or raise its own ``InputError``, in bounded
time and without allocating for a claimed (not actual) size. Volume runs live in ``fuzz/run.py``; crashes found
there are pinned one by one in ``tests/fuzz/test_fuzz_regressions.py``.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzz import harnesses
from fuzz.harnesses import HARNESSES, WORKSPACE, split_sized
from fuzz.seeds import CORPUS, seeds
from fuzz.strategies import STRATEGIES
from lora_lock.errors import InputError
from lora_lock.inspect.adapter import read_adapter_config
from lora_lock.inspect.checkpoint import read_checkpoint
from lora_lock.inspect.model_config import read_model_facts
from lora_lock.inspect.safetensors_header import MAX_HEADER_BYTES, parse_header, read_header
from lora_lock.inspect.tokenizer import read_tokenizer_facts
from lora_lock.lock import io as lockfile
from lora_lock.probe.golden import read_golden

SMOKE = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    # No shrinking: a smoke failure prints the failing input as generated; pin it in test_fuzz_regressions.py.
    phases=(Phase.explicit, Phase.generate),
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

#: Harnesses whose derandomized smoke run currently finds a known crash, with the reason (pin the crash in
#: test_fuzz_regressions.py). The xfail is strict: once the readers are fixed the entry XPASSes and must go.
#: Empty: every crash a smoke run has found is handled, and pinned in test_fuzz_regressions.py.
KNOWN_FAILING: dict[str, str] = {}


def _smoke_param(name: str) -> object:
    if name in KNOWN_FAILING:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILING[name]))
    return name


@pytest.mark.parametrize("name", [_smoke_param(name) for name in HARNESSES])
def test_harness_smoke(name: str) -> None:
    run = HARNESSES[name].run

    @SMOKE
    @given(STRATEGIES[name])
    def check(data: bytes) -> None:
        run(data)

    check()


def test_every_harness_has_a_strategy_and_seeds() -> None:
    assert set(STRATEGIES) == set(HARNESSES) == set(seeds())


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_corpus_matches_seeds(name: str) -> None:
    """fuzz/corpus/ is what ``python -m fuzz.seeds`` writes; regenerate it after changing a seed."""
    on_disk = {p.name: p.read_bytes() for p in (CORPUS / name).iterdir()}
    assert on_disk == seeds()[name]


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_seeds_pass_their_harness(name: str) -> None:
    for data in seeds()[name].values():
        HARNESSES[name].run(data)


def test_seeds_are_accepted_not_just_refused(tmp_path: Path) -> None:
    """The seeds must be valid inputs, or the fuzzers would start from the error paths only."""
    all_seeds = seeds()
    for data in all_seeds["safetensors_parse"].values():
        data_len, raw = split_sized(data)
        parse_header(tmp_path / "m.safetensors", raw, 8 + len(raw) + data_len)
    for name, data in all_seeds["safetensors_file"].items():
        (tmp_path / name).write_bytes(data)
        assert read_header(tmp_path / name).tensors
    for data in all_seeds["model_config"].values():
        (tmp_path / "config.json").write_bytes(data)
        read_model_facts(tmp_path / "config.json")
    for data in all_seeds["adapter_config"].values():
        (tmp_path / "adapter_config.json").write_bytes(data)
        read_adapter_config(tmp_path / "adapter_config.json")
    (tmp_path / "lora.lock").write_bytes(all_seeds["lock"]["lora.lock"])
    assert lockfile.read(tmp_path / "lora.lock")["lock-version"] == 1
    (tmp_path / "golden.jsonl").write_bytes(all_seeds["golden"]["golden.jsonl"])
    assert len(read_golden(tmp_path / "golden.jsonl")[0]) == 5
    harnesses.checkpoint_index(all_seeds["checkpoint_index"]["index.json"])
    assert set(read_checkpoint(WORKSPACE.directory("ckpt")).tensors) == {"a", "b"}
    harnesses.tokenizer(all_seeds["tokenizer"]["all.bin"])
    facts = read_tokenizer_facts(WORKSPACE.directory("tok"))
    assert facts is not None and facts.vocab_size == 4


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(
    length=st.one_of(
        st.sampled_from([2**64 - 1, 2**63, MAX_HEADER_BYTES, MAX_HEADER_BYTES - 1, 10**9]),
        st.integers(0, 2**64 - 1),
    ),
    body=st.binary(max_size=32),
)
def test_claimed_header_length_allocates_nothing(length: int, body: bytes) -> None:
    """A huge length prefix on a tiny file is refused before anything of that size is allocated."""
    path = WORKSPACE.write("claimed", "model.safetensors", struct.pack("<Q", length) + body)
    tracemalloc.start()
    try:
        read_header(path)
    except InputError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 1_000_000


@settings(max_examples=40, derandomize=True, database=None, deadline=None)
@given(dims=st.lists(st.sampled_from([2**31, 2**40, 2**63, 2**64 - 1]), min_size=1, max_size=4))
def test_claimed_tensor_sizes_allocate_nothing(dims: list[int]) -> None:
    """A shape claiming exabytes costs nothing: the data section is never read to check it."""
    raw = json.dumps({"t": {"dtype": "F32", "shape": dims, "data_offsets": [0, 16]}}).encode()
    tracemalloc.start()
    try:
        parse_header(Path("m.safetensors"), raw, 8 + len(raw) + 16)
    except InputError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 1_000_000


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_atheris_engine_runs(tmp_path: Path) -> None:
    """The libFuzzer entry point and the runner work end to end (a few hundred executions, one harness)."""
    from fuzz.run import run_one

    result = run_one("atheris", "model_config", runs=300, seconds=30, out_root=tmp_path, max_len=4096, budget=1.0)
    assert result.returncode == 0, result.tail
    assert result.summary["executions"] == 300
    assert result.summary["crashes"] == len(result.summary["signatures"]) == 0
