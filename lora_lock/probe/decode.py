"""Batched greedy decoding with the KV cache, for the probe's lock-time continuations and the golden set's
generation items: prompts left-padded into one batch, position ids that follow each row's own length, and rows
that end on their own (an end-of-sequence token, a stop rule) while the batch steps on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lora_lock.probe.numerics import finite

#: ``stop(row, tokens)``: does the generation of ``row`` end with its newest token ``tokens[-1]`` (kept)?
Stop = Callable[[int, list[int]], bool]


@dataclass(frozen=True)
class Decoding:
    """One batch to decode: its prompts' token ids, at most ``limit`` steps, when a row ends (``stop``, which
    numbers rows from ``first_row``, and the ``eos`` ids), and what the model's forward takes: only the last
    position's logits (``last_logits``), and a position table of ``positions`` rows when its config says."""

    prompts: Sequence[list[int]]
    limit: int
    stop: Stop | None
    eos: frozenset[int]
    first_row: int
    last_logits: bool = False
    positions: int | None = None


@dataclass
class _Rows:
    """Each row's tokens so far, and the rows still open."""

    batch: Decoding
    tokens: list[list[int]] = field(init=False)
    open: set[int] = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = [[] for _ in self.batch.prompts]
        self.open = set(range(len(self.batch.prompts)))

    def take(self, step_tokens: list[int]) -> None:
        """Append one step's argmax token to each open row, closing rows that end with it."""
        stop, eos = self.batch.stop, self.batch.eos
        for i, t in enumerate(step_tokens):
            if i not in self.open:
                continue
            if t in eos:  # an end-of-sequence token is not part of the output
                self.open.discard(i)
                continue
            self.tokens[i].append(int(t))
            if stop is not None and stop(self.batch.first_row + i, self.tokens[i]):
                self.open.discard(i)


def _padded(torch: Any, prompts: Sequence[list[int]], device: str) -> tuple[Any, Any, dict[str, Any]]:
    """The left-padded ids and attention mask of ``prompts``, and the position ids a batch of several needs (each
    row counts its positions from its first real token)."""
    width = max(len(ids) for ids in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    extra: dict[str, Any] = {}
    if len(prompts) > 1:
        extra["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
    return ids, mask, extra


def _next_positions(position_ids: Any, positions: int | None) -> Any:
    """The position ids of the next step. A row that has ended still steps along with the batch; its output is
    dropped, but a learned position table must not be indexed past its end (each open row was checked to fit)."""
    position_ids = position_ids[:, -1:] + 1
    return position_ids if positions is None else position_ids.clamp_max(positions - 1)


def decode_batch(session: Any, batch: Decoding) -> list[tuple[list[int], Any]]:
    """Greedy decoding of ``batch`` with the model of ``session`` (a
    :class:`~lora_lock.probe.effect.ProbeSession`): per row its tokens and, without ``stop``, the log-prob rows of
    every step (``None`` with ``stop``: generation keeps no distributions)."""
    torch, model = session.torch, session.model
    ids, mask, extra = _padded(torch, batch.prompts, session.device)
    first = {"logits_to_keep": 1} if batch.last_logits else {}
    steps: list[Any] = []
    rows = _Rows(batch)
    with torch.inference_mode(), session.fits(f"greedy decoding of {len(batch.prompts)} prompt(s)"):
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, **extra, **first)
        for step in range(batch.limit):
            logits = finite(out.logits[:, -1].float(), session.dtype_name)
            if batch.stop is None:
                steps.append(torch.log_softmax(logits, dim=-1))
            token = logits.argmax(-1, keepdim=True)
            rows.take(token[:, 0].tolist())
            if step + 1 == batch.limit or not rows.open:
                break
            mask = torch.cat([mask, torch.ones_like(token)], dim=-1)
            if "position_ids" in extra:
                extra["position_ids"] = _next_positions(extra["position_ids"], batch.positions)
            out = model(
                input_ids=token, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True, **extra
            )
    logps = torch.stack(steps, dim=1) if steps else None
    return [(rows.tokens[i], None if logps is None else logps[i]) for i in range(len(batch.prompts))]
