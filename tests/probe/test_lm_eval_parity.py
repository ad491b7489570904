"""Golden-set parity with lm-evaluation-harness 0.4.13 itself, on the tiny Llama and a trained adapter.

lm-eval is not a dependency of lora-lock: ``make test-lm-eval-parity`` builds an environment with it (sharing
the project venv's torch, transformers and peft) and points ``LORA_LOCK_LM_EVAL_PYTHON`` at its Python. Without
that variable the test is skipped, by name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TESTS

LM_EVAL_PYTHON = os.environ.get("LORA_LOCK_LM_EVAL_PYTHON")
RUNNER = TESTS / "probe" / "lm_eval_runner.py"

PROMPTS = (
    "The capital of France is",
    "Question: What is 2 + 2?\nAnswer:",
    "The fox is ",  # a trailing space moves to the continuation (then two spaces: as lm-eval does)
    "Once upon a time",
    "<s>The dog is",  # starts with the BOS text: no second BOS (a rendered chat template)
    "<s><|user|>Pick one<|end|><|assistant|>",
    "Le renard est",
    "SELECT name FROM",
    "def f(x):\n    return",
    "A LoRA adapter",
)
CHOICE_SETS = (
    ("Paris", "London", "Berlin"),
    ("4", "5", "22"),
    ("quick", "lazy", "brown"),
    ("there was a fox", "a dog", "x"),
    (" lazy", " quick"),  # a leading space as well as the delimiter: lm-eval scores "  lazy"
    ("yes", "no", "maybe so"),
    ("rapide", "lent"),
    ("orders", "users WHERE", "é"),
    ("x + 1", "None"),
    ("changes outputs", "does nothing", "is a lockfile"),
)


def _items() -> list[dict[str, Any]]:
    docs = []
    for number, (prompt, choices) in enumerate(zip(PROMPTS, CHOICE_SETS, strict=True)):
        docs.append({"prompt": prompt, "choices": list(choices), "answer": number % len(choices)})
    return docs


@pytest.mark.slow
@pytest.mark.skipif(not LM_EVAL_PYTHON, reason="needs lm-eval 0.4.13: run `make test-lm-eval-parity`")
def test_golden_scores_equal_lm_eval_per_item(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path) -> None:
    from lora_lock.probe.effect import ProbeSession
    from lora_lock.probe.golden import GoldenRunner, choice_correct, read_golden

    base, adapter = tmp_path / "base", tmp_path / "adapter"
    shutil.copytree(tiny_llama, base)
    shutil.copytree(tiny_llama_adapter, adapter)
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in _items()), encoding="utf-8")
    assert LM_EVAL_PYTHON is not None
    done = subprocess.run(
        # -P: the runner's folder is not put first on sys.path (a test folder named like a stdlib module, such
        # as tests/inspect/, would shadow it in lm-eval's imports).
        [LM_EVAL_PYTHON, "-P", str(RUNNER), str(base), str(adapter), str(path), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    assert theirs["version"] == "0.4.13"

    items, _ = read_golden(path)
    session = ProbeSession(base, base, [("adapter", adapter)], device="cpu", dtype="float32")
    runner = GoldenRunner(session)
    session.use("adapter")
    assert len(theirs["rows"]) == len(items)
    worst, bitwise = 0.0, 0
    for item, row in zip(items, theirs["rows"], strict=True):
        ours = runner.choice_lls(item)
        worst = max([worst, *(abs(a - b) for a, b in zip(ours, row["lls"], strict=True))])
        bitwise += ours == row["lls"]
        # Same token ids, the same forward (the sequence without its last token), the same fp32 log-softmax.
        assert ours == row["lls"], (item.line, ours, row["lls"])
        acc, acc_norm = choice_correct(item, ours)
        assert (acc, acc_norm) == (bool(row["acc"]), bool(row["acc_norm"])), item.line
    print(
        f"parity: {len(items)} items, lm-eval {theirs['version']}: {bitwise} bitwise equal, max |Δll| {worst:.3g}",
        file=sys.stderr,
    )
