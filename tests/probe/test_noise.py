"""Noise-aware flip counting: a float32 golden lock verified in bfloat16 does not fail on the items whose margin
sat inside the numerical noise measured at lock time, while a real flip still fails the NFR gate."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest

from lora_lock.commands.generate import generate
from lora_lock.lock.io import read as read_lock
from lora_lock.lock.model import Golden

#: Near-ties on the session's tiny Llama and adapter (seed 0), found by scoring 1,900 items in float32 and
#: bfloat16: these two are the only ones whose answer bfloat16 changes (margins 0.012 and 0.004 nats, while
#: bfloat16 moves a log-likelihood by up to 0.09). The test checks that they still flip.
NEAR_TIES = (("The fox is", ("over", "in")), ("Once upon a time", ("over", "of")))
WORDS = ("quick", "lazy", "brown", "fox", "dog", "the", "a", "is", "was", "jumps", "over")
#: Items far from a tie under the same change: 48 of them, answer 0 (right or wrong at lock time alike).
STABLE = list(itertools.product(("The dog is", "Le renard est"), list(itertools.combinations(WORDS, 2))[:24]))


def _answer_by_fp32(session: object, prompt: str, choices: tuple[str, ...]) -> int:
    from lora_lock.probe.golden import GoldenItem, GoldenRunner

    lls = GoldenRunner(session).choice_lls(GoldenItem(0, prompt, "choice", choices=choices, answer=0))
    return max(range(len(lls)), key=lls.__getitem__)


@pytest.mark.slow
def test_a_float32_lock_verified_in_bfloat16_counts_only_real_flips(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path
) -> None:
    from lora_lock.probe.effect import ProbeSession
    from lora_lock.probe.golden import pack_bits, read_golden, unpack_bits
    from lora_lock.probe.golden_gate import verify_golden

    root = tmp_path / "repo"
    shutil.copytree(tiny_llama, root / "base")
    shutil.copytree(tiny_llama_adapter, root / "adapter")
    adapters = [("adapter", root / "adapter")]
    fp32 = ProbeSession(root / "base", root / "base", adapters, device="cpu", dtype="float32")
    fp32.use("adapter")
    # The near-ties are right at lock time (their answer is the float32 argmax): bfloat16 makes them wrong.
    docs = [{"prompt": p, "choices": list(c), "answer": _answer_by_fp32(fp32, p, c)} for p, c in NEAR_TIES]
    docs += [{"prompt": p, "choices": list(c), "answer": 0} for p, c in STABLE]
    golden = root / "golden.jsonl"
    golden.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    n = len(docs)
    assert n == 50

    result = generate([root / "adapter"], root / "base", root / "lora.lock", device="cpu", probe=False, golden=golden)
    assert result.lock is not None
    section = read_lock(root / "lora.lock")["golden"]
    assert section["convention"] == "lm-eval-0.4.13" and section["noise-numerics"] == "autocast-bfloat16"
    (row,) = section["adapter"]
    then = unpack_bits(row["correct"], n)
    unstable = unpack_bits(row["unstable"], n)
    assert then[0] and then[1] and unstable[0] and unstable[1]  # the near-ties are measured as unstable
    assert sum(unstable) < n // 5, row  # and most items are not
    assert 0 < row["noise-ll"] < 0.5

    dataset = read_golden(golden)
    bf16 = ProbeSession(root / "base", root / "base", adapters, device="cpu", dtype="bfloat16")
    found = {f.code: f for f in verify_golden(bf16, Golden.from_dict(section), dataset, adapters, max_nfr=0.01)}
    assert "GOLDEN-NFR" not in found, found
    assert "negative flips 0/50" in found["GOLDEN-OK"].message
    shaky = found["GOLDEN-UNSTABLE"]
    assert shaky.message.endswith("lines 1, 2") and "dtype float32 → bfloat16" in shaky.message

    # A real regression: an item the lock says was right, far from any tie, is wrong now: 1 of 50 (2 %) fails.
    real = next(i for i in range(2, n) if not then[i] and not unstable[i])
    edited = Golden.from_dict(
        {**section, "adapter": [{**row, "correct": pack_bits([b or i == real for i, b in enumerate(then)])}]}
    )
    found = {f.code: f for f in verify_golden(bf16, edited, dataset, adapters, max_nfr=0.01)}
    nfr = found["GOLDEN-NFR"]
    assert nfr.actual == "NFR 2.00%" and nfr.message.endswith(f"(items on lines {real + 1})")
    assert found["GOLDEN-UNSTABLE"].message.endswith("lines 1, 2")  # still reported apart, not counted

    # On the lock's own numerics every flip counts, and nothing is exempt.
    found = {f.code: f for f in verify_golden(fp32, edited, dataset, adapters, max_nfr=0.01)}
    assert "GOLDEN-UNSTABLE" not in found and found["GOLDEN-NFR"].actual == "NFR 2.00%"
