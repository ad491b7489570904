"""The probe of sequence and token classifiers (PEFT ``SEQ_CLS``, ``TOKEN_CLS``) and of extractive question
answering (``QUESTION_ANS``): class log-probs, same gates.

A classifier has no continuation to decode: each probe prompt gives one class distribution (a sequence
classifier) or one per token (a token classifier). Those rows take the place of the next-token rows of a causal
LM, so the lock's fingerprints and every gate are the same: no effect (adapted and base bitwise equal), effect
changed (KL ratio), drift (KL to the locked top-k), confident flips of the argmax class (margin ≥ 1 nat), base
drift reported apart. The fingerprint's ``continuation`` is the argmax class of each row. The noise floor is the
KL between the batch-1 pass and the same prompt scored in one right-padded batch with all the others.

Question answering gives two rows per prompt, the answer's start and its end, each a distribution over the
prompt's token positions (its padding left out): the positions are the classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lora_lock.probe.effect import ProbeSession, finite
from lora_lock.probe.tasks import CLASSIFIER_TASKS, EMBEDDING_TASKS, QUESTION_TASKS, task_of


def open_session(
    base_dir: Path, tokenizer_dir: Path, adapters: Sequence[tuple[str, Path]], **options: Any
) -> ProbeSession:
    """A :class:`ClassifierSession` for a classifier adapter, a :class:`~lora_lock.probe.seq2seq.Seq2SeqSession`
    for an encoder-decoder one, an :class:`~lora_lock.probe.embed.EmbeddingSession` for an embedding model (they
    load alone: their own auto class), a :class:`ProbeSession` else."""
    from lora_lock.probe.embed import EmbeddingSession
    from lora_lock.probe.seq2seq import Seq2SeqSession

    task = task_of(adapters[0][1]) if adapters else None
    if task in EMBEDDING_TASKS:
        return EmbeddingSession(base_dir, tokenizer_dir, adapters, **options)
    if task == "SEQ_2_SEQ_LM":
        return Seq2SeqSession(base_dir, tokenizer_dir, adapters, **options)
    if task in QUESTION_TASKS:
        return SpanSession(base_dir, tokenizer_dir, adapters, **options)
    if task in CLASSIFIER_TASKS:
        return ClassifierSession(base_dir, tokenizer_dir, adapters, **options)
    return ProbeSession(base_dir, tokenizer_dir, adapters, **options)


class ClassifierSession(ProbeSession):
    """A classifier base with its adapter: the rows it scores are class log-probs."""

    scores_golden = False

    def _logits(self, out: Any) -> Any:
        """The class logits of a forward's output, ``[batch, …, classes]``."""
        return out.logits

    def _rows(self, logits: Any, length: int) -> Any:
        """The class rows of one sequence: its one row (sequence classifier) or its first ``length`` rows."""
        return logits.unsqueeze(0) if logits.dim() == 1 else logits[:length]

    def _length(self, ids: list[int], classes: list[int]) -> int:
        """The ``length`` that :meth:`_rows` keeps of a batch-1 pass: as many rows as the lock holds classes."""
        return len(classes)

    def greedy(self, name: str, prompts: Sequence[list[int]], positions: int) -> list[tuple[list[int], Any]]:
        """Per prompt: the argmax class of each row, and the rows' log-probs from one right-padded batch of all
        prompts (a numerically different configuration than the batch-1 passes: the noise floor)."""
        torch = self.torch
        self.use(name)
        self.check_fits_model(prompts, "the probe prompts")
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts], device=self.device)
        mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts], device=self.device)
        with torch.inference_mode(), self.fits(f"the classifier pass over {len(prompts)} prompt(s)"):
            logits = self._logits(self.model(input_ids=ids, attention_mask=mask)).float()
        out = []
        for row, prompt in enumerate(prompts):
            logp = torch.log_softmax(finite(self._rows(logits[row], len(prompt)), self.dtype_name), dim=-1)
            out.append(([int(i) for i in logp.argmax(-1).tolist()], logp))
        return out

    def passes(
        self, name: str, items: list[tuple[list[int], list[int]]], tick: Callable[[], None] | None = None
    ) -> list[tuple[Any, Any, bool]]:
        """Adapted and base class rows per ``(prompt_ids, classes)`` item at batch 1, and whether they are
        bitwise equal. ``classes`` only fixes how many rows there are."""
        torch = self.torch
        self.use(name)
        self.check_fits_model([ids for ids, _ in items], "the probe's locked prompts")

        def scored(ids: list[int], cont: list[int]) -> Any:
            logits = self._logits(self.model(input_ids=torch.tensor([ids], device=self.device)))[0]
            if tick is not None:
                tick()
            return finite(self._rows(logits, self._length(ids, cont)).to(torch.float32, copy=True), self.dtype_name)

        with torch.inference_mode(), self.fits("the classifier's adapted and base passes"):
            adapted = [scored(ids, cont) for ids, cont in items]
            with self.model.disable_adapter():
                base = [scored(ids, cont) for ids, cont in items]
        return [
            (torch.log_softmax(x, dim=-1), torch.log_softmax(y, dim=-1), bool(torch.equal(x, y)))
            for x, y in zip(adapted, base, strict=True)
        ]


class SpanSession(ClassifierSession):
    """An extractive question-answering base (PEFT ``QUESTION_ANS``) with its adapter: two rows per prompt, the
    distributions of the answer's start and of its end over the prompt's tokens (the classes are positions)."""

    def _logits(self, out: Any) -> Any:
        return self.torch.stack([out.start_logits, out.end_logits], dim=1)  # [batch, 2, tokens]

    def _rows(self, logits: Any, length: int) -> Any:
        """Both rows, over the sequence's first ``length`` positions (its padding is no answer position)."""
        return logits[:, :length]

    def _length(self, ids: list[int], classes: list[int]) -> int:
        return len(ids)
