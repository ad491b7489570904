"""Hypothesis strategies: plausible-but-wrong inputs for every harness, as the bytes the harness takes.

Structure first (a header whose offsets almost tile the data section, an adapter config whose every PEFT field has
a wrong type, a valid lock with one value replaced), then the JSON text is rendered by a tiny serializer that can
also write what ``json.dumps`` will not: duplicate keys, 5000-digit integers, ``NaN``/``Infinity``, deep nesting,
and then encoded (UTF-8, UTF-16/32, a BOM, a stray invalid byte, truncation).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from fuzz.harnesses import TOKENIZER_SEPARATOR, sized
from fuzz.seeds import GOLDEN_LINES, TOKENIZER_JSON, lock_text, seeds, valid_lock
from lora_lock.inspect.model_config import _ALIASES, _QUANT_KEYS
from lora_lock.inspect.safetensors_header import DTYPE_BITS, MAX_HEADER_BYTES

# --- a JSON writer that can lie --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text inserted verbatim (a 5000-digit number, ``1e400``, a half-open bracket...)."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """A JSON object written pair by pair: keys may repeat (the last one wins in ``json.loads``)."""

    items: tuple[tuple[str, Any], ...]


def to_json(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def deep(depth: int, kind: str) -> Raw:
    """Nesting ``depth`` levels deep: arrays, objects, or an unclosed array."""
    if kind == "array":
        return Raw("[" * depth + "]" * depth)
    if kind == "object":
        return Raw('{"a":' * depth + "1" + "}" * depth)
    return Raw("[" * depth)


deep_json = st.builds(
    deep, st.sampled_from([10, 900, 1100, 5000, 100_000]), st.sampled_from(["array", "object", "open"])
)

#: Numbers json.loads turns into trouble: int-string limit (4300 digits), overflow to inf, negative zero...
big_numbers = st.one_of(
    st.builds(
        lambda n, sign: Raw(sign + "9" * n),
        st.sampled_from([19, 20, 309, 4300, 4301, 6000]),
        st.sampled_from(["", "-"]),
    ),
    st.sampled_from([Raw("1e400"), Raw("-1e400"), Raw("1E-400"), Raw("-0"), Raw("0.0"), Raw("1.5"), Raw("2e0")]),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=70),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "none", "LORA", "F32", "q_proj", "all-linear", ".*", "\x00", "../x", "\ud800"]),
    big_numbers,
)


def _json_children(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
        st.lists(st.tuples(st.sampled_from(["a", "a", "__metadata__", ""]), children), max_size=3).map(
            lambda items: Pairs(tuple(items))
        ),
    )


_nested_values = st.recursive(json_scalars, _json_children, max_leaves=10)
#: Any JSON value; one in twenty is nested thousands deep (most readers stop at the first such value).
json_values = st.integers(0, 19).flatmap(lambda i: deep_json if i == 0 else _nested_values)


@st.composite
def encoded(draw: st.DrawFn, text: str) -> bytes:
    """Encode JSON/TOML text, mostly as UTF-8, sometimes in a way a reader must refuse or detect."""
    how = draw(st.sampled_from(["utf-8"] * 12 + ["utf-16", "utf-16-le", "utf-32-be", "bom", "bad", "cut", "tail"]))
    if how in ("utf-16", "utf-16-le", "utf-32-be"):
        return text.encode(how, errors="surrogatepass")
    data = text.encode("utf-8", errors="surrogatepass")
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "bad":
        at = draw(st.integers(0, len(data)))
        return (
            data[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xf4\x90\x80\x80"]))
            + data[at:]
        )
    if how == "cut":
        return data[: draw(st.integers(0, len(data)))]
    return data + draw(st.sampled_from([b"x", b" ", b"}", b"\n{}", b"\x00"]))


def json_bytes(doc: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return doc.map(to_json).flatmap(encoded)


@st.composite
def maybe(draw: st.DrawFn, plausible: st.SearchStrategy[Any], wrong_rate: int = 4) -> Any:
    """Usually a plausible value, one time in ``wrong_rate`` any JSON value at all."""
    if draw(st.integers(0, wrong_rate - 1)) == 0:
        return draw(json_values)
    return draw(plausible)


_MISSING = object()


@st.composite
def fields(draw: st.DrawFn, spec: dict[str, st.SearchStrategy[Any]]) -> Pairs:
    """An object with a random subset of ``spec``'s fields (plausible or wrong), in random order, maybe an extra."""
    items: list[tuple[str, Any]] = []
    wrong_rate = max(4, len(spec))  # about one wrong field per object, so later fields get checked too
    for key, strategy in spec.items():
        value = draw(st.one_of(st.just(_MISSING), maybe(strategy, wrong_rate)))
        if value is not _MISSING:
            items.append((key, value))
    if draw(st.booleans()):
        items.append((draw(st.text(max_size=8)), draw(json_values)))
    if items and draw(st.integers(0, 9)) == 0:  # a duplicate key
        items.append((items[0][0], draw(json_values)))
    return Pairs(tuple(draw(st.permutations(items))))


# --- byte-level mutation of seeds -------------------------------------------------------------------------------

_SPLICES = [
    b"\x00",
    b"\xff",
    b"[" * 3000,
    b"{",
    b"}",
    b'"',
    b"\\",
    b"9" * 4400,
    b"0x" + b"f" * 5000,
    b"-1",
    b"1e400",
    b"NaN",
    b"Infinity",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b",",
    b"\n",
    b"\r\n",
    b"\xe2\x80\xa8",
    b"inf",
    b"nan",
    b"1979-05-27T07:32:00Z",
    b"'''",
    b'"""',
    b"[[a]]",
    b"a.b.c = 1",
]


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few random edits: byte flips, deletions, duplications and splices of hostile tokens."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "splice", "dup"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "splice":
            data[at:at] = draw(st.sampled_from(_SPLICES))
        elif op == "dup" and data:
            start = draw(st.integers(0, len(data) - 1))
            data[at:at] = data[start : start + draw(st.integers(1, 64))]
    return bytes(data)


def seed_mutations(harness: str) -> st.SearchStrategy[bytes]:
    return st.sampled_from(sorted(seeds()[harness].values())).flatmap(mutated)


# --- regular expressions (PEFT accepts regexes in target_modules and friends) -----------------------------------

_REGEX_ATOMS = [
    ".",
    "a",
    "q_proj",
    r"\w",
    r"\d",
    r"\.",
    "[a-z_.]",
    ".*",
    "(?P<idx>x)",
    "(?i)",
    "(",
    ")",
    "[",
    "\\",
    "*",
    "{4294967296}",
    "(?:",
    "|",
    "$",
    "^",
]
_QUANTIFIERS = ["*", "+", "?", "{2,}", "*?", "+?", "{99999999999}", "{1,5}"]


def _regex_children(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(_QUANTIFIERS)).map("".join),
        children.map(lambda r: f"({r})"),
        st.tuples(children, children).map("".join),
        st.tuples(children, children).map("|".join),
    )


regexes = st.one_of(
    st.recursive(st.sampled_from(_REGEX_ATOMS), _regex_children, max_leaves=6),
    st.builds(lambda n: "(" * n + "a" + ")" * n, st.sampled_from([10, 200, 1000, 3000])),
)


# --- per-harness structure -------------------------------------------------------------------------------------

dtypes = st.one_of(st.sampled_from(sorted(DTYPE_BITS)), st.sampled_from(["f32", "F8", "", "float32", "Q4_0"]))
dims = st.one_of(
    st.integers(0, 8),
    st.integers(-2, 2**70),
    st.booleans(),
    st.floats(allow_nan=True),
    big_numbers,
    st.sampled_from([Raw("1.0"), Raw("[2]"), Raw('"4"')]),
)


@st.composite
def header_and_data(draw: st.DrawFn) -> tuple[Any, int]:
    """A safetensors header object and a data-section length: tiled exactly, then maybe broken in one way."""
    names = draw(st.lists(st.text(min_size=0, max_size=12), min_size=0, max_size=5))
    entries: list[tuple[str, Any]] = []
    offset = 0
    for name in names:
        dtype = draw(st.sampled_from(sorted(DTYPE_BITS)))
        shape = draw(st.lists(st.integers(0, 6), max_size=3))
        size = (math.prod(shape) * DTYPE_BITS[dtype] + 7) // 8
        entries.append((name, {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}))
        offset += size
    data_len = offset
    how = draw(
        st.sampled_from(
            ["valid", "dtype", "shape", "offsets", "shift", "gap", "entry", "data_len", "drop", "huge", "metadata"]
        )
    )
    if entries and how in ("dtype", "shape", "offsets", "shift", "gap", "entry", "drop", "huge"):
        i = draw(st.integers(0, len(entries) - 1))
        name, entry = entries[i]
        entry = dict(entry)
        if how == "dtype":
            entry["dtype"] = draw(maybe(dtypes, 2))
        elif how == "shape":
            entry["shape"] = draw(st.one_of(st.lists(dims, max_size=4), json_values))
        elif how == "offsets":
            entry["data_offsets"] = draw(st.one_of(st.lists(dims, max_size=3), json_values))
        elif how == "shift":
            delta = draw(st.integers(-3, 3))
            entry["data_offsets"] = [max(0, entry["data_offsets"][0] + delta), entry["data_offsets"][1] + delta]
        elif how == "gap":
            entry["data_offsets"] = [o + draw(st.integers(1, 4)) for o in entry["data_offsets"]]
            data_len += 4
        elif how == "entry":
            entry = draw(json_values)
        elif how == "drop":
            del entry[draw(st.sampled_from(sorted(entry)))]
        elif how == "huge":
            entry["shape"] = draw(
                st.sampled_from(
                    [[2**63, 2**63], [2**64 - 1], [10**300] * 20, [Raw("9" * 4000), Raw("9" * 4000)], [0, 10**4000]]
                )
            )
        entries[i] = (name, entry)
    if how == "data_len":
        data_len = max(0, data_len + draw(st.integers(-3, 3)))
    if how == "metadata" or draw(st.integers(0, 3)) == 0:
        meta = draw(maybe(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3), 2))
        entries.insert(draw(st.integers(0, len(entries))), ("__metadata__", meta))
    if entries and draw(st.integers(0, 7)) == 0:  # a duplicate tensor name
        entries.append(entries[draw(st.integers(0, len(entries) - 1))])
    doc: Any = Pairs(tuple(entries))
    if draw(st.integers(0, 15)) == 0:
        doc = draw(json_values)  # not an object at all
    return doc, data_len


@st.composite
def header_raw(draw: st.DrawFn) -> tuple[bytes, int]:
    doc, data_len = draw(header_and_data())
    return draw(encoded(to_json(doc))), data_len


safetensors_parse = st.one_of(
    header_raw().map(lambda pair: sized(pair[1], pair[0])),
    st.builds(sized, st.integers(0, 64), json_bytes(json_values)),
    st.builds(sized, st.integers(0, 64), st.binary(max_size=64)),
    seed_mutations("safetensors_parse"),
)


@st.composite
def safetensors_whole(draw: st.DrawFn) -> bytes:
    raw, data_len = draw(header_raw())
    claimed = draw(
        st.sampled_from(["exact"] * 6 + ["u64max", "limit", "limit+1", "one_more", "one_less", "zero", "any", "short"])
    )
    length = {
        "exact": len(raw),
        "u64max": 2**64 - 1,
        "limit": MAX_HEADER_BYTES,
        "limit+1": MAX_HEADER_BYTES + 1,
        "one_more": len(raw) + 1,
        "one_less": max(0, len(raw) - 1),
        "zero": 0,
    }.get(claimed)
    if length is None:
        length = draw(st.integers(0, 2**64 - 1))
    prefix = struct.pack("<Q", length)
    if claimed == "short":
        prefix = prefix[: draw(st.integers(0, 7))]
        return prefix
    body = bytes(max(0, data_len + draw(st.sampled_from([0, 0, 0, -1, 1, 7]))))
    return prefix + raw + body


safetensors_file = st.one_of(
    safetensors_whole(),
    st.binary(max_size=64),
    seed_mutations("safetensors_file"),
)

_int_fact = st.one_of(st.integers(0, 4096), st.integers(-5, -1))

_quant = st.one_of(
    st.none(),
    json_values,
    fields(
        {
            "quant_method": st.sampled_from(
                ["bitsandbytes", "gptq", "awq", "GPTQ", "hqq", "fp8", "compressed-tensors"]
            ),
            **{key: json_values for keys in _QUANT_KEYS.values() for key in keys},
            "load_in_4bit": st.booleans(),
            "load_in_8bit": st.booleans(),
        }
    ),
)


def _model_fields(nested: st.SearchStrategy[Any]) -> dict[str, st.SearchStrategy[Any]]:
    spec: dict[str, st.SearchStrategy[Any]] = {key: _int_fact for keys in _ALIASES.values() for key in keys}
    spec.update(
        {
            "architectures": st.lists(st.text(max_size=20), max_size=2),
            "model_type": st.sampled_from(["llama", "gpt2", "mistral"]),
            "multi_query": st.booleans(),
            "tie_word_embeddings": st.booleans(),
            "dtype": st.sampled_from(["float16", "bfloat16", "auto"]),
            "torch_dtype": st.sampled_from(["float32", "float16"]),
            "text_config": nested,
            "quantization_config": _quant,
        }
    )
    return spec


_text_config = fields({k: v for k, v in _model_fields(json_values).items() if k != "text_config"})

model_config = st.one_of(
    json_bytes(fields(_model_fields(_text_config))),
    json_bytes(json_values),
    st.binary(max_size=48),
    seed_mutations("model_config"),
)

_names = st.one_of(st.lists(st.sampled_from(["q_proj", "v_proj", "lm_head", "mlp", ""]) | st.text(max_size=6)), regexes)

_adapter_fields: dict[str, st.SearchStrategy[Any]] = {
    "peft_type": st.sampled_from(["LORA", "lora", "ADALORA", "IA3", "LOHA"]),
    "task_type": st.sampled_from(["CAUSAL_LM", "SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS"]),
    "base_model_name_or_path": st.text(max_size=12),
    "revision": st.sampled_from(["main", "0" * 40]),
    "r": st.integers(-2, 2**40),
    "init_r": st.integers(-2, 64),
    "lora_alpha": st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True)),
    "lora_dropout": st.floats(0, 1),
    "target_modules": _names,
    "exclude_modules": _names,
    "modules_to_save": st.lists(st.sampled_from(["score", "classifier", "lm_head", "(", ".*"])),
    "fan_in_fan_out": st.booleans(),
    "bias": st.sampled_from(["none", "all", "lora_only"]),
    "use_rslora": st.booleans(),
    "use_dora": st.booleans(),
    "rank_pattern": st.dictionaries(regexes, st.one_of(st.integers(), st.floats(), big_numbers), max_size=3),
    "alpha_pattern": st.dictionaries(regexes, st.one_of(st.integers(), st.floats(), big_numbers), max_size=3),
    "layers_to_transform": st.one_of(st.integers(-1, 40), st.lists(st.integers(-1, 40), max_size=3)),
    "layers_pattern": st.one_of(st.lists(st.sampled_from(["layers", "h", "blocks"]) | regexes, max_size=2)),
    "lora_bias": st.booleans(),
    "peft_version": st.sampled_from(["0.13.2", "0.17.0"]),
    "enable_lora": st.lists(st.booleans(), max_size=3),
    "merge_weights": st.booleans(),
}


@st.composite
def _adapter_doc(draw: st.DrawFn) -> Pairs:
    doc = draw(fields(_adapter_fields))
    if draw(st.integers(0, 2)) > 0 and not any(k == "peft_type" for k, _ in doc.items):
        doc = Pairs((("peft_type", "LORA"), *doc.items))  # mostly get past the first check
    return doc


adapter_config = st.one_of(
    json_bytes(_adapter_doc()),
    json_bytes(json_values),
    seed_mutations("adapter_config"),
)

_shard_names = st.one_of(
    st.sampled_from(
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "../model.safetensors",
            "/etc/passwd",
            "sub/model.safetensors",
            "C:\\model.safetensors",
            ".",
            "",
            "./model-00001-of-00002.safetensors",
            "x" * 300,
            "a/" * 2100 + "x",  # every component short, the whole path past PATH_MAX
            "a\x00b",
            "\ud800.safetensors",
        ]
    ),
    st.text(max_size=10),
)

checkpoint_index = st.one_of(
    json_bytes(
        fields(
            {
                "metadata": json_values,
                "weight_map": st.one_of(
                    st.dictionaries(
                        st.sampled_from(["a", "b", "c", ""]) | st.text(max_size=4), _shard_names, max_size=4
                    ),
                    st.lists(st.tuples(st.sampled_from(["a", "b"]), _shard_names), max_size=4).map(
                        lambda items: Pairs(tuple(items))
                    ),
                ),
            }
        )
    ),
    json_bytes(json_values),
    seed_mutations("checkpoint_index"),
)

# TOML values tomli_w can write (its ints must stay printable: below the 4300-digit limit).
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.datetimes(),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=6), c, max_size=3),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out.extend(_paths(value, (*prefix, index)))
    return out


_LOCK_PATHS = _paths(valid_lock())


@st.composite
def mutated_lock(draw: st.DrawFn) -> bytes:
    """The valid lock with one to three values replaced, removed or added, written back as TOML."""
    doc = valid_lock()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_LOCK_PATHS))
        parent: Any = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
            if op == "replace":
                parent[path[-1]] = draw(toml_values)
            elif op == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(toml_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this path
    if draw(st.integers(0, 5)) == 0:
        doc["lock-version"] = draw(st.sampled_from([0, 2, -1, 2**63, 10**4000 // 10**3800, True, 1.0, "1"]))
    try:
        text = lock_text(doc)
    except (TypeError, ValueError):
        text = lock_text()  # a value tomli_w cannot write; fall back to the valid lock
    return draw(encoded(text))


_TOML_SNIPPETS = [
    "lock-version = 0x" + "f" * 5000,
    "lock-version = 0b1" + "0" * 20000,
    "lock-version = 1" + "0" * 5000,
    "a = " + "[" * 3000,
    "a = " + "{b=" * 2000,
    "a." * 3000 + "b = 1",
    "[" + "a." * 3000 + "b]",
    "lock-version = inf",
    "lock-version = nan",
    "x = 1979-05-27T07:32:00Z",
    "x = 9999-12-31T23:59:60Z",
    'x = "\\uD800"',
    'x = "\\U00110000"',
    "x = '''\n",
    "[[adapter]]",
    "[base]\n[base]",
    "lock-version = 1\nlock-version = 1",
]


@st.composite
def lock_text_edits(draw: st.DrawFn) -> bytes:
    """The valid lock's text with hostile TOML lines inserted at line boundaries."""
    lines = lock_text().splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(_TOML_SNIPPETS)) + "\n")
    return "".join(lines).encode()


lock = st.one_of(
    mutated_lock(),
    lock_text_edits(),
    seed_mutations("lock"),
    st.sampled_from(_TOML_SNIPPETS).map(str.encode),
    st.binary(max_size=48),
)

_golden_fields: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.text(max_size=8),
    "expected": st.one_of(st.text(max_size=8), regexes),
    "scorer": st.sampled_from(["exact", "contains", "regex", "fuzzy"]),
    "max_new_tokens": st.integers(-1, 5000),
    "until": st.lists(st.text(max_size=3), max_size=2),
    "ignore_case": st.booleans(),
    "ignore_punctuation": st.booleans(),
    "regexes_to_ignore": st.lists(regexes, max_size=2),
    "choices": st.lists(st.text(max_size=4), max_size=3),
    "answer": st.integers(-1, 3),
}


@st.composite
def golden_file(draw: st.DrawFn) -> bytes:
    lines = [to_json(draw(fields(_golden_fields))) for _ in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        lines.insert(0, json.dumps(draw(st.sampled_from(GOLDEN_LINES)), ensure_ascii=draw(st.booleans())))
    if draw(st.integers(0, 5)) == 0:
        lines.append(to_json(draw(json_values)))
    sep = draw(st.sampled_from(["\n", "\n", "\r\n", "\n\n", "\u2028", "\x85", "\x0b"]))
    return draw(encoded(sep.join(lines)))


golden = st.one_of(golden_file(), seed_mutations("golden"), st.binary(max_size=48))


@st.composite
def tokenizer_dir(draw: st.DrawFn) -> bytes:
    spec: dict[str, st.SearchStrategy[Any]] = {
        key: st.one_of(
            st.sampled_from(["<s>", "</s>", "<unk>", "hi", ""]), st.fixed_dictionaries({"content": st.text()})
        )
        for key in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
    }
    spec["chat_template"] = st.one_of(st.text(max_size=10), st.lists(st.dictionaries(st.text(max_size=4), st.text())))
    config = draw(json_bytes(fields(spec)))
    parts = [config]
    if draw(st.booleans()):
        parts.append(draw(st.one_of(st.text(max_size=10).flatmap(lambda t: encoded(t)), st.binary(max_size=8))))
        if draw(st.booleans()):
            tok_json = draw(
                st.one_of(
                    mutated(json.dumps(TOKENIZER_JSON).encode()),
                    json_bytes(json_values),
                    st.just(json.dumps(TOKENIZER_JSON).encode()),
                )
            )
            parts.append(tok_json)
    return TOKENIZER_SEPARATOR.join(parts)


tokenizer = st.one_of(tokenizer_dir(), seed_mutations("tokenizer"), st.binary(max_size=32))

STRATEGIES: dict[str, st.SearchStrategy[bytes]] = {
    "safetensors_parse": safetensors_parse,
    "safetensors_file": safetensors_file,
    "model_config": model_config,
    "adapter_config": adapter_config,
    "checkpoint_index": checkpoint_index,
    "lock": lock,
    "golden": golden,
    "tokenizer": tokenizer,
}


def examples(harness: str, count: int, seed: int = 0) -> list[bytes]:
    """``count`` deterministic examples of a harness's strategy (for inspecting what the strategies generate)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as fixed_seed

    out: list[bytes] = []

    @fixed_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(STRATEGIES[harness])
    def collect(data: bytes) -> None:
        out.append(data)

    collect()
    return out
