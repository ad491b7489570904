"""The golden-dataset gate: per-item correctness at lock time, negative flips at verify time.

Items are JSONL (schema: ``schemas/golden.schema.json``):

- generation: ``{"prompt", "expected", "scorer": "exact"|"contains"|"regex", "max_new_tokens", "until",
  "ignore_case", "ignore_punctuation", "regexes_to_ignore"}`` (lm-evaluation-harness ``exact_match`` options);
  greedy decoding with the adapter.
- multiple choice: ``{"prompt", "choices": [...], "answer": index, "target_delimiter": " "}``, scored as
  lm-evaluation-harness 0.4.13 scores a ``multiple_choice`` task: each continuation is ``target_delimiter +
  choice`` (default one space), ``acc`` is the log-likelihood argmax and ``acc_norm`` the argmax of log-likelihood
  per character of the choice without the delimiter (``len(choice)``).

Prompts get BOS as lm-eval decides it (:meth:`~lora_lock.probe.effect.ProbeSession.encode`). Locks made before
this convention (no ``convention`` in ``[golden]``) are verified with the rules they were made with: no delimiter,
the tokenizer's special tokens always.

The lock records each item's correctness (a bitset) and the accuracy: the lock plays the old model, so only the
new side is run. NFR (negative flip rate, MUSCLE) = #(correct then ∧ wrong now) / N.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_lock import userregex
from lora_lock.errors import InputError, brief
from lora_lock.hashing import sha256_bytes
from lora_lock.probe.effect import DECODE_BATCH, ProbeMemoryError, finite
from lora_lock.sources.fence import read_bounded

SCORERS = ("exact", "contains", "regex")
DEFAULT_MAX_NEW_TOKENS = 32
#: Default gate: at most 1 item in 100 may go from right to wrong. Golden sets are small and curated, so a
#: flip is worth reading; raise it with --max-nfr for sets scored on noisy hardware.
DEFAULT_MAX_NFR = 0.01
#: The scoring rules a lock's ``[golden]`` section records (``convention``); a section without it is :data:`LEGACY`.
CONVENTION = "lm-eval-0.4.13"
LEGACY = "lora-lock-0.1"
#: lm-evaluation-harness's default ``target_delimiter``.
DEFAULT_DELIMITER = " "


@dataclass(frozen=True)
class GoldenItem:
    """One golden-set line: a generation item scored against ``expected`` by ``scorer``, or a multiple-choice item
    scored by the log-likelihood of each choice (``answer`` is the right one's index)."""

    line: int
    prompt: str
    kind: str  # "generation" | "choice"
    expected: str = ""
    scorer: str = "exact"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    until: tuple[str, ...] = ()
    ignore_case: bool = False
    ignore_punctuation: bool = False
    regexes_to_ignore: tuple[str, ...] = ()
    choices: tuple[str, ...] = field(default_factory=tuple)
    answer: int = 0
    target_delimiter: str = DEFAULT_DELIMITER


def _case(ignore_case: bool) -> int:
    return userregex.IGNORECASE if ignore_case else 0


def _fail(path: Path, line: int, field_name: str, expected: str, found: Any) -> InputError:
    return InputError(f"{path}:{line}: field `{field_name}` must be {expected}, found {brief(found, 60)}")


def _flag(path: Path, number: int, doc: dict[str, Any], name: str) -> bool:
    value = doc.get(name, False)
    if not isinstance(value, bool):
        raise _fail(path, number, name, "true or false", value)
    return value


def _strings(path: Path, number: int, doc: dict[str, Any], name: str) -> tuple[str, ...]:
    value = doc.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(path, number, name, "a list of non-empty strings", value)
    return tuple(value)


def read_golden(path: Path) -> tuple[list[GoldenItem], str]:
    """Parse and validate the golden file; returns the items and the file's digest."""
    data = read_bounded(path, "golden")  # a regular file within the golden size bound (never a FIFO, /dev/zero)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: the golden dataset is not UTF-8 text") from exc
    # JSONL lines end at "\n" only: str.splitlines() would also split at U+2028 inside a JSON string.
    items = [_item(path, number, line) for number, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not items:
        raise InputError(f"{path}: the golden dataset has no items")
    return items, sha256_bytes(data)


def _item(path: Path, number: int, line: str) -> GoldenItem:
    """The item on line ``number``: a multiple-choice item when it gives ``choices``, a generation item else."""
    try:
        doc = json.loads(line)
    except RecursionError as exc:
        raise InputError(f"{path}:{number}: JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "a number too long"
        raise InputError(f"{path}:{number}: not valid JSON ({detail})") from exc
    if not isinstance(doc, dict):
        raise InputError(f"{path}:{number}: each line must be a JSON object")
    prompt = doc.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _fail(path, number, "prompt", "a non-empty string", prompt)
    if "choices" in doc:
        return _choice_item(path, number, doc, prompt)
    return _generation_item(path, number, doc, prompt)


def _choice_item(path: Path, number: int, doc: dict[str, Any], prompt: str) -> GoldenItem:
    """A multiple-choice item: at least two non-empty choices, the index of the right one, the delimiter."""
    choices = doc["choices"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise _fail(path, number, "choices", "a list of at least 2 non-empty strings", choices)
    answer = doc.get("answer")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise _fail(path, number, "answer", f"an index into choices (0..{len(choices) - 1})", answer)
    delimiter = doc.get("target_delimiter", DEFAULT_DELIMITER)
    if not isinstance(delimiter, str):
        raise _fail(path, number, "target_delimiter", "a string (may be empty)", delimiter)
    return GoldenItem(
        line=number, prompt=prompt, kind="choice", choices=tuple(choices), answer=answer, target_delimiter=delimiter
    )


def _generation_item(path: Path, number: int, doc: dict[str, Any], prompt: str) -> GoldenItem:
    """A generation item: the expected text, its scorer and the lm-eval ``exact_match`` options; each pattern is
    compiled here, so a bad one fails before any model loads."""
    expected = doc.get("expected")
    if not isinstance(expected, str):
        raise _fail(path, number, "expected", "a string (or give `choices` and `answer`)", expected)
    scorer = doc.get("scorer", "exact")
    if scorer not in SCORERS:
        raise InputError(f"{path}:{number}: unknown scorer {brief(scorer)}; choose from {', '.join(SCORERS)}")
    ignore_case = _flag(path, number, doc, "ignore_case")
    if scorer == "regex":
        userregex.compile_user(expected, f"{path}:{number}: field `expected`", _case(ignore_case))
    regexes_to_ignore = _strings(path, number, doc, "regexes_to_ignore")
    for pattern in regexes_to_ignore:
        userregex.compile_user(pattern, f"{path}:{number}: field `regexes_to_ignore`")
    max_new = doc.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    if not isinstance(max_new, int) or isinstance(max_new, bool) or not 1 <= max_new <= 4096:
        raise _fail(path, number, "max_new_tokens", "an integer from 1 to 4096", max_new)
    return GoldenItem(
        line=number,
        prompt=prompt,
        kind="generation",
        expected=expected,
        scorer=scorer,
        max_new_tokens=max_new,
        until=_strings(path, number, doc, "until"),
        ignore_case=ignore_case,
        ignore_punctuation=_flag(path, number, doc, "ignore_punctuation"),
        regexes_to_ignore=regexes_to_ignore,
    )


def normalise(text: str, item: GoldenItem) -> str:
    """lm-evaluation-harness ``exact_match`` normalisation: regexes removed, case and punctuation optional. Then,
    unlike ``exact_match`` itself, surrounding whitespace is dropped (what lm-eval tasks do with a ``strip`` filter):
    a generation's leading space is never what a golden item means to test."""
    for pattern in item.regexes_to_ignore:
        text = userregex.sub(pattern, "", text, f"golden line {item.line}: field `regexes_to_ignore`")
    if item.ignore_case:
        text = text.lower()
    if item.ignore_punctuation:
        text = text.translate(str.maketrans("", "", string.punctuation))
    return text.strip()


def cut_at_stop(text: str, until: tuple[str, ...]) -> str:
    """``text`` cut at the first occurrence of each stop string, in the order given (as lm-eval's ``until``)."""
    for stop in until:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


def score_generation(item: GoldenItem, output: str) -> bool:
    """Whether a generated ``output`` (cut at the stop strings, normalised as the item asks) is right: the
    ``expected`` regex found in it, ``expected`` contained in it, or equal to it."""
    got = normalise(cut_at_stop(output, item.until), item)
    if item.scorer == "regex":
        return userregex.search(item.expected, got, f"golden line {item.line}", _case(item.ignore_case)) is not None
    want = normalise(item.expected, item)
    if item.scorer == "contains":
        return want in got
    return got == want


def pack_bits(bits: list[bool]) -> str:
    """Correctness as hex, item 0 in the most significant bit of the first nibble."""
    padded = bits + [False] * (-len(bits) % 4)
    return "".join(
        f"{int(''.join('1' if b else '0' for b in padded[i : i + 4]), 2):x}" for i in range(0, len(padded), 4)
    )


def unpack_bits(text: str, n: int, where: str = "the lock's golden `correct`") -> list[bool]:
    """The ``n`` correctness bits of :func:`pack_bits` text; a value of another length or not hex is refused."""
    if len(text) != -(-n // 4) or any(c not in "0123456789abcdef" for c in text):
        raise InputError(
            f"{where} must be {-(-n // 4)} lowercase hex digits for {n} items, found {brief(text)}",
            hint="the lock was edited or the dataset changed; regenerate the lock with --golden",
        )
    bits = [c == "1" for nibble in text for c in f"{int(nibble, 16):04b}"]
    return bits[:n]


def _encode_pair(encode: Callable[[str], list[int]], context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's split of a (context, continuation) pair into token ids: trailing whitespace of the
    context moves to the continuation, and the continuation's ids are what encoding the whole adds to the
    context's."""
    spaces = len(context) - len(context.rstrip())
    if 0 < spaces < len(context):
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = encode(context + continuation)
    context_ids = encode(context)
    return context_ids, whole[len(context_ids) :]


class GoldenRunner:
    """Scores items with a loaded :class:`~lora_lock.probe.effect.ProbeSession` under ``convention``.

    Generation items decode ``BATCH`` at a time (left-padded, in file order, so the batches are the same at lock
    and at verify); multiple-choice items score each choice in its own batch-1 pass.
    """

    BATCH = DECODE_BATCH

    def __init__(self, session: Any, convention: str = CONVENTION) -> None:
        self.session = session
        self.torch = session.torch
        self.legacy = convention == LEGACY
        #: ``None``, or a torch autocast dtype under which the forwards run (the noise measurement's other numerics).
        self.autocast: Any = None

    def _encode(self, text: str, generation: bool = False) -> list[int]:
        ids: list[int] = self.session.encode(text, special=True if self.legacy else None, generation=generation)
        return ids

    def run(self, name: str, item: GoldenItem) -> tuple[bool, bool | None]:
        """One item: (correct, correct by acc_norm — multiple choice only)."""
        return self.run_all(name, [item])[0]

    def run_all(
        self, name: str, items: list[GoldenItem], step: Callable[[int], None] | None = None
    ) -> list[tuple[bool, bool | None]]:
        """Per item: (correct, correct by acc_norm — multiple choice only), in item order. ``step(n)`` after
        each batch or item, with the number of items scored so far."""
        self.session.use(name)
        results: dict[int, tuple[bool, bool | None]] = {}
        generation = [i for i, item in enumerate(items) if item.kind == "generation"]
        for start in range(0, len(generation), self.BATCH):
            chunk = generation[start : start + self.BATCH]
            for index, correct in zip(chunk, self._generate(name, [items[i] for i in chunk]), strict=True):
                results[index] = (correct, None)
            if step is not None:
                step(len(results))
        for index, item in enumerate(items):
            if item.kind == "choice":
                results[index] = choice_correct(item, self.choice_lls(item))
                if step is not None:
                    step(len(results))
        return [results[i] for i in range(len(items))]

    def _generate(self, name: str, batch: list[GoldenItem]) -> list[bool]:
        """Score a batch of generation items; out of memory, score its halves instead (down to one item)."""
        return [score_generation(item, text) for item, text in zip(batch, self.outputs(name, batch), strict=True)]

    def outputs(self, name: str, batch: list[GoldenItem]) -> list[str]:
        """The decoded greedy outputs of a batch; out of memory, of its halves instead (down to one item)."""
        try:
            return self._generate_batch(name, batch)
        except ProbeMemoryError:
            if len(batch) == 1:
                raise
        # Retried outside the except block: its traceback would keep the failed batch's KV cache alive.
        self.session.release()
        half = len(batch) // 2
        return self.outputs(name, batch[:half]) + self.outputs(name, batch[half:])

    def _generate_batch(self, name: str, batch: list[GoldenItem]) -> list[str]:
        session = self.session
        decode = session.tokenizer.decode

        def stop(row: int, tokens: list[int]) -> bool:
            item = batch[row]
            if len(tokens) >= item.max_new_tokens:
                return True
            return bool(item.until) and any(s in decode(tokens, skip_special_tokens=True) for s in item.until)

        prompts = [self._encode(item.prompt, generation=True) for item in batch]
        for item, ids in zip(batch, prompts, strict=True):
            session.check_length([ids], item.max_new_tokens, "golden item on line", [item.line])
        outputs = session.generate(name, prompts, max(item.max_new_tokens for item in batch), stop, session.eos_ids())
        return [decode(tokens, skip_special_tokens=True) for tokens in outputs]

    def choice_lls(self, item: GoldenItem) -> list[float]:
        """The log-likelihood of each choice's continuation (delimiter + choice) after the prompt, in fp32."""
        torch, session = self.torch, self.session
        delimiter = "" if self.legacy else item.target_delimiter
        scores = []
        for number, choice in enumerate(item.choices):
            context, cont = _encode_pair(self._encode, item.prompt, delimiter + choice)
            if not cont:
                raise InputError(
                    f"golden item on line {item.line}: choice {number} ({brief(choice, 40)}) adds no token to the "
                    "prompt"
                )
            seq = context + cont
            session.check_length([seq], 0, "golden item on line", [item.line])
            session.check_fits_model([seq], f"golden item on line {item.line}")
            # The forward sees the sequence without its last token, as lm-evaluation-harness's does: the same
            # shapes give the same kernels, hence bitwise the same log-likelihoods.
            with torch.inference_mode(), session.fits(f"golden item on line {item.line}"), self._numerics():
                logits = session.model(input_ids=torch.tensor([seq[:-1]], device=session.device)).logits[0].float()
                logits = finite(logits, session.dtype_name)  # NaN log-likelihoods would make choice 0 win
            logp = torch.log_softmax(logits[len(context) - 1 :], dim=-1)
            scores.append(float(logp.gather(-1, torch.tensor(cont, device=logp.device).unsqueeze(-1)).sum()))
        return scores

    def _numerics(self) -> Any:
        import contextlib

        if self.autocast is None:
            return contextlib.nullcontext()
        return self.torch.autocast(self.session.device.split(":")[0], dtype=self.autocast)


def choice_correct(item: GoldenItem, lls: list[float]) -> tuple[bool, bool]:
    """(acc, acc_norm) of a multiple-choice item from its choices' log-likelihoods, as lm-evaluation-harness:
    ``argmax(ll)`` and ``argmax(ll / len(choice))`` (the first maximum wins a tie, as numpy's ``argmax``)."""
    norms = [ll / max(1, len(choice)) for ll, choice in zip(lls, item.choices, strict=True)]
    best = max(range(len(lls)), key=lls.__getitem__)
    best_norm = max(range(len(norms)), key=norms.__getitem__)
    return best == item.answer, best_norm == item.answer
