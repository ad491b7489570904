"""The words of ``diff``: a :class:`~lora_lock.lock.diff.LockDiff` as text, markdown (a PR comment) or JSON, with
the reviewer's summary of what each changed category means for the adapter."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from lora_lock._version import __version__
from lora_lock.findings import Category
from lora_lock.lock.diff import LockDiff
from lora_lock.report import Format
from lora_lock.report.sanitize import cell, document, line

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover - Python 3.10 has no typing.assert_never; the type checker runs on a newer one

    def assert_never(value: NoReturn, /) -> NoReturn:
        raise AssertionError(f"unhandled value {value!r}")


#: What a change of each category means for the adapter: the reviewer's summary of ``diff``.
REVIEW = {
    Category.INPUT: "the locks differ in a way lora-lock does not interpret",
    Category.BASE: "the base model changed: the adapter now runs on other weights or another configuration",
    Category.TOKENIZER: "the tokenizer changed: token ids or prompt formatting may differ from training",
    Category.ADAPTER: "the adapter's files, settings or source changed",
    Category.COMPAT: "the resolved module table changed: check every LoRA module still lands on a base layer",
    Category.QUANTIZATION: "the base's dtype or quantization changed: the adapter's numerics change with it",
    Category.ENVIRONMENT: "library versions changed: module names and scaling rules can change between releases",
    Category.EFFECT: "the recorded adapter-effect baseline changed: check it was re-measured, not loosened "
    "(tolerances, prompts)",
    Category.GOLDEN: "the golden-set baseline changed: compare the accuracies above",
}


def review(result: LockDiff) -> list[str]:
    """The reviewer's summary: one sentence per changed category saying what it means for the adapter."""
    return [f"{c.value}: {REVIEW[c]}" for c in result.counts()]


def diff_document(result: LockDiff) -> dict[str, Any]:
    """The JSON document of ``diff --format json``: the summary, then every change."""
    return {
        "lora_lock_version": __version__,
        "identical": result.identical,
        "summary": {
            "changes": len(result.changes),
            "categories": {c.value: n for c, n in result.counts().items()},
            "review": review(result),
        },
        "changes": [c.to_dict() for c in result.changes],
    }


def _headline(result: LockDiff) -> str:
    n = len(result.changes)
    return f"{n} change{'s' if n != 1 else ''}: " + ", ".join(f"{c.value} {k}" for c, k in result.counts().items())


def render_markdown(result: LockDiff) -> str:
    """A PR comment: the headline, what each changed category means for review, then every change."""
    if result.identical:
        return "## lora-lock diff\n\n✅ the locks are identical\n"
    lines = ["## lora-lock diff", "", f"**{_headline(result)}**", "", "| category | changes | for review |"]
    lines.append("|---|---|---|")
    lines += [f"| {c.value} | {k} | {cell(REVIEW[c])} |" for c, k in result.counts().items()]
    current: Category | None = None
    for change in result.changes:
        if change.category is not current:
            current = change.category
            lines += ["", f"### {current.value}", ""]
        lines.append(f"- {cell(change.message)}")
    return "\n".join(lines) + "\n"


def render_json(result: LockDiff) -> str:
    """The diff as one JSON document (see :func:`diff_document`)."""
    # default=str: a hand-edited lock may hold TOML dates or times, which JSON has no type for.
    return document(json.dumps(diff_document(result), indent=2, ensure_ascii=False, default=str)) + "\n"


def render_text(result: LockDiff) -> str:
    """The changes grouped by category, then the headline and the reviewer's summary."""
    if result.identical:
        return "the locks are identical\n"
    lines: list[str] = []
    current: Category | None = None
    for change in result.changes:
        if change.category is not current:
            current = change.category
            lines.append(f"{current.value}:")
        # One line per change, whatever the locks' strings hold: an ESC, CR or line feed in a value must not
        # hide or fake a line (a drift tolerance set to 1e9 stays visible).
        lines.append(f"  {line(change.message)}")
    lines.append(_headline(result))
    lines += [f"  - {line(sentence)}" for sentence in review(result)]
    return "\n".join(lines) + "\n"


def render_diff(result: LockDiff, fmt: Format) -> str:
    """``result`` in the format ``fmt``."""
    if fmt is Format.JSON:
        return render_json(result)
    if fmt is Format.MARKDOWN:
        return render_markdown(result)
    # A diff has no findings to annotate in a workflow log: ``github`` reads as the text.
    if fmt is Format.TEXT or fmt is Format.GITHUB:
        return render_text(result)
    assert_never(fmt)
