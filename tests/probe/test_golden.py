"""The golden-set gate: parsing, the lm-evaluation-harness style scorers, the correctness bitset, and end to end on
the tiny Llama with flips whose number is known in advance.

The end-to-end golden set is built from the adapted model's own greedy outputs (so those items are right at lock
time), plus items that are wrong at lock time and multiple-choice items. Zeroing lora_B turns the adapted model
into the base model, whose outputs the fixture also records: which items flip is then known before verify runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import lora_lock
from lora_lock._cli import main
from lora_lock.errors import InputError
from lora_lock.lock.io import read as read_lock
from lora_lock.probe.golden import (
    DEFAULT_MAX_NFR,
    GoldenItem,
    cut_at_stop,
    normalise,
    pack_bits,
    read_golden,
    score_generation,
    unpack_bits,
)
from tests.helpers import ROOT, run_cli, verify_json

SCHEMA_PATH = Path(lora_lock.__file__).parent / "schemas" / "golden.schema.json"
ADAPTER_FILE = "adapter_model.safetensors"


# --- helpers -----------------------------------------------------------------------------------------------------


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def gen(expected: str, output: str, **options: Any) -> bool:
    item = GoldenItem(line=1, prompt="p", kind="generation", expected=expected, **options)
    return score_generation(item, output)


def only(report: dict[str, Any], code: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [f for f in report["findings"] if f["code"] == code]
    assert len(found) == 1, (code, [(f["code"], f["message"]) for f in report["findings"]])
    return found[0]


def codes(report: dict[str, Any], category: str | None = None) -> set[str]:
    return {f["code"] for f in report["findings"] if category is None or f["category"] == category}


def edit_tensors(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(path), framework="np") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)


def scale_lora_b(factor: float) -> Callable[[dict[str, Any]], None]:
    def change(tensors: dict[str, Any]) -> None:
        for key in [k for k in tensors if ".lora_B." in k]:
            tensors[key] = (tensors[key].astype("float64") * factor).astype(tensors[key].dtype)

    return change


def hex_bits(bits: list[bool]) -> str:
    """Independent of pack_bits: item 0 is the most significant bit, padded to whole nibbles."""
    n = len(bits)
    width = -(-n // 4)
    value = int("".join("1" if b else "0" for b in bits) + "0" * (4 * width - n), 2)
    return f"{value:0{width}x}"


# --- parsing and validation --------------------------------------------------------------------------------------


def test_read_golden_parses_both_kinds(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "g.jsonl",
        [
            json.dumps({"prompt": "2+2=", "expected": "4"}),
            "",
            json.dumps(
                {
                    "id": "q2",
                    "prompt": "Capital?",
                    "expected": "paris",
                    "scorer": "contains",
                    "max_new_tokens": 5,
                    "until": "\n",
                    "ignore_case": True,
                    "ignore_punctuation": True,
                    "regexes_to_ignore": ["^The answer is "],
                }
            ),
            json.dumps({"prompt": "Pick:", "choices": [" a", " b", " c"], "answer": 2}),
        ],
    )
    items, digest = read_golden(path)
    assert digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert [i.line for i in items] == [1, 3, 4]  # file line numbers: blank lines count
    first, second, third = items
    assert (first.kind, first.scorer, first.max_new_tokens, first.until) == ("generation", "exact", 32, ())
    assert not first.ignore_case and not first.ignore_punctuation and first.regexes_to_ignore == ()
    assert (second.scorer, second.max_new_tokens, second.until) == ("contains", 5, ("\n",))
    assert second.ignore_case and second.ignore_punctuation
    assert second.regexes_to_ignore == ("^The answer is ",)
    assert (third.kind, third.choices, third.answer) == ("choice", (" a", " b", " c"), 2)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "a", "expected": "b"}', '{"prompt": "a", "expected": }'], ":2: not valid JSON"),
        (['["prompt", "expected"]'], ":1: each line must be a JSON object"),
        (['{"expected": "b"}'], ":1: field `prompt` must be a non-empty string"),
        (['{"prompt": "", "expected": "b"}'], ":1: field `prompt` must be a non-empty string"),
        (['{"prompt": "a"}'], ":1: field `expected` must be a string"),
        (['{"prompt": "a", "expected": 4}'], "found 4"),
        (["", '{"prompt": "a", "expected": "b", "scorer": "fuzzy"}'], ":2: unknown scorer 'fuzzy'"),
        (
            ['{"prompt": "a", "expected": "(unclosed", "scorer": "regex"}'],
            ":1: field `expected` must be a valid regular",
        ),
        (['{"prompt": "a", "expected": "b", "max_new_tokens": 0}'], ":1: field `max_new_tokens` must be an integer"),
        (['{"prompt": "a", "expected": "b", "max_new_tokens": true}'], ":1: field `max_new_tokens`"),
        (['{"prompt": "a", "expected": "b", "max_new_tokens": 5000}'], ":1: field `max_new_tokens`"),
        (['{"prompt": "a", "expected": "b", "ignore_case": "yes"}'], ":1: field `ignore_case` must be true or false"),
        (['{"prompt": "a", "expected": "b", "until": [1]}'], ":1: field `until` must be a list of non-empty strings"),
        # An empty stop string would end every generation after its first token.
        (['{"prompt": "a", "expected": "b", "until": ""}'], ":1: field `until` must be a list of non-empty strings"),
        (['{"prompt": "a", "expected": "b", "until": ["x", ""]}'], ":1: field `until`"),
        (['{"prompt": "a", "expected": "b", "regexes_to_ignore": [""]}'], ":1: field `regexes_to_ignore`"),
        (['{"prompt": "a", "expected": "b", "regexes_to_ignore": 3}'], ":1: field `regexes_to_ignore`"),
        (['{"prompt": "a", "choices": ["x"], "answer": 0}'], ":1: field `choices` must be a list of at least 2"),
        (['{"prompt": "a", "choices": ["x", ""], "answer": 0}'], ":1: field `choices`"),
        (['{"prompt": "a", "choices": "xy", "answer": 0}'], ":1: field `choices`"),
        (
            ['{"prompt": "a", "choices": ["x", "y"], "answer": 2}'],
            ":1: field `answer` must be an index into choices (0..1)",
        ),
        (['{"prompt": "a", "choices": ["x", "y"], "answer": -1}'], ":1: field `answer`"),
        (['{"prompt": "a", "choices": ["x", "y"], "answer": true}'], ":1: field `answer`"),
        (['{"prompt": "a", "choices": ["x", "y"]}'], ":1: field `answer`"),
        ([], "the golden dataset has no items"),
        (["", "   ", "\t"], "the golden dataset has no items"),
    ],
)
def test_read_golden_rejects_bad_input(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write_lines(tmp_path / "golden.jsonl", lines)
    with pytest.raises(InputError) as caught:
        read_golden(path)
    assert str(path) in caught.value.message
    assert message in caught.value.message


def test_read_golden_rejects_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.jsonl: file not found"):
        read_golden(tmp_path / "missing.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"prompt": "caf\xe9", "expected": "x"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_golden(latin)


# --- scorers -----------------------------------------------------------------------------------------------------


def test_exact_scorer_and_normalisation() -> None:
    assert gen("Paris", "Paris")
    assert gen("Paris", "  Paris \n")  # surrounding whitespace never counts
    assert not gen("Paris", "paris")
    assert gen("Paris", "paris", ignore_case=True)
    assert not gen("Paris", "Paris.")
    assert gen("Paris", "Paris.", ignore_punctuation=True)
    assert gen("paris", "PARIS!", ignore_case=True, ignore_punctuation=True)
    assert not gen("Paris", "Paris is the capital")  # exact is exact
    assert gen("42", "The answer is 42", regexes_to_ignore=("The answer is ",))
    assert gen("42", "answer: 4 2", regexes_to_ignore=(r"answer:\s*", r"\s+"))


def test_regexes_to_ignore_apply_to_both_sides_before_case_folding() -> None:
    """lm-evaluation-harness order: regexes removed first, then case, then punctuation; on prediction and
    reference alike."""
    assert gen("The answer: 42", "42", regexes_to_ignore=("The answer: ",))
    item = GoldenItem(1, "p", "generation", expected="x", regexes_to_ignore=("The answer is ",), ignore_case=True)
    assert normalise("The answer is 42", item) == "42"
    assert normalise("the answer is 42", item) == "the answer is 42"  # regexes run before lower-casing
    punct = GoldenItem(1, "p", "generation", ignore_punctuation=True, ignore_case=True)
    assert normalise(" Hello, World! ", punct) == "hello world"


def test_contains_scorer() -> None:
    assert gen("Paris", "The capital of France is Paris, of course.", scorer="contains")
    assert not gen("paris", "The capital of France is Paris.", scorer="contains")
    assert gen("paris", "The capital of France is Paris.", scorer="contains", ignore_case=True)
    assert gen("", "anything", scorer="contains")
    assert not gen("Paris", "Lyon", scorer="contains")


def test_regex_scorer() -> None:
    assert gen(r"\b42\b", "the answer is 42.", scorer="regex")
    assert not gen(r"^42$", "the answer is 42", scorer="regex")
    assert gen(r"^42$", "  42  ", scorer="regex")  # the output is stripped first
    assert gen(r"^\d+$", "7 apples", scorer="regex", regexes_to_ignore=(r"\s*apples",))
    assert not gen(r"\d", "no digits", scorer="regex")


def test_regex_scorer_with_ignore_case_matches_regardless_of_case() -> None:
    assert gen("Paris", "Paris", scorer="regex", ignore_case=True)
    assert gen(r"^Paris\b", "PARIS is big", scorer="regex", ignore_case=True)


def test_until_cuts_at_the_first_stop_string() -> None:
    assert cut_at_stop("Paris\nQuestion: next", ("\n",)) == "Paris"
    assert cut_at_stop("a.b\nc", ("\n", ".")) == "a"  # the earliest stop wins, whatever the order given
    assert cut_at_stop("a.b\nc", (".", "\n")) == "a"
    assert cut_at_stop("no stop here", ("###",)) == "no stop here"
    assert cut_at_stop("keep", ("",)) == "keep"  # an empty stop string is ignored
    assert cut_at_stop("abc", ()) == "abc"
    assert gen("Paris", "Paris\nQuestion: what else?", until=("\n",))
    assert not gen("Paris", "Paris\nQuestion: what else?")
    assert gen("Paris", " Paris. Lyon", until=(".",), ignore_punctuation=True)


# --- the bitset --------------------------------------------------------------------------------------------------


def test_pack_unpack_round_trip() -> None:
    rng = random.Random(0)
    for n in range(1, 101):
        for bits in ([True] * n, [False] * n, [rng.random() < 0.5 for _ in range(n)]):
            packed = pack_bits(bits)
            assert len(packed) == math.ceil(n / 4)
            assert re.fullmatch(r"[0-9a-f]+", packed)
            assert packed == hex_bits(bits)
            assert unpack_bits(packed, n) == bits


def test_pack_bits_order() -> None:
    assert pack_bits([True]) == "8"  # item 0 is the most significant bit of the first nibble
    assert pack_bits([False, False, False, True]) == "1"
    assert pack_bits([True, False, True, False, True]) == "a8"
    assert unpack_bits("a8", 5) == [True, False, True, False, True]


# --- the JSON Schema ---------------------------------------------------------------------------------------------

VALID_LINES = [
    {"prompt": "2+2=", "expected": "4"},
    {"prompt": "Q", "expected": "a", "scorer": "contains", "ignore_case": True, "until": "\n"},
    {"prompt": "Q", "expected": r"\d+", "scorer": "regex", "until": ["\n", "."], "regexes_to_ignore": ["x"]},
    {"prompt": "Q", "expected": "", "max_new_tokens": 4096, "ignore_punctuation": False, "id": 3},
    {"prompt": "Pick", "choices": [" a", " b"], "answer": 1, "id": "mc-1"},
    {"prompt": "Pick:", "choices": ["a", "b"], "answer": 0, "target_delimiter": ""},
]
INVALID_LINES = [
    {"expected": "4"},
    {"prompt": "", "expected": "4"},
    {"prompt": "Q"},
    {"prompt": "Q", "expected": 4},
    {"prompt": "Q", "expected": "a", "scorer": "fuzzy"},
    {"prompt": "Q", "expected": "a", "max_new_tokens": 0},
    {"prompt": "Q", "expected": "a", "max_new_tokens": 4097},
    {"prompt": "Q", "expected": "a", "ignore_case": "yes"},
    {"prompt": "Q", "expected": "a", "until": [1]},
    {"prompt": "Q", "expected": "a", "regexes_to_ignore": [None]},
    {"prompt": "Q", "expected": "a", "regexes_to_ignore": [""]},
    {"prompt": "Q", "expected": "a", "until": ""},
    {"prompt": "Q", "expected": "a", "until": ["\n", ""]},
    {"prompt": "Pick", "choices": [" a"], "answer": 0},
    {"prompt": "Pick", "choices": [" a", ""], "answer": 0},
    {"prompt": "Pick", "choices": [" a", " b"]},
    {"prompt": "Pick", "choices": [" a", " b"], "answer": -1},
    {"prompt": "Pick", "choices": [" a", " b"], "answer": "a"},
    {"prompt": "Pick", "choices": ["a", "b"], "answer": 0, "target_delimiter": 1},
    ["prompt", "expected"],
]


def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_accepts_what_read_golden_accepts(tmp_path: Path) -> None:
    validator = _validator()
    for doc in VALID_LINES:
        assert list(validator.iter_errors(doc)) == [], doc
    items, _ = read_golden(write_lines(tmp_path / "g.jsonl", [json.dumps(d) for d in VALID_LINES]))
    assert len(items) == len(VALID_LINES)


@pytest.mark.parametrize("doc", INVALID_LINES, ids=lambda d: json.dumps(d)[:40])
def test_schema_and_read_golden_both_reject(tmp_path: Path, doc: Any) -> None:
    assert not _validator().is_valid(doc)
    with pytest.raises(InputError):
        read_golden(write_lines(tmp_path / "g.jsonl", [json.dumps(doc)]))


def test_the_repository_schema_is_the_packaged_one() -> None:
    root_copy = ROOT / "schemas" / "golden.schema.json"
    assert root_copy.read_bytes() == SCHEMA_PATH.read_bytes()


# --- multiple choice: acc_norm convention ------------------------------------------------------------------------


class _FixedLM:
    """A stand-in causal LM: one token per character, the same next-token distribution at every position."""

    def __init__(self, torch: Any, logprobs: dict[str, float]) -> None:
        self.torch = torch
        self.vocab = ["P", *logprobs]
        rest = 1.0 - sum(math.exp(v) for v in logprobs.values())
        self.row = torch.tensor([math.log(rest), *logprobs.values()], dtype=torch.float32)
        self.device = "cpu"
        self.dtype_name = "float32"
        self.model = self

    def encode(self, text: str, **_: Any) -> list[int]:
        return [self.vocab.index(c) for c in text]

    def set_adapter(self, name: str) -> None:
        pass

    def use(self, name: str) -> None:  # ProbeSession.use: activate an adapter (a no-op here)
        pass

    def fits(self, what: str) -> Any:  # ProbeSession.fits: out-of-memory as a clear error (nothing to catch here)
        return nullcontext()

    def check_length(self, *args: Any) -> None:  # ProbeSession.check_length: no position table here
        pass

    def check_fits_model(self, seqs: Any, what: str) -> None:  # every id is in the vocabulary by construction
        assert all(0 <= i < len(self.vocab) for seq in seqs for i in seq)

    def __call__(self, input_ids: Any) -> Any:
        logits = self.row.expand(1, input_ids.shape[1], len(self.vocab))

        @dataclass
        class Out:
            logits: Any

        return Out(logits)


def test_multiple_choice_acc_norm_follows_lm_eval() -> None:
    torch = pytest.importorskip("torch")
    from lora_lock.probe.golden import GoldenRunner

    # ll("é") = -1.5 over 1 character (2 bytes); ll("ab") = -2.0 over 2 characters (2 bytes).
    # acc: "é" wins (-1.5 > -2.0). Per character: "ab" wins (-1.0 > -1.5). Per byte: "é" wins (-0.75 > -1.0).
    lm = _FixedLM(torch, {"é": -1.5, "a": -1.0, "b": -1.0})
    runner = GoldenRunner(lm)
    item = GoldenItem(line=1, prompt="P", kind="choice", choices=("é", "ab"), answer=1, target_delimiter="")
    assert runner.run("adapter", item) == (False, True)


def test_multiple_choice_scoring_on_ascii_choices() -> None:
    torch = pytest.importorskip("torch")
    from lora_lock.probe.golden import GoldenRunner

    lm = _FixedLM(torch, {"x": -1.5, "a": -1.0, "b": -1.0})
    runner = GoldenRunner(lm)
    # ll("x") = -1.5, ll("ab") = -2.0: acc picks "x"; per character (= per byte) "ab" (-1.0 > -1.5).
    for answer, want in ((0, (True, False)), (1, (False, True))):
        item = GoldenItem(1, "P", "choice", choices=("x", "ab"), answer=answer, target_delimiter="")
        assert runner.run("adapter", item) == want


def test_acc_norm_divides_by_the_choice_without_the_target_delimiter() -> None:
    """lm-evaluation-harness scores " " + choice and normalises by len(choice): with ll(" ") = -1.0, ll("x") =
    -2.0 and ll("ab") = -3.8, " x" scores -3.0 and " ab" -4.8; per character of the choice "x" gets -3.0 and "ab"
    -2.4 (per character of the continuation it would be -1.5 and -1.6: the other answer)."""
    torch = pytest.importorskip("torch")
    from lora_lock.probe.golden import GoldenRunner

    lm = _FixedLM(torch, {" ": -1.0, "x": -2.0, "a": -1.9, "b": -1.9})
    item = GoldenItem(1, "P", "choice", choices=("x", "ab"), answer=1)
    runner = GoldenRunner(lm)
    assert runner.choice_lls(item) == pytest.approx([-3.0, -4.8], abs=1e-6)
    assert runner.run("adapter", item) == (False, True)
    # A lock made before the convention scores the choice as written (no delimiter): " " is not prepended.
    legacy = GoldenRunner(lm, convention="lora-lock-0.1")
    assert legacy.choice_lls(item) == pytest.approx([-2.0, -3.8], abs=1e-6)


# --- end to end on the tiny Llama --------------------------------------------------------------------------------

CANDIDATE_PROMPTS = (
    "The adapter says:",
    "The fox is",
    "The quick brown",
    "Le renard est",
    "The dog is",
    "A LoRA adapter",
    "The lockfile",
    "Once upon a time",
    "Der Fuchs ist",
    "Question: 2 + 2 =",
)
#: Written as lm-evaluation-harness task choices are: the default target delimiter " " comes before each one.
CHOICES = ("the fox is quick", "the dog is lazy", "Bonjour le monde", "42")
MAX_NEW = 8


@contextmanager
def _session(root: Path) -> Iterator[Any]:
    from lora_lock.probe.effect import ProbeSession

    yield ProbeSession(root / "base", root / "base", [("adapter", root / "adapter")], device="cpu", dtype="float32")


def _greedy(session: Any, prompt: str, n: int, *, adapter: bool) -> str:
    """Greedy decoding with the KV cache, written here rather than borrowed from GoldenRunner."""
    torch = session.torch
    eos = session.tokenizer.eos_token_id
    session.use("adapter")
    tokens: list[int] = []
    with nullcontext() if adapter else session.model.disable_adapter(), torch.inference_mode():
        out = session.model(input_ids=torch.tensor([session.encode(prompt)]), use_cache=True)
        for _ in range(n):
            token = int(out.logits[0, -1].argmax())
            if token == eos:
                break
            tokens.append(token)
            out = session.model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    return str(session.tokenizer.decode(tokens, skip_special_tokens=True))


def _choice_lls(session: Any, prompt: str, choices: tuple[str, ...], *, adapter: bool) -> list[float]:
    torch = session.torch
    context = session.encode(prompt)
    lls = []
    with nullcontext() if adapter else session.model.disable_adapter(), torch.inference_mode():
        for choice in choices:
            whole = session.encode(prompt + " " + choice)
            assert whole[: len(context)] == context
            logits = session.model(input_ids=torch.tensor([whole])).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            lls.append(sum(float(logp[i - 1, whole[i]]) for i in range(len(context), len(whole))))
    return lls


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


@dataclass
class GoldenRepo:
    root: Path
    lines: list[int]  # file line of each item
    then: list[bool]  # intended correctness at lock time
    base_now: list[bool]  # correctness once the adapter does nothing (lora_B = 0)
    acc_norm: float

    @property
    def n(self) -> int:
        return len(self.then)


def _build_items(session: Any) -> tuple[list[dict[str, Any] | None], list[bool], list[bool], float]:
    """Golden items (None = a blank line), their intended correctness now and with the adapter zeroed."""
    adapted = {p: _greedy(session, p, MAX_NEW, adapter=True) for p in CANDIDATE_PROMPTS}
    base = {p: _greedy(session, p, MAX_NEW, adapter=False) for p in CANDIDATE_PROMPTS}
    differ = [p for p in CANDIDATE_PROMPTS if adapted[p].strip() and adapted[p].strip() != base[p].strip()]
    assert len(differ) >= 7, (adapted, base)
    foldable = [p for p in differ if adapted[p].upper().lower() == adapted[p].lower()]
    p_case = foldable[0]
    rest = [p for p in differ if p != p_case]
    p_exact, p_contains, p_regex, p_until, p_base = rest[:5]

    middle = adapted[p_contains].strip()[1:-1] or adapted[p_contains].strip()
    assert middle not in base[p_contains]
    word = re.search(r"\S+", adapted[p_until].strip()[1:])
    assert word is not None
    stop = word.group(0)[:1]
    assert stop in adapted[p_until]
    until_expected = adapted[p_until].split(stop)[0]
    docs: list[dict[str, Any] | None] = [
        {"prompt": p_exact, "expected": adapted[p_exact], "max_new_tokens": MAX_NEW},
        {
            "prompt": p_case,
            "expected": adapted[p_case].upper() + "!",
            "max_new_tokens": MAX_NEW,
            "ignore_case": True,
            "ignore_punctuation": True,
        },
        None,
        {"prompt": p_contains, "expected": middle, "scorer": "contains", "max_new_tokens": MAX_NEW},
        {
            "prompt": p_regex,
            "expected": "^" + re.escape(adapted[p_regex].strip()[:3]),
            "scorer": "regex",
            "max_new_tokens": MAX_NEW,
        },
        {"prompt": p_until, "expected": until_expected, "until": [stop], "max_new_tokens": MAX_NEW},
        {"prompt": p_exact, "expected": "certainly not what the model says", "max_new_tokens": 4},
        {"prompt": p_base, "expected": base[p_base], "max_new_tokens": MAX_NEW},  # wrong now, right without B
        {"prompt": p_regex, "expected": "", "scorer": "contains", "max_new_tokens": 2},  # always right
    ]
    then = [True, True, True, True, True, False, False, True]
    gen_docs = [d for d in docs if d is not None]
    base_now = []
    for doc, want in zip(gen_docs, then, strict=True):
        item = GoldenItem(
            line=0,
            prompt=doc["prompt"],
            kind="generation",
            expected=doc["expected"],
            scorer=doc.get("scorer", "exact"),
            until=tuple(doc.get("until", ())),
            ignore_case=doc.get("ignore_case", False),
            ignore_punctuation=doc.get("ignore_punctuation", False),
        )
        out_a = (
            adapted[doc["prompt"]]
            if doc["max_new_tokens"] == MAX_NEW
            else _greedy(session, doc["prompt"], doc["max_new_tokens"], adapter=True)
        )
        out_b = (
            base[doc["prompt"]]
            if doc["max_new_tokens"] == MAX_NEW
            else _greedy(session, doc["prompt"], doc["max_new_tokens"], adapter=False)
        )
        assert score_generation(item, out_a) is want, doc  # the construction holds
        base_now.append(score_generation(item, out_b))
    assert base_now[:5] == [False] * 5 and base_now[5:] == [False, True, True]

    norms = []
    for prompt, pick in (("The adapter says:", "best"), ("Le renard est", "worst"), ("The dog is", "best")):
        lls_a = _choice_lls(session, prompt, CHOICES, adapter=True)
        lls_b = _choice_lls(session, prompt, CHOICES, adapter=False)
        answer = _argmax(lls_a) if pick == "best" else min(range(len(lls_a)), key=lls_a.__getitem__)
        docs.append({"prompt": prompt, "choices": list(CHOICES), "answer": answer})
        then.append(pick == "best")
        base_now.append(_argmax(lls_b) == answer)
        norms.append(_argmax([ll / len(c) for ll, c in zip(lls_a, CHOICES, strict=True)]) == answer)
    return docs, then, base_now, sum(norms) / len(norms)


@pytest.fixture(scope="module")
def golden_locked(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, tiny_llama_adapter: Path) -> GoldenRepo:
    """``base/``, ``adapter/``, ``golden.jsonl`` and ``lora.lock`` (golden only, no probe), built once. Read-only."""
    root = tmp_path_factory.mktemp("golden-llama")
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    with _session(root) as session:
        docs, then, base_now, acc_norm = _build_items(session)
    text = [json.dumps(d, ensure_ascii=False) if d is not None else "" for d in docs]
    write_lines(root / "golden.jsonl", text)
    lines = [number for number, d in enumerate(docs, 1) if d is not None]
    for doc in docs:
        if doc is not None:
            assert _validator().is_valid(doc), doc
    rc = main(
        [
            "generate",
            "--adapter",
            str(root / "adapter"),
            "--base",
            str(root / "base"),
            "--golden",
            str(root / "golden.jsonl"),
            "--no-probe",
            "--device",
            "cpu",
            "-o",
            str(root / "lora.lock"),
        ]
    )
    assert rc == 0
    return GoldenRepo(root=root, lines=lines, then=then, base_now=base_now, acc_norm=acc_norm)


@pytest.fixture
def golden_repo(golden_locked: GoldenRepo, tmp_path: Path) -> GoldenRepo:
    root = tmp_path / "repo"
    shutil.copytree(golden_locked.root, root)
    return GoldenRepo(root, golden_locked.lines, golden_locked.then, golden_locked.base_now, golden_locked.acc_norm)


def expected_summary(g: GoldenRepo, now: list[bool], name: str = "adapter") -> tuple[str, float, list[int]]:
    n = g.n
    negative = [line for line, a, b in zip(g.lines, g.then, now, strict=True) if a and not b]
    positive = [line for line, a, b in zip(g.lines, g.then, now, strict=True) if not a and b]
    nfr = len(negative) / n
    summary = (
        f"adapter {name}: accuracy {sum(g.then) / n:.1%} → {sum(now) / n:.1%}; negative flips {len(negative)}/{n} "
        f"(NFR {nfr:.2%}), positive flips {len(positive)}/{n}"
    )
    return summary, nfr, negative


@pytest.mark.slow
def test_generate_records_the_golden_baseline(golden_locked: GoldenRepo) -> None:
    lock = read_lock(golden_locked.root / "lora.lock")
    assert "probe" not in lock
    assert list(golden_locked.root.glob("lora.lock.probe-*.json")) == []
    golden = lock["golden"]
    data = (golden_locked.root / "golden.jsonl").read_bytes()
    assert golden["dataset"] == "golden.jsonl"
    assert golden["dataset-digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert golden["items"] == golden_locked.n == 11
    assert golden["kinds"] == {"generation": 8, "choice": 3}
    (row,) = golden["adapter"]
    assert row["name"] == "adapter"
    assert row["correct"] == hex_bits(golden_locked.then)
    assert row["accuracy"] == pytest.approx(sum(golden_locked.then) / golden_locked.n, abs=1e-6)
    assert 0 < row["accuracy"] < 1
    assert row["acc-norm"] == pytest.approx(golden_locked.acc_norm, abs=1e-6)


@pytest.mark.slow
def test_unchanged_setup_passes_the_golden_gate(golden_locked: GoldenRepo, capsys: pytest.CaptureFixture[str]) -> None:
    rc, report = verify_json(capsys, golden_locked.root / "lora.lock")
    assert rc == 0, report["findings"]
    assert report["checked"]["golden"] == "pass"
    assert report["checked"]["effect"] == "skipped"  # no [probe] in this lock
    ok = only(report, "GOLDEN-OK")
    summary, nfr, _ = expected_summary(golden_locked, golden_locked.then)
    assert nfr == 0
    assert ok["message"] == summary
    assert "NFR 0.00%" in ok["message"] and "positive flips 0/11" in ok["message"]


@pytest.mark.slow
def test_zeroed_adapter_flips_the_known_items(golden_repo: GoldenRepo, capsys: pytest.CaptureFixture[str]) -> None:
    edit_tensors(golden_repo.root / "adapter" / ADAPTER_FILE, scale_lora_b(0.0))
    summary, nfr, negative = expected_summary(golden_repo, golden_repo.base_now)
    assert len(negative) >= 5 and nfr > DEFAULT_MAX_NFR

    rc, report = verify_json(capsys, golden_repo.root / "lora.lock", "--only", "golden")

    assert rc == 1
    assert report["checked"]["golden"] == "fail"
    finding = only(report, "GOLDEN-NFR")
    assert finding["severity"] == "error" and finding["category"] == "golden" and finding["subject"] == "adapter"
    lines = ", ".join(str(x) for x in negative)
    assert finding["message"] == f"{summary}: above the allowed NFR 1.00% (items on lines {lines})"
    assert finding["expected"] == "NFR ≤ 1.00%"
    assert finding["actual"] == f"NFR {nfr:.2%}"
    positive = [
        line
        for line, a, b in zip(golden_repo.lines, golden_repo.then, golden_repo.base_now, strict=True)
        if b and not a
    ]
    assert golden_repo.lines[6] in positive  # the item that expected the base model's output
    assert f"positive flips {len(positive)}/11" in finding["message"]
    assert finding["hint"] and "--max-nfr" in finding["hint"]

    rc, report = verify_json(capsys, golden_repo.root / "lora.lock", "--only", "golden", "--max-nfr", "1.0")
    assert rc == 0, report["findings"]
    # A gate that passes with flips still names them.
    assert only(report, "GOLDEN-OK")["message"] == f"{summary} (negative flips on lines {lines})"

    rc, report = verify_json(capsys, golden_repo.root / "lora.lock", "--only", "golden", "--max-nfr", repr(nfr))
    assert rc == 0, report["findings"]  # the gate is "NFR above the limit": equal passes


@pytest.mark.slow
def test_batched_generation_equals_one_prompt_decoding(golden_locked: GoldenRepo) -> None:
    """Golden items decode together (left-padded); each row must end exactly where decoding it alone ends: its own
    token limit, EOS (not kept) or a stop string (kept, cut by the scorer)."""
    limits = [1 + i % 8 for i in range(len(CANDIDATE_PROMPTS))]
    with _session(golden_locked.root) as session:
        decode = session.tokenizer.decode
        ids = [session.encode(p) for p in CANDIDATE_PROMPTS]
        assert len({len(i) for i in ids}) > 1
        alone = [_greedy(session, p, n, adapter=True) for p, n in zip(CANDIDATE_PROMPTS, limits, strict=True)]
        out = session.generate("adapter", ids, max(limits), lambda row, t: len(t) >= limits[row], session.eos_ids())
        assert [decode(t, skip_special_tokens=True) for t in out] == alone
        assert all(len(t) <= n for t, n in zip(out, limits, strict=True))

        # A stop string ends its row after the token that completes it; the other rows go on.
        first = decode(out[-1][:1], skip_special_tokens=True)
        until = session.generate(
            "adapter", ids, 8, lambda row, t: row == len(ids) - 1 and first in decode(t), session.eos_ids()
        )
        assert until[-1] == out[-1][:1]
        assert (
            until[0] == session.generate("adapter", ids[:1], 8, lambda row, t: False, frozenset())[0][: len(until[0])]
        )


@pytest.mark.slow
def test_out_of_memory_batches_are_split_and_score_the_same(
    golden_locked: GoldenRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lora_lock.probe.effect import ProbeMemoryError
    from lora_lock.probe.golden import GoldenRunner

    items, _ = read_golden(golden_locked.root / "golden.jsonl")
    assert sum(1 for i in items if i.kind == "generation") > 2
    with _session(golden_locked.root) as session:
        whole = GoldenRunner(session).run_all("adapter", items)
        generate, sizes = session.generate, []

        def small_device(name: str, prompts: list[list[int]], *args: Any) -> Any:
            sizes.append(len(prompts))
            if len(prompts) > 2:
                raise ProbeMemoryError("greedy decoding ran out of memory on cpu")
            return generate(name, prompts, *args)

        monkeypatch.setattr(session, "generate", small_device)
        assert GoldenRunner(session).run_all("adapter", items) == whole
        assert max(sizes) > 2 and any(n <= 2 for n in sizes)

        monkeypatch.setattr(session, "generate", lambda *a: (_ for _ in ()).throw(ProbeMemoryError("no memory")))
        with pytest.raises(ProbeMemoryError, match="no memory"):  # one item that does not fit: a clear error
            GoldenRunner(session).run_all("adapter", items)


@pytest.mark.slow
def test_amplified_adapter_flips_match_an_independent_rescoring(
    golden_repo: GoldenRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    from lora_lock.probe.golden import GoldenRunner

    edit_tensors(golden_repo.root / "adapter" / ADAPTER_FILE, scale_lora_b(3.0))
    items, _ = read_golden(golden_repo.root / "golden.jsonl")
    with _session(golden_repo.root) as session:
        runner = GoldenRunner(session)
        now = [runner.run("adapter", item)[0] for item in items]
    summary, nfr, negative = expected_summary(golden_repo, now)
    assert negative, "scaling lora_B by 3 should break some items"

    rc, report = verify_json(capsys, golden_repo.root / "lora.lock", "--only", "golden")

    assert rc == 1
    finding = only(report, "GOLDEN-NFR")
    lines = ", ".join(str(x) for x in negative)
    assert finding["message"] == f"{summary}: above the allowed NFR 1.00% (items on lines {lines})"
    assert finding["actual"] == f"NFR {nfr:.2%}"


@pytest.mark.slow
def test_edited_golden_file_is_a_dataset_finding(golden_repo: GoldenRepo, capsys: pytest.CaptureFixture[str]) -> None:
    path = golden_repo.root / "golden.jsonl"
    path.write_text(path.read_text(encoding="utf-8") + '{"prompt": "new", "expected": "item"}\n', encoding="utf-8")

    rc, report = verify_json(capsys, golden_repo.root / "lora.lock")

    assert rc == 1
    finding = only(report, "GOLDEN-DATASET")
    assert finding["severity"] == "error" and finding["category"] == "golden"
    assert "golden.jsonl changed since the lock was generated" in finding["message"]
    assert finding["actual"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert finding["hint"] and "--golden" in finding["hint"]
    assert "GOLDEN-NFR" not in codes(report) and "GOLDEN-OK" not in codes(report)
    assert report["checked"]["adapter"] == "pass"


@pytest.mark.slow
def test_deleted_golden_file_is_unusable_input(golden_repo: GoldenRepo, capsys: pytest.CaptureFixture[str]) -> None:
    (golden_repo.root / "golden.jsonl").unlink()

    rc, report = verify_json(capsys, golden_repo.root / "lora.lock")

    assert rc == 2
    assert "golden.jsonl" in only(report, "INPUT-UNUSABLE")["message"]
    assert only(report, "GOLDEN-NOT-RUN")["severity"] == "warning"
    assert report["checked"]["golden"] == "error"

    rc, report = verify_json(capsys, golden_repo.root / "lora.lock", "--skip", "golden")
    assert rc == 0, report["findings"]


@pytest.mark.slow
@pytest.mark.parametrize("value", ["-0.5", "nan", "5"])
def test_max_nfr_outside_0_1_is_a_usage_error(
    golden_locked: GoldenRepo, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    rc, _, _ = run_cli(capsys, "verify", str(golden_locked.root / "lora.lock"), "--only", "golden", "--max-nfr", value)
    assert rc == 2


@pytest.mark.slow
def test_probe_and_golden_share_one_model_load(
    golden_repo: GoldenRepo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    loads: list[str] = []
    real = AutoModelForCausalLM.from_pretrained

    def load(*args: Any, **kwargs: Any) -> Any:
        loads.append(str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", load)
    monkeypatch.chdir(golden_repo.root)

    rc, _, err = run_cli(
        capsys, "generate", "--adapter", "adapter", "--base", "base", "--golden", "golden.jsonl", "--device", "cpu"
    )
    assert rc == 0, err
    assert len(loads) == 1
    lock = read_lock(golden_repo.root / "lora.lock")
    assert "probe" in lock and lock["golden"]["adapter"][0]["correct"] == hex_bits(golden_repo.then)

    loads.clear()
    rc, report = verify_json(capsys, golden_repo.root / "lora.lock", "--only", "effect,golden")
    assert rc == 0, report["findings"]
    assert len(loads) == 1
    assert report["checked"]["effect"] == report["checked"]["golden"] == "pass"


@pytest.mark.slow
def test_a_deleted_golden_file_keeps_the_probe_findings(
    golden_repo: GoldenRepo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One category's unusable input stops that category only: the probe still runs and still catches a change."""
    monkeypatch.chdir(golden_repo.root)
    rc, _, err = run_cli(
        capsys, "generate", "--adapter", "adapter", "--base", "base", "--golden", "golden.jsonl", "--device", "cpu"
    )
    assert rc == 0, err
    golden = read_lock(golden_repo.root / "lora.lock")["golden"]
    assert (golden["device"], golden["dtype"]) == ("cpu", "float32")  # verify scores the same way
    edit_tensors(golden_repo.root / "adapter" / ADAPTER_FILE, scale_lora_b(0.5))
    (golden_repo.root / "golden.jsonl").unlink()

    rc, report = verify_json(capsys, golden_repo.root / "lora.lock", "--only", "effect,golden")

    assert rc == 1  # drift wins over unusable input
    assert "golden.jsonl" in only(report, "GOLDEN-NOT-RUN")["message"]
    assert "golden.jsonl" in only(report, "INPUT-UNUSABLE")["message"]
    assert "effect is reduced" in only(report, "EFFECT-CHANGED")["message"]
    assert report["checked"]["effect"] == "fail"


@pytest.mark.slow
def test_generation_stops_at_the_generation_configs_end_of_turn_token(golden_locked: GoldenRepo) -> None:
    """Chat models end a turn with a token that is not the tokenizer's EOS (Llama-3's <|eot_id|>): generation
    stops there, as transformers' generate does."""
    with _session(golden_locked.root) as session:
        ids = [session.encode(p) for p in CANDIDATE_PROMPTS[:4]]
        free = session.generate("adapter", ids, 6, lambda row, t: False, frozenset())
        turn_end = free[0][2]
        session.model.get_base_model().generation_config.eos_token_id = [session.tokenizer.eos_token_id, turn_end]
        assert session.eos_ids() == {session.tokenizer.eos_token_id, turn_end}
        stopped = session.generate("adapter", ids, 6, lambda row, t: False, session.eos_ids())
        for before, after in zip(free, stopped, strict=True):
            cut = before.index(turn_end) if turn_end in before else len(before)
            assert after == before[:cut]
        assert stopped[0] == free[0][:2]


@pytest.mark.slow
def test_multiple_choice_moves_the_prompts_trailing_space_to_the_choice(golden_locked: GoldenRepo) -> None:
    """lm-evaluation-harness scores "The fox is " + "quick" as "The fox is" + " quick": the choice's tokens are the
    whole word, never the tail of a different tokenization."""
    from lora_lock.probe.golden import _encode_pair

    with _session(golden_locked.root) as session:
        decode = session.tokenizer.decode
        context, cont = _encode_pair(session.encode, "The fox is ", "quick")
        assert context == session.encode("The fox is")
        assert decode(cont) == " quick"
        assert context + cont == session.encode("The fox is quick")
        context, cont = _encode_pair(session.encode, "The fox is", " quick")  # no trailing space: unchanged
        assert (context, decode(cont)) == (session.encode("The fox is"), " quick")


@pytest.mark.slow
def test_generation_longer_than_the_position_table_is_unusable_input(
    golden_repo: GoldenRepo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (golden_repo.root / "long.jsonl").write_text(
        '{"prompt": "The fox is", "expected": "x"}\n{"prompt": "The fox is", "expected": "x", "max_new_tokens": 300}\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(golden_repo.root)
    rc, _, err = run_cli(
        capsys, "generate", "--adapter", "adapter", "--base", "base", "--golden", "long.jsonl", "-o", "long.lock"
    )
    assert rc == 2
    assert "golden item on line 2:" in err and "exceed the model's 256 positions" in err
    assert not (golden_repo.root / "long.lock").exists()


@pytest.mark.slow
def test_generate_refuses_a_bad_golden_file_before_loading_the_model(
    golden_repo: GoldenRepo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    loads: list[Any] = []
    real = AutoModelForCausalLM.from_pretrained

    def load(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", load)
    monkeypatch.chdir(golden_repo.root)
    write_lines(golden_repo.root / "bad.jsonl", ['{"prompt": "a", "expected": "b"}', '{"prompt": "a", "scorer": 1}'])
    before = (golden_repo.root / "lora.lock").read_bytes()

    rc, _, err = run_cli(
        capsys, "generate", "--adapter", "adapter", "--base", "base", "--golden", "bad.jsonl", "--probe"
    )

    assert rc == 2
    assert "bad.jsonl:2: field `expected`" in err
    assert loads == []
    assert (golden_repo.root / "lora.lock").read_bytes() == before  # the old lock is left alone


@pytest.mark.slow
def test_a_row_that_ended_never_steps_past_a_learned_position_table(
    tmp_path: Path, tiny_gpt2: Path, tiny_gpt2_adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """GPT-2 has 256 learned positions. A long prompt that asks for 2 tokens fits; decoded in one batch with a
    short prompt that asks for 30, its row keeps stepping after it ended — without indexing past the table."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    sentence = "The quick brown fox jumps over the lazy dog. "
    long = sentence
    while len(tok(long + sentence)["input_ids"]) <= 250:
        long += sentence
    assert 240 < len(tok(long)["input_ids"]) + 2 <= 256 < len(tok(long)["input_ids"]) + 30
    golden = write_lines(
        tmp_path / "golden.jsonl",
        [
            json.dumps({"prompt": long, "expected": "x", "max_new_tokens": 2}),
            json.dumps({"prompt": "Hello", "expected": "y", "max_new_tokens": 30}),
        ],
    )
    shutil.copytree(tiny_gpt2, tmp_path / "base")
    shutil.copytree(tiny_gpt2_adapter, tmp_path / "adapter")
    rc, _, err = run_cli(
        capsys, "generate", "--adapter", str(tmp_path / "adapter"), "--base", str(tmp_path / "base"),
        "-o", str(tmp_path / "lora.lock"), "--no-probe", "--golden", str(golden), "--device", "cpu",
    )  # fmt: skip
    assert rc == 0, err
    rc, report = verify_json(capsys, tmp_path / "lora.lock")
    assert rc == 0, report["findings"]
    assert only(report, "GOLDEN-OK")["subject"] == "adapter"


@pytest.mark.slow
def test_multiple_choice_logits_that_overflow_are_refused(
    golden_repo: GoldenRepo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """NaN log-likelihoods would make choice 0 win every item and the golden gate blind: refused instead."""
    import torch
    from transformers import LlamaForCausalLM

    real = LlamaForCausalLM.forward

    def overflow(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(self, *args, **kwargs)
        if not kwargs.get("use_cache"):  # the multiple-choice passes (generation decodes with the KV cache)
            out.logits = torch.full_like(out.logits, float("nan"))
        return out

    monkeypatch.setattr(LlamaForCausalLM, "forward", overflow)
    rc, report = verify_json(capsys, golden_repo.root / "lora.lock", "--only", "golden")
    assert rc == 2
    assert "logits are not finite" in only(report, "INPUT-UNUSABLE")["message"]
    assert report["checked"]["golden"] == "error"
