"""What real PEFT does with an (adapter, base) pair on the installed stack: applies, drops N tensors, or raises.

The pair is loaded as a user loads it, ``PeftModel.from_pretrained(Auto….from_pretrained(base), adapter)``.
An adapter tensor *landed* when its values are found in the loaded model's adapter weights (as they are, or as a
block of a tensor PEFT fused them into), so a tensor PEFT skipped, or converted into nothing, is counted however
the load reported it. Where the model takes token ids alone, the output with the adapter is compared with
``disable_adapter()``: an adapter that landed but changes nothing is a drop too.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import peft
import torch
from safetensors.torch import load_file

from tests.oracle.bases import TEXT_TASKS, Base, load

ADAPTER_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class Verdict:
    """``outcome`` is ``applies`` / ``drops`` / ``raises``; ``dropped`` counts adapter tensors that did not land."""

    outcome: str
    dropped: int = 0
    message: str | None = None
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __str__(self) -> str:
        if self.outcome == "drops":
            return f"drops {self.dropped}"
        if self.outcome == "raises":
            return f'raises "{(self.message or "")[:120]}"'
        return self.outcome


def _adapter_weights(peft_model: Any) -> list[torch.Tensor]:
    return [t.detach() for k, t in peft_model.state_dict().items() if ".default." in k or k.endswith(".default")]


def _as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(1, -1) if tensor.dim() < 2 else tensor.reshape(-1, tensor.shape[-1])


def _fingerprint(tensor: torch.Tensor) -> tuple[tuple[int, ...], str, bytes]:
    data = tensor.detach().contiguous()
    return tuple(data.shape), str(data.dtype), hashlib.sha1(data.numpy().tobytes()).digest()


def _segment_in(vector: torch.Tensor, spaces: list[torch.Tensor]) -> bool:
    """Is ``vector`` a contiguous run of one row of one of the ``spaces`` (matrices)?"""
    length = vector.shape[0]
    for space in spaces:
        if length > space.shape[1]:
            continue
        for i, j in torch.nonzero(space == vector[0]).tolist()[:16]:
            if torch.equal(space[i, j : j + length], vector):
                return True
    return False


def _found(needle: torch.Tensor, haystack: list[torch.Tensor]) -> bool:
    """Did ``needle``'s values land in one of the ``haystack`` tensors (the loaded model's adapter weights)?

    Every row, or every column, of the needle must appear as a contiguous run in a row or column of a loaded tensor:
    that covers tensors PEFT loaded as they are, stacked per expert, placed on a block diagonal, or interleaved by
    rank when it fused per-expert LoRA. Random values make the match exact and unambiguous.
    """
    if needle.numel() == 0:
        return True
    wanted = _as_matrix(needle)
    spaces: list[torch.Tensor] = []
    for tensor in haystack:
        if tensor.dtype == needle.dtype:
            matrix = _as_matrix(tensor)
            spaces.extend((matrix, matrix.T))
    return any(all(_segment_in(vector, spaces) for vector in side) for side in (wanted, wanted.T))


def _inputs(base: Base, model: Any) -> dict[str, torch.Tensor] | None:
    if base.auto not in TEXT_TASKS:
        return None
    ids = torch.tensor([[3, 5, 7, 11, 13, 17, 19, 23]])
    inputs = {"input_ids": ids}
    if getattr(model.config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids[:, :4]
    return inputs


def _output(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    logits: torch.Tensor = out.logits if getattr(out, "logits", None) is not None else out[0]
    return logits


def _first_words(exc: BaseException) -> str:
    """The exception's first line; for a state-dict error, with its first reason (``size mismatch for …``)."""
    lines = [line.strip() for line in f"{type(exc).__name__}: {exc}".splitlines() if line.strip()]
    return " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else lines[0]


def peft_truth(base: Base, adapter: Path) -> Verdict:
    """Load ``adapter`` onto ``base`` with real PEFT and classify what happened."""
    model = load(base)
    results: list[Any] = []
    original = peft.PeftModel.load_adapter

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        results.append(result)
        return result

    with warnings.catch_warnings(record=True) as caught, mock.patch.object(peft.PeftModel, "load_adapter", recording):
        warnings.simplefilter("always")
        try:
            peft_model = peft.PeftModel.from_pretrained(model, str(adapter))
        except Exception as exc:
            return Verdict("raises", message=_first_words(exc))
    peft_model.eval()
    saved = load_file(str(adapter / ADAPTER_FILE))
    landed_in = _adapter_weights(peft_model)
    as_loaded = {_fingerprint(t) for t in landed_in}
    missing = sorted(k for k, t in saved.items() if _fingerprint(t) not in as_loaded and not _found(t, landed_in))
    detail: dict[str, Any] = {
        "not_landed": missing,
        "unexpected_keys": sorted(getattr(results[0], "unexpected_keys", []) if results else []),
        "missing_keys": sorted(getattr(results[0], "missing_keys", []) if results else []),
        "warnings": sorted({str(w.message)[:200] for w in caught}),
    }
    inputs = _inputs(base, model)
    if inputs is not None:
        try:
            with_adapter = _output(peft_model, inputs)
            with peft_model.disable_adapter():
                without = _output(peft_model, inputs)
            detail["output_changed"] = not torch.equal(with_adapter, without)
        except Exception as exc:
            detail["forward_error"] = f"{type(exc).__name__}: {exc}"[:200]
    if missing:
        return Verdict("drops", dropped=len(missing), detail=detail)
    if detail.get("output_changed") is False:
        return Verdict("drops", dropped=len(saved), detail=detail)
    return Verdict("applies", detail=detail)
