"""Helpers of the probe session with no state: numerics (finite logits, KL, top-k, gather), device and dtype
choice, error texts. torch is imported by the caller and passed in, or imported inside a function."""

from __future__ import annotations

from typing import Any

from lora_lock.errors import InputError

DIGITS = 6  # significant digits kept for stored floats: deterministic text, far below any gate


def rounded(x: float) -> float:
    """``x`` rounded to ``DIGITS`` significant digits, so stored floats print the same on every run."""
    return float(f"{x:.{DIGITS}g}")


def memory_hint(command: str, first: str) -> str:
    """What to do when the model or a forward does not fit, with options the running command has: ``verify``
    scores in the dtype the lock records (another dtype would change what is compared), so a smaller dtype is
    chosen when the lock is generated."""
    if command == "verify":
        return f"{first}, or --skip effect,golden; to need less memory, generate the lock with --dtype bfloat16"
    return f"{first}, --dtype bfloat16, or --no-probe"


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The start of a library's error (PEFT's size-mismatch errors run to hundreds of lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = " ".join(lines[:2]) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def finite(logits: Any, dtype: str) -> Any:
    """Infinite or NaN logits would turn every KL into NaN, and NaN passes no gate: refuse them."""
    if not bool(logits.isfinite().all()):
        raise InputError(
            f"the model's logits are not finite in {dtype} (an overflow): the probe cannot measure the adapter",
            hint="lock the probe in bfloat16 or float32 (generate --dtype)",
        )
    return logits


def kl(p_log: Any, q_log: Any) -> float:
    """Mean over positions of KL(p ‖ q) for full distributions given as log-probs."""
    value = (p_log.exp() * (p_log - q_log)).sum(-1).clamp_min(0).mean()
    return float(value.item())


def top_k(logp: Any, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """The ``k`` most likely ids per position and their log-probs, ties in id order. ``topk`` breaks ties in no
    documented order, ``argmax`` at the first maximum: a stable descending sort gives the same top-1 as the
    ``argmax`` that verify and greedy decoding use (bf16 and fp16 logits tie often)."""
    values, ids = logp.sort(dim=-1, descending=True, stable=True)
    width = min(k, logp.shape[-1])
    return ids[..., :width].tolist(), [[rounded(v) for v in row] for row in values[..., :width].tolist()]


def gather(logp: Any, ids: list[list[int]]) -> tuple[list[list[float]], list[int]]:
    """Log-probs at the given ids per position, and each position's argmax."""
    import torch

    top = max((i for row in ids for i in row), default=0)
    if top >= logp.shape[-1]:
        raise InputError(
            f"the lock's probe fingerprints hold token id {top}; the model now has {logp.shape[-1]} output logits",
            hint="the base's vocabulary changed since the lock (see the base and tokenizer findings)",
        )
    index = torch.tensor(ids, dtype=torch.long, device=logp.device)
    return logp.gather(-1, index).tolist(), logp.argmax(-1).tolist()


def _quiet_libraries() -> None:
    """No load progress bars or advisory logs in our output (the report is the output)."""
    from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    disable_progress_bars()


def _device(torch: Any, device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(  # an explicit request that cannot be met: exit 2, not a quiet skip
            "--device cuda was asked for, but torch sees no CUDA device here",
            hint="run on a GPU runner, or pass --device cpu",
        )
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    if device.startswith("cuda:"):
        index = device.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise InputError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s) here")
    return device


def _dtype_name(torch: Any, device: str, dtype: str) -> str:
    if dtype == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise InputError(f"--dtype {dtype!r}: expected auto, float32, bfloat16 or float16")
    return dtype
