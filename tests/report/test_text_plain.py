"""The plain text report (written without rich, so ``check`` in a pipe does not import it) is byte for byte what
rich prints with colour off, for any text a report can carry."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from lora_lock.findings import Category, Finding, Report, Severity
from lora_lock.report.text import TextRenderer, report_lines

#: Text that exercises rich's markup and layout: brackets and backslashes (markup), line breaks, trailing spaces,
#: wide and combining characters, control characters (sanitised first). Tabs are rich's to lay out (below).
_ALPHABET = st.sampled_from([*"ab [/]\\\n =:#@", "[bold]", "[/]", "\\[", "界", "e\u0301", "\x1b", "\r", "😀"])
_TEXT = st.lists(_ALPHABET, max_size=30).map("".join)
_FINDING = st.builds(
    Finding,
    code=st.sampled_from(["COMPAT-SHAPE", "TOKENIZER-VOCAB", "EFFECT-DRIFT"]),
    category=st.sampled_from([c for c in Category if c is not Category.INPUT]),
    severity=st.sampled_from(list(Severity)),
    message=_TEXT,
    subject=st.none() | _TEXT,
    expected=st.none() | _TEXT,
    actual=st.none() | _TEXT,
    hint=st.none() | _TEXT,
)


def _rich(report: Report) -> str:
    return TextRenderer(color=False).render_rich(report_lines(report), color=False)


@settings(max_examples=300, deadline=None)
@given(
    findings=st.lists(_FINDING, max_size=6),
    ran=st.lists(st.sampled_from(list(Category)), max_size=4),
    title=_TEXT,
)
def test_plain_text_is_what_rich_prints_without_colour(
    findings: list[Finding], ran: list[Category], title: str
) -> None:
    report = Report.build(findings, ran=ran, title=title)
    assert TextRenderer(color=False).render(report) == _rich(report)


def test_plain_text_does_not_import_rich() -> None:
    report = Report.build(
        [Finding("COMPAT-SHAPE", Category.COMPAT, Severity.ERROR, "q_proj: [4096, 16] vs [1024, 16]", hint="x")],
        ran=[Category.COMPAT],
    )
    before = set(sys.modules)
    text = TextRenderer(color=False).render(report)
    assert "COMPAT-SHAPE q_proj: [4096, 16] vs [1024, 16]" in text
    assert not {m for m in set(sys.modules) - before if m == "rich" or m.startswith("rich.")}


def test_a_tab_is_laid_out_by_rich() -> None:
    """A tab from a file's text is expanded as rich lays it out (in cells: a wide character takes two)."""
    report = Report.build([Finding("COMPAT-SHAPE", Category.COMPAT, Severity.ERROR, "界\tx")], ran=[Category.COMPAT])
    text = TextRenderer(color=False).render(report)
    assert text == _rich(report)
    assert "\t" not in text
    assert "COMPAT-SHAPE 界 " in text


def test_colour_output_is_styled_by_rich() -> None:
    report = Report.build([Finding("COMPAT-SHAPE", Category.COMPAT, Severity.ERROR, "[bold]x")], ran=[Category.COMPAT])
    coloured = TextRenderer(color=True).render(report)
    assert "\x1b[" in coloured
    assert "[bold]x" in coloured  # a message's brackets are text, never markup
