"""The probe of encoder-decoder language models (PEFT ``SEQ_2_SEQ_LM``: T5, Flan-T5, mT5, BART): teacher-forced
decoder log-probs, same gates.

At lock time the adapter's greedy continuation of K decoder tokens is decoded one step at a time with the decoder's
KV cache (frozen in the sidecar, as for a causal LM); the K next-token distributions of one teacher-forced decoder
pass over ``decoder_start + continuation[:-1]`` are what the gates compare, adapted and inside
``disable_adapter()``. Cached step-by-step versus one full pass is the noise floor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lora_lock.probe.effect import ProbeSession, finite


class Seq2SeqSession(ProbeSession):
    """An encoder-decoder base with its adapters: rows are the decoder's next-token log-probs."""

    scores_golden = False

    def _start(self) -> int:
        config = self.model.get_base_model().config
        start = getattr(config, "decoder_start_token_id", None)
        if not isinstance(start, int):
            start = getattr(config, "pad_token_id", None)
        return start if isinstance(start, int) else 0

    def greedy(self, name: str, prompts: Sequence[list[int]], positions: int) -> list[tuple[list[int], Any]]:
        """Per prompt: the greedy decoder continuation of ``positions`` tokens (cached decoding, batch 1) and the
        log-prob rows of its steps."""
        torch = self.torch
        self.use(name)
        self.check_fits_model(prompts, "the probe prompts")
        out = []
        with torch.inference_mode(), self.fits("greedy decoding of the probe prompts"):
            for prompt in prompts:
                enc = torch.tensor([prompt], device=self.device)
                dec = torch.tensor([[self._start()]], device=self.device)
                step = self.model(input_ids=enc, decoder_input_ids=dec, use_cache=True)
                tokens: list[int] = []
                rows = []
                for index in range(positions):
                    logits = finite(step.logits[0, -1].float(), self.dtype_name)
                    rows.append(torch.log_softmax(logits, dim=-1))
                    token = int(logits.argmax())
                    tokens.append(token)
                    if index + 1 < positions:
                        step = self.model(
                            encoder_outputs=(step.encoder_last_hidden_state,),
                            decoder_input_ids=torch.tensor([[token]], device=self.device),
                            past_key_values=step.past_key_values,
                            use_cache=True,
                        )
                out.append((tokens, torch.stack(rows)))
        return out

    def passes(
        self, name: str, items: list[tuple[list[int], list[int]]], tick: Callable[[], None] | None = None
    ) -> list[tuple[Any, Any, bool]]:
        """Adapted and base teacher-forced decoder passes per ``(prompt_ids, continuation)`` item at batch 1."""
        torch = self.torch
        self.use(name)
        self.check_fits_model([ids for ids, _ in items] + [cont for _, cont in items], "the probe's locked ids")

        def scored(ids: list[int], cont: list[int]) -> Any:
            dec = torch.tensor([[self._start(), *cont[:-1]]], device=self.device)
            logits = self.model(input_ids=torch.tensor([ids], device=self.device), decoder_input_ids=dec).logits[0]
            if tick is not None:
                tick()
            return finite(logits.to(torch.float32, copy=True), self.dtype_name)

        with torch.inference_mode(), self.fits("the probe's teacher-forced decoder passes"):
            adapted = [scored(ids, cont) for ids, cont in items]
            with self.model.disable_adapter():
                base = [scored(ids, cont) for ids, cont in items]
        return [
            (torch.log_softmax(x, dim=-1), torch.log_softmax(y, dim=-1), bool(torch.equal(x, y)))
            for x, y in zip(adapted, base, strict=True)
        ]
