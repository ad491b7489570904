"""The behaviour checks' sensitivity table (perturbation → findings) and golden-set noise figures, measured now.

    .venv/bin/python bench/probe_table.py            # about 2 minutes on one core

A tiny random-weight Llama (hidden 64, 2 layers) and a LoRA trained a few steps on it are built into
``bench/.work/probe-table/``; the probe (8 default prompts) and a golden set of 200 multiple-choice items are locked
in float32, and each perturbation is verified through the probe's API. Every figure comes from this run. The
lm-evaluation-harness parity figures come from ``make test-lm-eval-parity`` (it prints them).
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work" / "probe-table"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROMPTS = (
    "The fox is",
    "Once upon a time",
    "The dog is",
    "Le renard est",
    "A LoRA adapter",
    "The lockfile",
    "Der Fuchs ist",
    "The quick brown",
    "Question: 2 + 2 =",
    "The adapter says:",
)
WORDS = ("quick", "lazy", "brown", "fox", "dog", "the", "a", "is", "was", "jumps", "over")


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(path), framework="np") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)


def _scale(part: str, factor: float) -> Callable[[dict[str, Any]], None]:
    def change(tensors: dict[str, Any]) -> None:
        for key in [k for k in tensors if part in k]:
            tensors[key] = (tensors[key].astype("float64") * factor).astype(tensors[key].dtype)

    return change


def _noise(scale: float) -> Callable[[dict[str, Any]], None]:
    import numpy as np

    def change(tensors: dict[str, Any]) -> None:
        rng = np.random.default_rng(0)
        for key in sorted(k for k in tensors if ".lora_" in k):
            value = tensors[key].astype("float64")
            tensors[key] = (value + scale * rng.standard_normal(value.shape)).astype(tensors[key].dtype)

    return change


def build() -> Path:
    from lora_lock.testing import tiny

    if (WORK / "adapter").exists():
        return WORK
    shutil.rmtree(WORK, ignore_errors=True)
    tok = tiny.train_bpe_tokenizer(WORK / "tok")
    tiny.build_tiny_llama(WORK / "base", tok, seed=0)
    tiny.train_lora(WORK / "base", WORK / "adapter", target_modules=TARGETS, r=8, alpha=16, seed=0)
    items = [
        {"prompt": p, "choices": list(c), "answer": 0}
        for p, c in itertools.product(PROMPTS, list(itertools.combinations(WORDS, 2))[:20])
    ]
    (WORK / "golden.jsonl").write_text("".join(json.dumps(d) + "\n" for d in items), encoding="utf-8")
    return WORK


def main() -> None:
    import torch

    from lora_lock.probe.api import lock_golden, lock_probe, verify_golden, verify_probe
    from lora_lock.probe.effect import ProbeSession
    from lora_lock.probe.golden import read_golden, unpack_bits
    from lora_lock.probe.prompts import DEFAULT_PROMPTS

    torch.set_num_threads(1)
    root = build()

    def session(where: Path, dtype: str = "float32") -> ProbeSession:
        return ProbeSession(
            where / "base",
            where / "base",
            [("adapter", where / "adapter")],
            device="cpu",
            dtype=dtype,
            command="verify",
        )

    adapters = [("adapter", root / "adapter")]
    locked_session = session(root)
    probe = lock_probe(locked_session, adapters, DEFAULT_PROMPTS)
    golden = lock_golden(locked_session, adapters, root / "golden.jsonl", root)
    dataset = read_golden(root / "golden.jsonl")
    (row,) = golden.adapters
    n = golden.items
    unstable = sum(unpack_bits(row.unstable, n)) if row.unstable is not None else 0
    print(
        f"golden set: {n} items, accuracy {row.accuracy:.3f}, autocast-bfloat16 noise {row.noise_ll} nats,"
        f" {unstable} items unstable (margin ≤ 4 × noise or answer moved)"
    )
    (figures,) = probe.rows
    print(f"probe: effect KL {figures.effect_kl}, noise floor {figures.noise_kl}, tolerance {figures.tolerance}")
    print()
    print("| perturbation | effect findings | golden findings |")
    print("|---|---|---|")
    cases: list[tuple[str, Callable[[Path], None], str]] = [
        ("none (same stack)", lambda r: None, "float32"),
        ("verify in bfloat16 (fp32 lock)", lambda r: None, "bfloat16"),
        (
            "lora_B × 0.98",
            lambda r: _edit(r / "adapter" / "adapter_model.safetensors", _scale(".lora_B.", 0.98)),
            "float32",
        ),
        (
            "lora_B × 0.85",
            lambda r: _edit(r / "adapter" / "adapter_model.safetensors", _scale(".lora_B.", 0.85)),
            "float32",
        ),
        (
            "lora_B × 0.5",
            lambda r: _edit(r / "adapter" / "adapter_model.safetensors", _scale(".lora_B.", 0.5)),
            "float32",
        ),
        (
            "lora_B × 1.2",
            lambda r: _edit(r / "adapter" / "adapter_model.safetensors", _scale(".lora_B.", 1.2)),
            "float32",
        ),
        (
            "lora_B × 0 (zeroed)",
            lambda r: _edit(r / "adapter" / "adapter_model.safetensors", _scale(".lora_B.", 0.0)),
            "float32",
        ),
        (
            "LoRA weights + 1e-7 noise",
            lambda r: _edit(r / "adapter" / "adapter_model.safetensors", _noise(1e-7)),
            "float32",
        ),
        (
            "base MLP down_proj × 1.01",
            lambda r: _edit(r / "base" / "model.safetensors", _scale("down_proj", 1.01)),
            "float32",
        ),
    ]
    for label, change, dtype in cases:
        case = WORK.parent / "probe-table-case"
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(root, case)
        change(case)
        live = session(case, dtype)
        pairs = [("adapter", case / "adapter")]
        effect = verify_probe(live, probe.record("lora.lock.probe.json"), probe.sidecar, pairs)
        gold = verify_golden(live, golden, dataset, pairs, max_nfr=0.01)

        def show(found: list[Any]) -> str:
            return ", ".join(f"{f.code} ({f.severity.value})" for f in found if f.code not in ("EFFECT-OK",)) or "OK"

        nfr = next((f.message.split("; ", 1)[1] for f in gold if f.code in ("GOLDEN-OK", "GOLDEN-NFR")), "")
        print(f"| {label} | {show(effect)} | {show(gold).replace('GOLDEN-OK (info)', 'OK')} — {nfr.split(':')[0]} |")
        del live
    shutil.rmtree(WORK.parent / "probe-table-case", ignore_errors=True)
    task_types()


def task_types() -> None:
    """The same perturbations on one tiny model per task type the probe measures (effect findings only), through
    the public ``generate`` and ``verify``."""
    from lora_lock import Category, generate, verify
    from lora_lock.lock.io import read
    from lora_lock.testing import tiny_cls, tiny_fe
    from lora_lock.testing.tiny import train_lora
    from lora_lock.testing.tiny_vlm import build_tiny_llava

    tok = WORK / "tok"

    def build_it(task: str, r: Path) -> None:
        kind = task.split()[0]
        if kind in ("SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS"):
            tiny_cls.build_tiny_bert(r / "base", tok, task=kind, seed=0)
            tiny_cls.train_classifier_lora(r / "base", r / "adapter", task=kind, seed=0)
        elif kind == "SEQ_2_SEQ_LM":
            tiny_cls.build_tiny_t5(r / "base", tok, seed=0)
            tiny_cls.train_seq2seq_lora(r / "base", r / "adapter", seed=0)
        elif kind == "FEATURE_EXTRACTION":
            tiny_fe.build_tiny_encoder(r / "base", tok, seed=0)
            tiny_fe.train_embedding_lora(r / "base", r / "adapter", seed=0)
        else:
            build_tiny_llava(r / "base", tok, seed=0)
            train_lora(r / "base", r / "adapter", target_modules=r".*language_model.*\.(q_proj|v_proj)", seed=0)

    builders = (
        "SEQ_CLS (BERT)",
        "TOKEN_CLS (BERT)",
        "QUESTION_ANS (BERT)",
        "SEQ_2_SEQ_LM (T5)",
        "VLM text path (Llava)",
        "FEATURE_EXTRACTION (BERT, embedding distance)",
    )
    changes: list[tuple[str, Callable[[dict[str, Any]], None] | None]] = [
        ("none", None),
        ("lora_B × 0.5", _scale(".lora_B.", 0.5)),
        ("lora_B × 0", _scale(".lora_B.", 0.0)),
        ("+ 1e-7 noise", _noise(1e-7)),
    ]
    print()
    print("| task type | locked effect | " + " | ".join(label for label, _ in changes) + " |")
    print("|---|---|" + "---|" * len(changes))
    for task in builders:
        root = WORK.parent / ("probe-task-" + task.split()[0].lower())
        if not (root / "lora.lock").exists():
            shutil.rmtree(root, ignore_errors=True)
            build_it(task, root)
            made = generate([root / "adapter"], root / "base", root / "lora.lock", device="cpu", probe=True)
            assert made.lock is not None, [f.to_dict() for f in made.report.findings]
        (row,) = read(root / "lora.lock")["probe"]["adapter"]
        locked = f"{row['effect-distance']} (distance)" if "effect-distance" in row else str(row["effect-kl"])
        cells = []
        for _, change in changes:
            case = WORK.parent / "probe-task-case"
            shutil.rmtree(case, ignore_errors=True)
            shutil.copytree(root, case)
            if change is not None:
                _edit(case / "adapter" / "adapter_model.safetensors", change)
            found = verify(case / "lora.lock", only={Category.EFFECT}, device="cpu").findings
            errors = [f.code.removeprefix("EFFECT-") for f in found if f.severity.value == "error"]
            cells.append(", ".join(errors) or "OK")
        print(f"| {task} | {locked} | " + " | ".join(cells) + " |")
    shutil.rmtree(WORK.parent / "probe-task-case", ignore_errors=True)


if __name__ == "__main__":
    main()
