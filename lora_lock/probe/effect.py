"""The adapter-effect probe: one model load, adapted and base passes, compact fingerprints.

At lock time the adapter's own greedy continuation of K tokens is generated for all prompts together
(left-padded, KV cache; frozen and stored in the sidecar). Then, per prompt at batch 1 without padding, one
teacher-forced pass over prompt + continuation with the adapter and one inside ``disable_adapter()`` give the K
next-token distributions, in fp32 log-softmax. We keep the top-k ids and log-probs of both passes, KL(adapted ‖
base) as the effect size, and KL(batch-1 full pass ‖ batched incremental decoding) — the same distributions
computed two numerically different ways — as the noise floor of this stack. Verify re-runs only the two
teacher-forced passes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError, ProbeMemoryError, ProbeUnavailableError, library_failure
from lora_lock.probe.decode import Decoding, Stop, decode_batch
from lora_lock.probe.model_load import StackRequest, load_stack, out_of_memory
from lora_lock.probe.numerics import (  # re-exported: the probe's modules and tests import them from here
    DIGITS,
    _device,
    _dtype_name,
    _first_line,
    finite,
    gather,
    kl,
    memory_hint,
    rounded,
    top_k,
)

#: Prompts decoded together at lock time: bounded, so the KV cache and the kept log-probs stay small on big models,
#: and in prompt order, so the batches are the same on every run.
DECODE_BATCH = 16


def require_probe_stack(*, without: str = "--no-probe") -> None:
    """Raise a clear error when torch / transformers / peft are not installed. ``without``: how the caller's
    command runs without the probe (``generate --no-probe``, ``verify --skip effect,golden``)."""
    import importlib.util

    missing = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise ProbeUnavailableError(
            f"the effect probe needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            "installed here",
            hint=f"pip install 'lora-lock[probe]' (with the torch build for your hardware), or pass {without}",
        )


@dataclass
class ProbeRuntime:
    """Where the probe ran: device kind, dtype, attention implementation, torch and CUDA versions, GPU name."""

    device: str
    dtype: str
    attn_implementation: str
    torch: str
    cuda: str | None
    gpu: str | None


class ProbeSession:
    """A base loaded once, with every adapter attached by name (PEFT multi-adapter)."""

    #: Whether the golden set (text generation and multiple-choice items of a causal LM) applies to this session.
    scores_golden = True

    def __init__(
        self,
        base_dir: Path,
        tokenizer_dir: Path,
        adapters: Sequence[tuple[str, Path]],
        *,
        device: str = "auto",
        dtype: str = "auto",
        command: str = "generate",
    ) -> None:
        require_probe_stack()
        self.command = command
        import torch

        self.torch = torch
        stack = load_stack(torch, StackRequest(base_dir, tokenizer_dir, adapters, device, dtype, command))
        self.device, self.dtype_name = stack.device, stack.dtype_name
        self.tokenizer: Any = stack.tokenizer
        self._peft_names = stack.peft_names
        self.model: Any = stack.model
        self.names = [name for name, _ in adapters]

    @contextmanager
    def fits(self, what: str) -> Iterator[None]:
        """Every forward runs in here. Out of memory becomes a clear error naming what ran and where; any other
        failure inside torch/transformers/peft (a model that changed under the lock in a way the static checks
        describe) becomes unusable input, so the report keeps the drift those checks found."""
        try:
            yield
        except BaseException as exc:
            if not library_failure(exc):
                raise
            if out_of_memory(self.torch, exc):
                raise ProbeMemoryError(
                    f"{what} ran out of memory on {self.device} in {self.dtype_name}",
                    hint=memory_hint(self.command, "use a device with more memory, shorter prompts"),
                ) from exc
            raise InputError(
                f"{what} failed in the model: {type(exc).__name__}: {_first_line(exc)}",
                hint="the base or the stack changed since the lock (see the other findings); if nothing did, "
                "please report this",
            ) from exc

    def release(self) -> None:
        """Return cached device memory after an out-of-memory error (before a retry with less)."""
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()

    def eos_ids(self) -> frozenset[int]:
        """Every end-of-sequence id: the tokenizer's and the generation config's (chat models end a turn with
        another token than the tokenizer's EOS, e.g. Llama-3's ``<|eot_id|>``), as ``generate`` would stop."""
        ids: set[int] = set()
        config = getattr(self.model.get_base_model(), "generation_config", None)
        for value in (self.tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(v for v in value if isinstance(v, int))
        return frozenset(ids)

    def runtime(self) -> ProbeRuntime:
        """The runtime facts of this session's loaded model, as the lock's probe section records them."""
        torch = self.torch
        base = self.model.get_base_model()
        gpu = torch.cuda.get_device_name(torch.device(self.device)) if self.device.startswith("cuda") else None
        return ProbeRuntime(
            device=self.device.split(":")[0],
            dtype=self.dtype_name,
            attn_implementation=str(getattr(base.config, "_attn_implementation", None) or "default"),
            torch=str(torch.__version__),
            cuda=torch.version.cuda,
            gpu=gpu,
        )

    def encode(self, prompt: str, *, special: bool | None = None, generation: bool = False) -> list[int]:
        """Token ids of ``prompt``. ``special=None`` decides BOS as lm-evaluation-harness 0.4.13 does: the
        tokenizer's own special tokens, except none when the text already starts with the prefix token's text
        (a rendered chat template carries its BOS, and a second one would change every score). lm-eval compares
        log-likelihood contexts with the decoded prefix token (BOS, else EOS) and generation prompts with the
        ``bos_token`` string; ``generation`` picks the latter."""
        if special is None:
            special = not self._starts_with_prefix(prompt, generation)
        try:
            ids = list(self.tokenizer(prompt, add_special_tokens=special)["input_ids"])
        except BaseException as exc:  # the tokenizers library panics (a BaseException) on a pathological regex
            if not library_failure(exc):
                raise
            raise InputError(
                f"the tokenizer fails on a probe prompt: {type(exc).__name__}: {_first_line(exc)}",
                hint="see the tokenizer findings: its tokenizer.json cannot encode ordinary text",
            ) from exc
        if not ids:
            raise InputError("a probe prompt tokenizes to nothing", hint="remove empty prompts from the file")
        return [int(i) for i in ids]

    def _starts_with_prefix(self, prompt: str, generation: bool) -> bool:
        tok = self.tokenizer
        if generation:
            marker = tok.bos_token
        else:
            prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            marker = tok.decode(prefix) if prefix is not None else None
        return isinstance(marker, str) and bool(marker) and prompt.startswith(marker)

    def use(self, name: str) -> None:
        """Activate adapter ``name`` (PEFT's set_adapter costs about a millisecond: only when it changes)."""
        if getattr(self, "_active", None) != name:
            self.model.set_adapter(self._peft_names[name])
            self._active = name

    def greedy(self, name: str, prompts: Sequence[list[int]], positions: int) -> list[tuple[list[int], Any]]:
        """Adapter ``name``'s greedy continuation of every prompt with the KV cache, and its per-step log-probs
        (fp32). All prompts decode together, left-padded, so the K sequential steps are K batched forwards rather
        than K per prompt. The log-probs therefore come from a numerically different configuration (batch,
        padding, cache) than the batch-1 teacher-forced passes: that difference is the lock-time noise floor."""
        self.use(name)
        self.check_length(prompts, positions, "probe prompt")
        return self._decode_all(prompts, positions, None)

    def check_length(self, prompts: Sequence[list[int]], new: int, what: str, numbers: Sequence[int] = ()) -> None:
        """Refuse a sequence longer than the model's position table (learned positions would index past it)."""
        limit = self._positions()
        if limit is None:
            return
        for index, ids in enumerate(prompts):
            if len(ids) + new > limit:
                number = numbers[index] if numbers else index + 1
                raise InputError(
                    f"{what} {number}: {len(ids)} tokens + {new} to generate exceed the model's {limit} positions",
                    hint="shorten it, or lower max_new_tokens",
                )

    def check_fits_model(self, seqs: Sequence[Sequence[int]], what: str) -> None:
        """Refuse token ids the model has no embedding for, and sequences longer than its position table: at
        verify time the locked ids meet today's model, which may have a smaller vocabulary (the static checks
        report that change; the probe must not crash on it and take their report with it)."""
        vocab = int(self.model.get_base_model().get_input_embeddings().weight.shape[0])
        positions = self._positions()
        for seq in seqs:
            top = max(seq, default=0)
            if top >= vocab:
                raise InputError(
                    f"{what}: token id {top} is outside the model's vocabulary of {vocab}",
                    hint="the base or tokenizer changed since the lock (see the base and tokenizer findings)",
                )
            if positions is not None and len(seq) > positions:
                raise InputError(
                    f"{what}: {len(seq)} tokens exceed the model's {positions} positions",
                    hint="the base changed since the lock (see the base findings)",
                )

    def _positions(self) -> int | None:
        """The size of the model's position table, when its config says."""
        config = self.model.get_base_model().config.get_text_config()  # a VLM's positions are its text model's
        limit = next(
            (v for v in (getattr(config, a, None) for a in ("max_position_embeddings", "n_positions")) if v), None
        )
        return limit if isinstance(limit, int) and not isinstance(limit, bool) else None

    def generate(
        self, name: str, prompts: Sequence[list[int]], limit: int, stop: Stop, eos: frozenset[int]
    ) -> list[list[int]]:
        """Greedy generation for the golden set, ``prompts`` decoded together: a row ends before an ``eos``
        token, or after a token for which ``stop(row, tokens)`` is true (a stop string, its own token limit), or
        after ``limit`` tokens; the batch ends when every row has."""
        self.use(name)
        return [tokens for tokens, _ in self._decode_all(prompts, limit, stop, eos)]

    def _decode_all(
        self, prompts: Sequence[list[int]], limit: int, stop: Stop | None, eos: frozenset[int] = frozenset()
    ) -> list[tuple[list[int], Any]]:
        """:meth:`_decode` over ``DECODE_BATCH`` prompts at a time, in order; one at a time for a model whose
        forward takes no position ids (left padding needs them)."""
        size = DECODE_BATCH if self._accepts("position_ids") else 1
        out: list[tuple[list[int], Any]] = []
        for start in range(0, len(prompts), size):
            out += self._decode(prompts[start : start + size], limit, stop, eos, start)
        return out

    def _accepts(self, parameter: str) -> bool:
        """Whether the base model's forward takes ``parameter`` (``position_ids``, ``logits_to_keep``)."""
        import inspect

        if not hasattr(self, "_parameters"):
            self._parameters = set(inspect.signature(self.model.get_base_model().forward).parameters)
        return parameter in self._parameters

    def _decode(
        self, prompts: Sequence[list[int]], limit: int, stop: Stop | None, eos: frozenset[int], first_row: int
    ) -> list[tuple[list[int], Any]]:
        """Batched greedy decoding with the KV cache: per row its tokens and, without ``stop``, the log-prob rows
        of every step (``None`` with ``stop``: generation keeps no distributions). ``stop`` numbers rows from
        ``first_row``."""
        self.check_fits_model(prompts, "the prompts to decode")
        last_logits = self._accepts("logits_to_keep")
        return decode_batch(self, Decoding(prompts, limit, stop, eos, first_row, last_logits, self._positions()))

    def passes(
        self, name: str, items: list[tuple[list[int], list[int]]], tick: Callable[[], None] | None = None
    ) -> list[tuple[Any, Any, bool]]:
        """Teacher-forced adapted and base passes over ``(prompt_ids, continuation)`` items, one forward each and
        batch 1: the K next-token log-prob rows in fp32, and whether adapted and base logits are bitwise equal
        (the adapter does nothing). All adapted passes run first, then all base passes in one
        ``disable_adapter()`` block (entering it costs milliseconds). ``tick()`` after each forward."""
        torch = self.torch
        self.use(name)
        self.check_fits_model([ids + cont for ids, cont in items], "the probe's locked prompts and continuations")
        windows = [(len(ids) - 1, len(ids) + len(cont) - 1) for ids, cont in items]
        seqs = [torch.tensor([ids + cont], device=self.device) for ids, cont in items]

        def scored(seq: Any, window: tuple[int, int]) -> Any:
            a, b = window
            if self._accepts("logits_to_keep"):  # the lm_head only for the K scored rows (+ the last)
                logits = self.model(input_ids=seq, use_cache=False, logits_to_keep=seq.shape[1] - a).logits[0, :-1]
            else:
                logits = self.model(input_ids=seq, use_cache=False).logits[0, a:b]
            if tick is not None:
                tick()
            # A copy in fp32: a view would pin the forward's whole [sequence, vocabulary] logits.
            return finite(logits.to(self.torch.float32, copy=True), self.dtype_name)

        with torch.inference_mode(), self.fits("the probe's teacher-forced passes"):
            adapted = [scored(s, w) for s, w in zip(seqs, windows, strict=True)]
            with warnings.catch_warnings(), self.model.disable_adapter():
                # PEFT warns that an adapter trained with bias="all" keeps its biases when disabled: the "base"
                # pass is then base + biases, at lock and at verify alike (see load_groups), so it is not news.
                warnings.filterwarnings("ignore", message="Careful, disabling adapter layers", category=UserWarning)
                base = [scored(s, w) for s, w in zip(seqs, windows, strict=True)]
        return [
            (torch.log_softmax(x, dim=-1), torch.log_softmax(y, dim=-1), bool(torch.equal(x, y)))
            for x, y in zip(adapted, base, strict=True)
        ]


__all__ = [
    "DIGITS",
    "ProbeMemoryError",
    "ProbeRuntime",
    "ProbeSession",
    "_device",
    "_dtype_name",
    "finite",
    "gather",
    "kl",
    "memory_hint",
    "rounded",
    "top_k",
]
