"""Which adapters the behaviour checks can measure, and with which transformers auto class the base loads.

Probed: causal language models (PEFT ``task_type`` ``CAUSAL_LM`` or none), including the text path of
vision-language models (``…ForConditionalGeneration`` bases such as Llava or Qwen2-VL, loaded with
``AutoModelForImageTextToText`` and run on token ids alone: no image is needed to score text), encoder-decoder LMs
(``SEQ_2_SEQ_LM``: teacher-forced decoder log-probs, see :mod:`.seq2seq`) and sequence / token classifiers
(``SEQ_CLS``, ``TOKEN_CLS``: class log-probs, see :mod:`.classify`), extractive question answering
(``QUESTION_ANS``: the answer span's start and end distributions over the prompt's tokens, see :mod:`.classify`)
and embedding models (``FEATURE_EXTRACTION``: each prompt's mean-pooled last hidden state, see :mod:`.embed`). Any
other task type is named in an ``EFFECT-TASK`` finding, never skipped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Severity

#: Classifier task types and the auto class that loads their base with its head: the probe compares the
#: class distributions (one row per sequence, or per token), the golden set does not apply.
CLASSIFIER_TASKS = {"SEQ_CLS": "AutoModelForSequenceClassification", "TOKEN_CLS": "AutoModelForTokenClassification"}
#: Extractive question answering: start and end of the answer span, two distributions over the prompt's tokens.
QUESTION_TASKS = {"QUESTION_ANS": "AutoModelForQuestionAnswering"}
#: Embedding models: the base loads without a head, the probe compares embeddings (:mod:`.embed`).
EMBEDDING_TASKS = {"FEATURE_EXTRACTION": "AutoModel"}
#: Encoder-decoder LMs, probed on teacher-forced decoder log-probs (:mod:`.seq2seq`).
OWN_CLASS_TASKS = {
    **CLASSIFIER_TASKS,
    **QUESTION_TASKS,
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    **EMBEDDING_TASKS,
}
#: Task types whose adapters each get a model load of their own (their base loads with another auto class).
LOADS_ALONE = frozenset(OWN_CLASS_TASKS)
#: PEFT task types whose adapters the probe measures (``None``: the config names none).
PROBED_TASKS = (None, "CAUSAL_LM", *OWN_CLASS_TASKS)


def task_of(adapter_dir: Path) -> str | None:
    """The adapter's PEFT ``task_type`` (``None`` when its config names none or it is not a string)."""
    from lora_lock.inspect.jsonfile import read_json_object

    task = read_json_object(adapter_dir / "adapter_config.json").get("task_type")
    return task if isinstance(task, str) else None


def auto_class_name(base_dir: Path) -> str:
    """``AutoModelForImageTextToText`` for a vision-language base that has no causal-LM class of its own,
    ``AutoModelForCausalLM`` otherwise (read from ``config.json``; transformers' own mappings decide)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    from lora_lock.inspect.jsonfile import read_json_object

    try:
        model_type = read_json_object(base_dir / "config.json").get("model_type")
    except InputError:
        return "AutoModelForCausalLM"  # the load reports the missing or bad config in its own words
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return "AutoModelForCausalLM"
    return "AutoModelForImageTextToText"


def split_by_task(
    adapters: Sequence[tuple[str, Path]],
) -> tuple[list[tuple[str, Path]], list[Finding]]:
    """The adapters the behaviour checks measure, and an ``EFFECT-TASK`` warning for each of the others."""
    probed: list[tuple[str, Path]] = []
    skipped: list[Finding] = []
    for name, path in adapters:
        task = task_of(path)
        if task in PROBED_TASKS:
            probed.append((name, path))
            continue
        skipped.append(
            Finding(
                "EFFECT-TASK",
                Category.EFFECT,
                Severity.WARNING,
                f"adapter {name}: task_type {task} has no behaviour probe: its effect and golden checks were not "
                "run (the probe measures causal and encoder-decoder language models, the text path of "
                "vision-language models, sequence / token classifiers, extractive question answering and embedding "
                "models)",
                subject=name,
                actual=str(task),
                hint="the static checks still apply; pass --no-probe to leave the behaviour checks out knowingly",
            )
        )
    return probed, skipped
