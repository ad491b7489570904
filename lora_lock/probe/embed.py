"""The probe session of embedding models (PEFT ``FEATURE_EXTRACTION``): the base loads with ``AutoModel`` (no
head), and what the adapter changes is each prompt's embedding, the mean over its tokens of the last hidden state.

There is no token distribution to compare: the gates of :mod:`.embed_gate` measure distances between embeddings.
The batch-1 embedding of a prompt against the same prompt embedded in one right-padded batch with all the others
(the attention mask keeps the padding out of the mean) is the noise floor, as for a classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lora_lock.probe.effect import ProbeSession, finite

#: What the lock records as the embedding it measured (verify refuses another: it would compare other vectors).
POOLING = "mean-last-hidden-state"


class EmbeddingSession(ProbeSession):
    """An encoder (or any ``AutoModel`` base) with its adapter: one vector per prompt."""

    scores_golden = False

    def _hidden(self, ids: Any, mask: Any | None) -> Any:
        out = self.model(input_ids=ids, attention_mask=mask) if mask is not None else self.model(input_ids=ids)
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None:  # a tuple output (return_dict off in the config): the hidden states come first
            hidden = out[0]
        return hidden

    def batched(self, name: str, prompts: Sequence[list[int]]) -> list[Any]:
        """Adapter ``name``'s embedding of every prompt from one right-padded batch (fp32): the noise floor's
        second configuration."""
        torch = self.torch
        self.use(name)
        self.check_fits_model(prompts, "the probe prompts")
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts], device=self.device)
        mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts], device=self.device)
        with torch.inference_mode(), self.fits(f"the embedding pass over {len(prompts)} prompt(s)"):
            hidden = self._hidden(ids, mask).float()
        return [finite(hidden[row, : len(p)].mean(0), self.dtype_name) for row, p in enumerate(prompts)]

    def embeddings(
        self, name: str, prompts: Sequence[list[int]], tick: Callable[[], None] | None = None
    ) -> list[tuple[Any, Any, bool]]:
        """Adapted and base embeddings (fp32) of each prompt at batch 1 without padding, and whether the hidden
        states they pool are bitwise equal (the adapter does nothing). All adapted passes run first, then all
        base passes in one ``disable_adapter()`` block. ``tick()`` after each forward."""
        torch = self.torch
        self.use(name)
        self.check_fits_model(prompts, "the probe's locked prompts")

        def hidden(ids: list[int]) -> Any:
            state = self._hidden(torch.tensor([ids], device=self.device), None)[0]
            if tick is not None:
                tick()
            return finite(state.to(torch.float32, copy=True), self.dtype_name)

        with torch.inference_mode(), self.fits("the embedding model's adapted and base passes"):
            adapted = [hidden(ids) for ids in prompts]
            with self.model.disable_adapter():
                base = [hidden(ids) for ids in prompts]
        return [(x.mean(0), y.mean(0), bool(torch.equal(x, y))) for x, y in zip(adapted, base, strict=True)]
