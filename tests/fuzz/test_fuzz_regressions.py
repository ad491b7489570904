"""Minimal inputs on which a reader must keep its contract, one test per class of hostile input the fuzzers found.

The contract: for any input bytes a reader returns a result or raises lora-lock's ``InputError``, in bounded time
(:data:`BUDGET`). Each test names the input and states what the reader must do with it; which input was found how,
and what it raised, is in the crash table of ``fuzz/README.md``.

An input a reader does not handle yet is marked ``@xfail(raises=<what it raises>, ...)``, strict: once the reader
handles it the strict xfail fails, and the marker must go.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fuzz.harnesses import time_budget
from lora_lock.compat import is_targeted, rank_for
from lora_lock.errors import InputError
from lora_lock.inspect.adapter import AdapterConfig, read_adapter_config
from lora_lock.inspect.checkpoint import read_checkpoint
from lora_lock.inspect.model_config import read_model_facts
from lora_lock.inspect.safetensors_header import parse_header, read_header
from lora_lock.inspect.tokenizer import read_tokenizer_facts
from lora_lock.lock import io as lockfile
from lora_lock.probe.golden import read_golden, score_generation

#: Seconds a reader (or a match against what it read) may take; a healthy call on these inputs takes milliseconds.
BUDGET = 1.0

DEEP_ARRAY = b"[" * 1000  # past the interpreter's recursion limit (json's C scanner counts against it too)
BIG_INT = b"1" * 4301  # past sys.get_int_max_str_digits() (4300): int() of it raises ValueError
HEX_INT = b"0x" + b"f" * 3600  # TOML hex: parsed fine (power-of-two bases have no limit), but 4335 decimal digits
CATASTROPHIC = "(.*)*z"  # exponential backtracking on any module name that does not end in "z"
Q_PROJ = "model.layers.0.self_attn.q_proj"


def xfail(raises: type[BaseException], reason: str) -> pytest.MarkDecorator:
    """An input the reader does not handle yet: the test fails with ``raises``."""
    return pytest.mark.xfail(strict=True, raises=raises, reason=reason)


def survives(call: Callable[[], object]) -> None:
    """The contract: a result or an InputError, within the budget. Anything else propagates (a crash)."""
    with time_budget(BUDGET), contextlib.suppress(InputError):
        call()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- safetensors headers: parse_header / read_header ----------------------------------------------------------------


def _parse(raw: bytes) -> Callable[[], object]:
    return lambda: parse_header(Path("model.safetensors"), raw, 8 + len(raw))


def _file(tmp_path: Path, raw: bytes) -> Callable[[], object]:
    path = write(tmp_path / "model.safetensors", len(raw).to_bytes(8, "little") + raw)
    return lambda: read_header(path)


def test_header_deeply_nested_json() -> None:
    """A safetensors header nested 1000 deep: read or refused with an InputError, never a RecursionError."""
    survives(_parse(DEEP_ARRAY))


def test_header_file_deeply_nested_json(tmp_path: Path) -> None:
    """The same header in a file: ``read_header`` reads or refuses it with an InputError."""
    survives(_file(tmp_path, DEEP_ARRAY))


def test_header_integer_of_4301_digits() -> None:
    """A header integer past Python's int digit limit (4300) is read or refused with an InputError."""
    survives(_parse(BIG_INT))


def test_header_file_integer_of_4301_digits(tmp_path: Path) -> None:
    """A tensor dimension past the int digit limit, in a file, is read or refused with an InputError."""
    survives(_file(tmp_path, b'{"t":{"dtype":"U8","shape":[' + BIG_INT + b'],"data_offsets":[0,0]}}'))


def test_header_shape_product_too_long_to_print() -> None:
    """A shape whose byte count cannot be printed (10**4400) is read or refused with an InputError."""
    dim = b"1" + b"0" * 2200  # each dimension parses; their product, 10**4400, cannot be printed
    survives(_parse(b'{"t":{"dtype":"U8","shape":[' + dim + b"," + dim + b'],"data_offsets":[0,0]}}'))


def test_header_shape_product_is_bounded() -> None:
    """The size of a shape is checked in bounded time: 400 dimensions of 4000 digits are read or refused within
    the budget."""
    dims = b",".join([b"9" * 4000] * 400)  # a 100 MB header (allowed) with 25,000 such dims never finishes
    survives(_parse(b'{"t":{"dtype":"U8","shape":[' + dims + b'],"data_offsets":[0,0]}}'))


# --- JSON files read through inspect.checkpoint.read_json -------------------------------------------------------------

JSON_FILES = ("config.json", "adapter_config.json", "model.safetensors.index.json", "tokenizer_config.json")


def _json_file(kind: str, tmp_path: Path, data: bytes) -> Callable[[], object]:
    path = write(tmp_path / kind, data)
    if kind == "config.json":
        return lambda: read_model_facts(path)
    if kind == "adapter_config.json":
        return lambda: read_adapter_config(path)
    if kind == "model.safetensors.index.json":
        return lambda: read_checkpoint(tmp_path)
    return lambda: read_tokenizer_facts(tmp_path)


@pytest.mark.parametrize("kind", JSON_FILES)
def test_json_file_deeply_nested(kind: str, tmp_path: Path) -> None:
    """Each JSON input file nested 1000 deep is read or refused with an InputError."""
    survives(_json_file(kind, tmp_path, DEEP_ARRAY))


@pytest.mark.parametrize("kind", JSON_FILES)
def test_json_file_integer_of_4301_digits(kind: str, tmp_path: Path) -> None:
    """Each JSON input file holding an integer past the int digit limit is read or refused with an InputError."""
    survives(_json_file(kind, tmp_path, b'{"a":' + BIG_INT + b"}"))


# --- adapter_config.json --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"Infinity", id="Infinity"),
        pytest.param(b"1e400", id="1e400"),
        pytest.param(b"NaN", id="NaN"),
        pytest.param(b"1" + b"0" * 309, id="int-10**309"),
    ],
)
def test_adapter_rank_pattern_not_finite(value: bytes, tmp_path: Path) -> None:
    """A ``rank_pattern`` value that is not a finite integer of sane size is read or refused with an InputError."""
    path = write(tmp_path / "adapter_config.json", b'{"peft_type":"LORA","rank_pattern":{"q":' + value + b"}}")
    survives(lambda: read_adapter_config(path))


# --- matching a config the reader accepted against module names (what `lora-lock check` does) ------------------------


def matched(tmp_path: Path, doc: dict[str, Any], key: str = Q_PROJ) -> None:
    """Correct: the reader refuses the config (InputError), or is_targeted / rank_for answer within the budget."""
    path = write(tmp_path / "adapter_config.json", json.dumps(doc).encode())
    with time_budget(BUDGET):
        try:
            config = read_adapter_config(path)
        except InputError:
            return
        assert isinstance(config, AdapterConfig)
        assert isinstance(is_targeted(config, key), bool)
        assert isinstance(rank_for(config, key), int)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"peft_type": "LORA", "target_modules": CATASTROPHIC}, id="target_modules"),
        pytest.param(
            {"peft_type": "LORA", "target_modules": ["q_proj"], "exclude_modules": CATASTROPHIC}, id="exclude"
        ),
        pytest.param({"peft_type": "LORA", "rank_pattern": {CATASTROPHIC: 4}}, id="rank_pattern"),
        pytest.param(
            {
                "peft_type": "LORA",
                "target_modules": ["q_proj"],
                "layers_to_transform": [0],
                "layers_pattern": [CATASTROPHIC],
            },
            id="layers_pattern",
        ),
    ],
)
def test_adapter_regex_catastrophic_backtracking(doc: dict[str, Any], tmp_path: Path) -> None:
    """A user regex that backtracks exponentially is refused, or matched within the budget."""
    matched(tmp_path, doc)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(
            {"peft_type": "LORA", "target_modules": ["q_proj"], "layers_to_transform": [0], "layers_pattern": ["("]},
            id="layers_pattern-unbalanced",
        ),
        pytest.param(
            {"peft_type": "LORA", "target_modules": "a{4294967296}"},
            id="target_modules-huge-repeat",
        ),
        pytest.param(
            {"peft_type": "LORA", "rank_pattern": {"a{4294967296}": 2}},
            id="rank_pattern-huge-repeat",
        ),
        pytest.param(
            {"peft_type": "LORA", "target_modules": "(" * 500 + ")" * 500},
            id="target_modules-nested-groups",
        ),
    ],
)
def test_adapter_regex_that_does_not_compile(doc: dict[str, Any], tmp_path: Path) -> None:
    """A user regex that does not compile (unbalanced, a repeat past ``re``'s limit, 500 nested groups) is refused
    when the config is read (InputError), or harmless when matched: never another error while matching."""
    matched(tmp_path, doc)


def test_module_name_with_huge_layer_index(tmp_path: Path) -> None:
    """A module name with a 4301-digit layer index is matched within the budget."""
    doc = {"peft_type": "LORA", "target_modules": ["q_proj"], "layers_to_transform": [0]}
    matched(tmp_path, doc, key="model.layers." + "7" * 4301 + ".q_proj")


# --- model.safetensors.index.json -----------------------------------------------------------------------------------


def test_index_shard_name_too_long(tmp_path: Path) -> None:
    """A shard name longer than the system's file-name limit is read or refused with an InputError."""
    write(tmp_path / "model.safetensors.index.json", json.dumps({"weight_map": {"a": "x" * 300}}).encode())
    survives(lambda: read_checkpoint(tmp_path))


def test_index_shard_path_too_long(tmp_path: Path) -> None:
    """A shard path longer than the system's path limit is read or refused with an InputError."""
    write(tmp_path / "model.safetensors.index.json", json.dumps({"weight_map": {"a": "a/" * 2100 + "x"}}).encode())
    survives(lambda: read_checkpoint(tmp_path))


# --- lora.lock ------------------------------------------------------------------------------------------------------


def _lock(tmp_path: Path, data: bytes) -> Callable[[], object]:
    path = write(tmp_path / "lora.lock", data)
    return lambda: lockfile.read(path)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"a = " + b"[" * 1000, id="arrays"),
        pytest.param(b"a = " + b"{a=" * 1000, id="inline-tables"),
    ],
)
def test_lock_deeply_nested_toml(data: bytes, tmp_path: Path) -> None:
    """A lock nested 1000 deep (arrays or inline tables) is read or refused with an InputError."""
    survives(_lock(tmp_path, data))


def test_lock_integer_of_4301_digits(tmp_path: Path) -> None:
    """A lock integer past the int digit limit is read or refused with an InputError."""
    survives(_lock(tmp_path, b"a = " + BIG_INT))


def test_lock_version_too_long_to_print(tmp_path: Path) -> None:
    """A lock whose ``lock-version`` has 4335 digits is refused with an InputError, or read."""
    survives(_lock(tmp_path, b"lock-version = " + HEX_INT))


def test_lock_schema_error_about_huge_integer(tmp_path: Path) -> None:
    """A lock with a 4335-digit integer where the schema wants a string is refused with an InputError, or read."""
    survives(_lock(tmp_path, b"lock-version = 1\ngenerated-by = " + HEX_INT))


def test_lock_schema_error_about_deep_table(tmp_path: Path) -> None:
    """A lock with a table nested 1000 deep by dotted keys, where the schema wants a string, is refused with an
    InputError, or read."""
    survives(_lock(tmp_path, b"lock-version = 1\ngenerated-by" + b".a" * 1000 + b" = 1\n"))


def test_lock_long_dotted_key_is_fast(tmp_path: Path) -> None:
    """A lock with a 64 kB dotted key is read or refused with an InputError within the budget."""
    survives(_lock(tmp_path, b"[tokenizer]\n" + b"a." * 32000 + b"b = 1\n"))


# --- golden JSONL ---------------------------------------------------------------------------------------------------


def scored(tmp_path: Path, data: bytes) -> None:
    """Correct: read_golden refuses the file, or every item it returns can be scored (no regex error later)."""
    path = write(tmp_path / "golden.jsonl", data)
    with time_budget(BUDGET):
        try:
            items, _ = read_golden(path)
        except InputError:
            return
        for item in items:
            if item.kind == "generation":
                score_generation(item, "The answer is 42.")


def test_golden_deeply_nested_line(tmp_path: Path) -> None:
    """A golden line nested 1000 deep is read or refused with an InputError."""
    scored(tmp_path, DEEP_ARRAY)


def test_golden_integer_of_4301_digits(tmp_path: Path) -> None:
    """A golden line holding an integer past the int digit limit is read or refused with an InputError."""
    scored(tmp_path, BIG_INT)


@pytest.mark.parametrize(
    "expected",
    [
        pytest.param(
            "a{4294967296}",
            id="huge-repeat",
        ),
        pytest.param(
            "(" * 500 + ")" * 500,
            id="nested-groups",
        ),
    ],
)
def test_golden_regex_that_does_not_compile(expected: str, tmp_path: Path) -> None:
    """An ``expected`` regex that does not compile (a repeat past ``re``'s limit, 500 nested groups) is refused
    when the golden file is read (InputError), or scored without error."""
    scored(tmp_path, json.dumps({"prompt": "p", "expected": expected, "scorer": "regex"}).encode())


def test_golden_regexes_to_ignore_are_checked(tmp_path: Path) -> None:
    """A ``regexes_to_ignore`` entry that does not compile is refused when the golden file is read (InputError),
    never an error at scoring time."""
    scored(tmp_path, b'{"prompt":"p","expected":"4","regexes_to_ignore":["("]}')


def test_golden_line_separator_inside_a_string(tmp_path: Path) -> None:
    """JSONL lines end at \\n only: a raw U+2028 or U+0085 inside a JSON string is part of the string (JSON allows
    it), not a line break."""
    path = write(tmp_path / "golden.jsonl", '{"prompt":"a\u2028b","expected":"c\x85d"}\n'.encode())
    items, _ = read_golden(path)
    assert items[0].prompt == "a\u2028b"


# --- tokenizer ------------------------------------------------------------------------------------------------------


def test_chat_template_not_utf8(tmp_path: Path) -> None:
    """A ``chat_template.jinja`` that is not UTF-8 is read or refused with an InputError."""
    write(tmp_path / "tokenizer_config.json", b"{}")
    write(tmp_path / "chat_template.jinja", b"\xff")
    survives(lambda: read_tokenizer_facts(tmp_path))


def test_tokenizer_that_loads_but_cannot_encode(tmp_path: Path) -> None:
    """A tokenizer that loads but cannot encode (WordLevel without its unknown token) is read or refused with an
    InputError."""
    vocab = {"<unk>": 0, "hi": 1}
    model = {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>n"}  # unk_token not in vocab
    write(tmp_path / "tokenizer.json", json.dumps({"version": "1.0", "model": model}).encode())
    survives(lambda: read_tokenizer_facts(tmp_path))


def test_chat_template_with_lone_surrogate(tmp_path: Path) -> None:
    """A chat template holding a lone surrogate is read or refused with an InputError."""
    write(tmp_path / "tokenizer_config.json", b'{"chat_template":"\\ud800"}')
    survives(lambda: read_tokenizer_facts(tmp_path))


def test_special_token_with_lone_surrogate(tmp_path: Path) -> None:
    """A special token holding a lone surrogate is read or refused with an InputError."""
    model = {"type": "WordLevel", "vocab": {"<unk>": 0, "hi": 1}, "unk_token": "<unk>"}
    write(tmp_path / "tokenizer.json", json.dumps({"version": "1.0", "model": model}).encode())
    write(tmp_path / "tokenizer_config.json", b'{"eos_token":"\\ud800"}')
    survives(lambda: read_tokenizer_facts(tmp_path))


def test_lock_text_with_a_lone_surrogate_is_refused_cleanly(tmp_path: Path) -> None:
    """A lone surrogate escape in an input JSON file reaches the lock text; writing it is an input error."""
    from lora_lock.errors import LockfileError
    from lora_lock.lock.io import write_atomic

    target = tmp_path / "lora.lock"
    with pytest.raises(LockfileError, match="not valid Unicode"):
        write_atomic(target, 'name = "\ud800"\n')
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
