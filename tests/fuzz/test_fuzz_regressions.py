"""Every crash the fuzzers found (fuzz/README.md), pinned with its minimal input, asserting the CORRECT behaviour.

The contract: for any input bytes a reader returns a result or raises lora-lock's ``InputError``, in bounded time.

A crash that is still open is ``@xfail(raises=<what it raises today>, ...)``, strict: once the reader is fixed the
test passes, the strict xfail turns that into a failure, and the marker must go. A crash that a fix has closed keeps
its test, marked ``@fixed(<what it raised>, ...)`` (documentation only: the test runs as a plain test), or for a
parametrized case a ``# found: <exception>: ...`` comment. Most were closed by 0fbc57c ("Hardening from fuzzing").
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fuzz.harnesses import HarnessTimeout, time_budget
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

Test = TypeVar("Test", bound=Callable[..., None])


def xfail(raises: type[BaseException], reason: str) -> pytest.MarkDecorator:
    """An open crash: the test fails today with ``raises``."""
    return pytest.mark.xfail(strict=True, raises=raises, reason=reason)


def fixed(raises: type[BaseException], reason: str) -> Callable[[Test], Test]:
    """A closed crash: it raised ``raises`` (``reason`` says where) until fixed; now a plain regression test."""

    def keep(test: Test) -> Test:
        return test

    return keep


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


@fixed(RecursionError, "parse_header: json.loads RecursionError is not wrapped (safetensors_header.py:119)")
def test_header_deeply_nested_json() -> None:
    survives(_parse(DEEP_ARRAY))


@fixed(RecursionError, "read_header: the same json.loads call (safetensors_header.py:119)")
def test_header_file_deeply_nested_json(tmp_path: Path) -> None:
    survives(_file(tmp_path, DEEP_ARRAY))


@fixed(ValueError, "parse_header: int max-str-digits ValueError from json.loads is not wrapped")
def test_header_integer_of_4301_digits() -> None:
    survives(_parse(BIG_INT))


@fixed(ValueError, "read_header: the same json.loads call, with the integer as a tensor dimension")
def test_header_file_integer_of_4301_digits(tmp_path: Path) -> None:
    survives(_file(tmp_path, b'{"t":{"dtype":"U8","shape":[' + BIG_INT + b'],"data_offsets":[0,0]}}'))


@fixed(ValueError, "_tensor puts the expected byte count (4401 digits) in its message: str(int) raises ValueError")
def test_header_shape_product_too_long_to_print() -> None:
    dim = b"1" + b"0" * 2200  # each dimension parses; their product, 10**4400, cannot be printed
    survives(_parse(b'{"t":{"dtype":"U8","shape":[' + dim + b"," + dim + b'],"data_offsets":[0,0]}}'))


@fixed(HarnessTimeout, "_tensor: math.prod over unbounded dimensions is quadratic (400 x 4000 digits, 1.6 MB: > 3 s)")
def test_header_shape_product_is_bounded() -> None:
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
@fixed(RecursionError, "checkpoint.read_json catches JSONDecodeError only (checkpoint.py:47)")
def test_json_file_deeply_nested(kind: str, tmp_path: Path) -> None:
    survives(_json_file(kind, tmp_path, DEEP_ARRAY))


@pytest.mark.parametrize("kind", JSON_FILES)
@fixed(ValueError, "checkpoint.read_json: int max-str-digits ValueError is not wrapped (checkpoint.py:47)")
def test_json_file_integer_of_4301_digits(kind: str, tmp_path: Path) -> None:
    survives(_json_file(kind, tmp_path, b'{"a":' + BIG_INT + b"}"))


# --- adapter_config.json --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"Infinity", id="Infinity"),  # found: OverflowError: _Reader.pattern: int(inf) (adapter.py:148)
        pytest.param(b"1e400", id="1e400"),  # found: OverflowError: _Reader.pattern: 1e400 parses as inf; int(inf)
        pytest.param(b"NaN", id="NaN"),  # found: ValueError: _Reader.pattern: int(nan) (adapter.py:148)
        # found: OverflowError: _Reader.pattern: math.isfinite(10**309) overflows
        pytest.param(b"1" + b"0" * 309, id="int-10**309"),
    ],
)
def test_adapter_rank_pattern_not_finite(value: bytes, tmp_path: Path) -> None:
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
@fixed(HarnessTimeout, "peft_rules: user regexes run unbounded (re.fullmatch / re.match); exponential backtracking")
def test_adapter_regex_catastrophic_backtracking(doc: dict[str, Any], tmp_path: Path) -> None:
    matched(tmp_path, doc)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(
            {"peft_type": "LORA", "target_modules": ["q_proj"], "layers_to_transform": [0], "layers_pattern": ["("]},
            # found: re.error: is_targeted compiled the layers_pattern regex unguarded (peft_rules.py:127)
            id="layers_pattern-unbalanced",
        ),
        pytest.param(
            {"peft_type": "LORA", "target_modules": "a{4294967296}"},
            # found: OverflowError: _names_match catches re.error only; re raises OverflowError for huge repeats
            id="target_modules-huge-repeat",
        ),
        pytest.param(
            {"peft_type": "LORA", "rank_pattern": {"a{4294967296}": 2}},
            # found: OverflowError: rank_for catches re.error only; re raises OverflowError for huge repeats
            id="rank_pattern-huge-repeat",
        ),
        pytest.param(
            {"peft_type": "LORA", "target_modules": "(" * 500 + ")" * 500},
            # found: RecursionError: _names_match catches re.error only; re's parser recurses per group
            id="target_modules-nested-groups",
        ),
    ],
)
def test_adapter_regex_that_does_not_compile(doc: dict[str, Any], tmp_path: Path) -> None:
    matched(tmp_path, doc)


@fixed(ValueError, "is_targeted: int() of a 4301-digit layer index in a (checkpoint-supplied) module name")
def test_module_name_with_huge_layer_index(tmp_path: Path) -> None:
    doc = {"peft_type": "LORA", "target_modules": ["q_proj"], "layers_to_transform": [0]}
    matched(tmp_path, doc, key="model.layers." + "7" * 4301 + ".q_proj")


# --- model.safetensors.index.json -----------------------------------------------------------------------------------


@fixed(OSError, "read_checkpoint: Path.is_file() raises ENAMETOOLONG for a 300-byte shard name (checkpoint.py:140)")
def test_index_shard_name_too_long(tmp_path: Path) -> None:
    write(tmp_path / "model.safetensors.index.json", json.dumps({"weight_map": {"a": "x" * 300}}).encode())
    survives(lambda: read_checkpoint(tmp_path))


def test_index_shard_path_too_long(tmp_path: Path) -> None:
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
@fixed(RecursionError, "lockfile.read: tomllib recurses per nesting level; RecursionError is not wrapped")
def test_lock_deeply_nested_toml(data: bytes, tmp_path: Path) -> None:
    survives(_lock(tmp_path, data))


@fixed(ValueError, "lockfile.read: tomllib's int() of a 4301-digit decimal raises ValueError, not TOMLDecodeError")
def test_lock_integer_of_4301_digits(tmp_path: Path) -> None:
    survives(_lock(tmp_path, b"a = " + BIG_INT))


@fixed(ValueError, "validate: f-string of a 4335-digit lock-version in the 'newer lora-lock' message (lockfile.py:79)")
def test_lock_version_too_long_to_print(tmp_path: Path) -> None:
    survives(_lock(tmp_path, b"lock-version = " + HEX_INT))


@fixed(ValueError, "validate: jsonschema's message repr()s a 4335-digit integer (jsonschema/_keywords.py type)")
def test_lock_schema_error_about_huge_integer(tmp_path: Path) -> None:
    survives(_lock(tmp_path, b"lock-version = 1\ngenerated-by = " + HEX_INT))


@fixed(RecursionError, "validate: dotted keys nest 1000 tables without recursion in tomllib; jsonschema repr()s them")
def test_lock_schema_error_about_deep_table(tmp_path: Path) -> None:
    survives(_lock(tmp_path, b"lock-version = 1\ngenerated-by" + b".a" * 1000 + b" = 1\n"))


def test_lock_long_dotted_key_is_fast(tmp_path: Path) -> None:
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


@fixed(RecursionError, "read_golden: json.loads RecursionError is not wrapped (golden.py:85)")
def test_golden_deeply_nested_line(tmp_path: Path) -> None:
    scored(tmp_path, DEEP_ARRAY)


@fixed(ValueError, "read_golden: int max-str-digits ValueError from json.loads is not wrapped (golden.py:85)")
def test_golden_integer_of_4301_digits(tmp_path: Path) -> None:
    scored(tmp_path, BIG_INT)


@pytest.mark.parametrize(
    "expected",
    [
        pytest.param(
            "a{4294967296}",
            # found: OverflowError: read_golden checks the regex with except re.error only
            id="huge-repeat",
        ),
        pytest.param(
            "(" * 500 + ")" * 500,
            # found: RecursionError: read_golden: re.compile recurses per group; not wrapped
            id="nested-groups",
        ),
    ],
)
def test_golden_regex_that_does_not_compile(expected: str, tmp_path: Path) -> None:
    scored(tmp_path, json.dumps({"prompt": "p", "expected": expected, "scorer": "regex"}).encode())


@fixed(Exception, "read_golden never compiles regexes_to_ignore; normalise() then raises re.error at scoring time")
def test_golden_regexes_to_ignore_are_checked(tmp_path: Path) -> None:
    scored(tmp_path, b'{"prompt":"p","expected":"4","regexes_to_ignore":["("]}')


@fixed(InputError, "read_golden splits with str.splitlines(): U+2028/U+0085 inside a JSON string break a valid line")
def test_golden_line_separator_inside_a_string(tmp_path: Path) -> None:
    """Not a crash: a valid JSONL file refused. JSON allows raw U+2028 in strings; JSONL lines end at \\n only."""
    path = write(tmp_path / "golden.jsonl", '{"prompt":"a\u2028b","expected":"c\x85d"}\n'.encode())
    items, _ = read_golden(path)
    assert items[0].prompt == "a\u2028b"


# --- tokenizer ------------------------------------------------------------------------------------------------------


@fixed(UnicodeDecodeError, "read_tokenizer_facts: chat_template.jinja read_text() unguarded (tokenizer.py:89)")
def test_chat_template_not_utf8(tmp_path: Path) -> None:
    write(tmp_path / "tokenizer_config.json", b"{}")
    write(tmp_path / "chat_template.jinja", b"\xff")
    survives(lambda: read_tokenizer_facts(tmp_path))


@fixed(Exception, "read_tokenizer_facts: tok.encode(CANARY) is outside the try; WordLevel without its unk token raises")
def test_tokenizer_that_loads_but_cannot_encode(tmp_path: Path) -> None:
    vocab = {"<unk>": 0, "hi": 1}
    model = {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>n"}  # unk_token not in vocab
    write(tmp_path / "tokenizer.json", json.dumps({"version": "1.0", "model": model}).encode())
    survives(lambda: read_tokenizer_facts(tmp_path))


@fixed(UnicodeEncodeError, "read_tokenizer_facts: template.encode('utf-8') of a lone surrogate (tokenizer.py:92)")
def test_chat_template_with_lone_surrogate(tmp_path: Path) -> None:
    write(tmp_path / "tokenizer_config.json", b'{"chat_template":"\\ud800"}')
    survives(lambda: read_tokenizer_facts(tmp_path))


@fixed(UnicodeEncodeError, "read_tokenizer_facts: tok.token_to_id() of a lone surrogate (tokenizer.py:113)")
def test_special_token_with_lone_surrogate(tmp_path: Path) -> None:
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
