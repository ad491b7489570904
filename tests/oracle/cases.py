"""The oracle's cases: architectures × adapter scenarios, built lazily into one work directory and cached.

A case id is ``<model_type>/<scenario>``. Bases, adapters and PEFT's verdicts are computed once per
:class:`Oracle` (one per test session, one per ``bench/oracle_table.py`` run).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tests.oracle import scenarios
from tests.oracle.bases import Base, save_base
from tests.oracle.tiny_configs import HIDDEN, LAYERS
from tests.oracle.truth import Verdict, peft_truth

# The architectures: every family the oracle builds. Which class, config and names each gets is derived from
# transformers itself (bases.task_for, tiny_configs); this list only chooses the model types.
ARCHITECTURES: tuple[str, ...] = (
    # decoder LMs
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3", "gpt2", "gpt_neox",
    "gptj", "opt", "falcon", "bloom", "olmo", "olmo2", "cohere", "cohere2", "starcoder2", "stablelm", "persimmon",
    "granite", "exaone4", "glm", "glm4", "helium", "gpt_bigcode", "codegen", "mpt", "smollm3", "arcee", "apertus",
    "seed_oss", "openai-gpt", "xglm", "biogpt", "ctrl", "recurrent_gemma", "mamba", "falcon_h1",
    # MoE
    "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "gpt_oss", "granitemoe",
    "phimoe", "minimax", "ernie4_5_moe", "glm4_moe", "jamba",
    # VLMs
    "llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3", "paligemma", "idefics3", "smolvlm",
    "mllama", "aria", "internvl", "mistral3",
    # encoders
    "bert", "roberta", "distilbert", "electra", "deberta-v2", "xlm-roberta", "albert", "camembert", "modernbert",
    # seq2seq
    "t5", "mt5", "bart", "mbart", "pegasus", "marian", "blenderbot",
    # vision
    "vit", "deit", "beit", "dinov2", "swin", "convnext", "clip", "siglip",
    # speech
    "whisper", "wav2vec2", "hubert", "speech_to_text", "moonshine",
)  # fmt: skip

PEFT_SCENARIOS: dict[str, Callable[[Base, Path], Path | None]] = {
    "peft-attn": scenarios.peft_attn,
    "peft-all-linear": scenarios.peft_all_linear,
    "peft-regex": scenarios.peft_regex,
    "peft-head": scenarios.peft_head,
    "peft-experts": scenarios.peft_experts,
}
OLD_SCENARIOS: dict[str, Callable[[Base, Path, Path | None], Path | None]] = {
    "old-attn": scenarios.old_attn,
    "old-regex": scenarios.old_regex,
}
EXPERT_SCENARIOS: dict[str, Callable[[Base, Path], Path | None]] = {
    "old-experts": scenarios.old_experts,
    "old-experts-half": scenarios.old_experts_half,
}
# Wrong bases: the attention adapter onto the same architecture built wider, or with fewer layers.
WRONG_BASES = {
    "wrong-hidden": {"hidden": HIDDEN + 16, "layers": LAYERS},
    "wrong-layers": {"hidden": HIDDEN, "layers": 1},
}
SCENARIOS = (*PEFT_SCENARIOS, *OLD_SCENARIOS, *EXPERT_SCENARIOS, *WRONG_BASES)


@dataclass(frozen=True)
class Case:
    """One (base, adapter) pair."""

    arch: str
    scenario: str
    base: Base
    adapter: Path

    @property
    def id(self) -> str:
        return f"{self.arch}/{self.scenario}"


class Oracle:
    """Builds bases and adapters under ``root`` on first use and remembers them and PEFT's verdicts."""

    def __init__(self, root: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # Tiny tensors: one thread is fastest, and the oracle must not compete for the cores it shares.
        torch.set_num_threads(1)
        self.root = root
        self._bases: dict[tuple[str, str], Base | Exception] = {}
        self._cases: dict[str, list[Case]] = {}
        self._truth: dict[str, Verdict] = {}
        self.unbuilt: dict[str, str] = {}  # case id -> why its adapter could not be made

    def base(self, arch: str, variant: str = "base") -> Base:
        """The tiny base of ``arch`` (``variant`` names a wrong base); raises what building it raised."""
        key = (arch, variant)
        if key not in self._bases:
            sizes = WRONG_BASES.get(variant, {})
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._bases[key] = save_base(arch, self.root / arch / variant, **sizes)
            except Exception as exc:
                self._bases[key] = exc
        found = self._bases[key]
        if isinstance(found, Exception):
            raise found
        return found

    def cases(self, arch: str) -> list[Case]:
        """Every scenario that applies to ``arch``, its adapter built."""
        if arch in self._cases:
            return self._cases[arch]
        base = self.base(arch)
        out = self.root / arch / "adapters"
        built: dict[str, Path] = {}
        makers: list[tuple[str, Callable[[], Path | None]]] = [
            *((name, lambda make=make, name=name: make(base, out / name)) for name, make in PEFT_SCENARIOS.items()),
            *(
                (name, lambda make=make, name=name: make(base, out / name, built.get(name.replace("old-", "peft-"))))
                for name, make in OLD_SCENARIOS.items()
            ),
            *((name, lambda make=make, name=name: make(base, out / name)) for name, make in EXPERT_SCENARIOS.items()),
        ]
        for name, make in makers:
            try:
                with warnings.catch_warnings():
                    # PEFT's warnings while creating an adapter are not the behaviour under test.
                    warnings.simplefilter("ignore")
                    path = make()
            except Exception as exc:
                self.unbuilt[f"{arch}/{name}"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                continue
            if path is not None:
                built[name] = path
        cases = [Case(arch, name, base, path) for name, path in built.items()]
        if "peft-attn" in built:
            for variant in WRONG_BASES:
                try:
                    cases.append(Case(arch, variant, self.base(arch, variant), built["peft-attn"]))
                except Exception:
                    continue
        self._cases[arch] = cases
        return cases

    def truth(self, case: Case) -> Verdict:
        """PEFT's verdict on ``case`` (computed once)."""
        if case.id not in self._truth:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._truth[case.id] = peft_truth(case.base, case.adapter)
        return self._truth[case.id]
