"""Renderers: every format has one, the JSON shape is the documented one, and text/markdown/github are pinned
by exact-text goldens (regenerate with LORA_LOCK_REGEN_GOLDENS=1 after an intended change)."""

from __future__ import annotations

import json
import os

import pytest

from lora_lock.findings import Category, CheckState, Finding, Report, Severity, Status
from lora_lock.report import Format, renderer_for
from lora_lock.report.github import MAX_PER_KIND, escape_data, escape_property
from lora_lock.report.markdown import MAX_BYTES
from tests.helpers import GOLDENS


def sample() -> Report:
    findings = [
        Finding(
            "COMPAT-SHAPE",
            Category.COMPAT,
            Severity.ERROR,
            "v_proj: adapter LoRA shapes lora_A [16, 4096], lora_B [4096, 16] do not fit (32 modules, layers 0-31)",
            subject="model.layers.*.self_attn.v_proj",
            expected="lora_B [1024, 16]",
            actual="lora_B [4096, 16]",
            hint="the adapter was trained on a base with 32 KV heads of size 128; this base has 8",
        ),
        Finding(
            "COMPAT-IDENTITY",
            Category.COMPAT,
            Severity.WARNING,
            "the base cannot be confirmed | 100% <sure>",
            subject="base_model_name_or_path",
            hint="pin it: a,b:c\nnext line",
        ),
        Finding("QUANT-FORMAT", Category.QUANTIZATION, Severity.INFO, "the base is quantized (bitsandbytes)"),
    ]
    return Report.build(
        findings, ran=(Category.ADAPTER, Category.COMPAT, Category.QUANTIZATION), title="lora-lock check"
    )


def test_every_format_has_a_renderer() -> None:
    report = sample()
    for fmt in Format:
        text = renderer_for(fmt).render(report)
        assert text.strip(), fmt


def test_json_shape_round_trips() -> None:
    report = sample()
    data = json.loads(renderer_for(Format.JSON).render(report))
    assert set(data) == {"lora_lock_version", "status", "findings", "checked"}
    assert data["status"] == "fail"
    assert data["checked"] == {"adapter": "pass", "compat": "fail", "quantization": "pass"}
    assert data["findings"][0]["code"] == "COMPAT-SHAPE"
    again = Report.from_dict(data, title=report.title)
    assert again == report


def test_status_and_exit_codes() -> None:
    drift = Finding("BASE-FILE-CHANGED", Category.BASE, Severity.ERROR, "changed")
    unusable = Finding("INPUT-UNUSABLE", Category.INPUT, Severity.ERROR, "bad")
    assert Report.build([], ran=[Category.BASE]).status is Status.PASS
    assert Report.build([drift], ran=[Category.BASE]).status.exit_code == 1
    assert Report.build([unusable], ran=[]).status.exit_code == 2
    # drift wins over an unrelated unusable part
    assert Report.build([drift, unusable], ran=[Category.BASE]).status.exit_code == 1
    # a category that input kept from being checked is never reported as passed
    blocked = Report.build([unusable], ran=[Category.BASE], blocked=[Category.BASE])
    assert blocked.checked[Category.BASE] is CheckState.ERROR


def test_github_escaping_and_limits() -> None:
    # A carriage return is shown (it would overwrite the line in a log view); a line feed stays one command.
    assert escape_data("50% done\r\nnext\x1b[2J") == "50%25 done\\x0d%0Anext\\x1b[2J"
    assert escape_property("a,b:c") == "a%2Cb%3Ac"
    many = [Finding(f"X-{i}", Category.BASE, Severity.ERROR, f"problem {i}") for i in range(25)]
    text = renderer_for(Format.GITHUB).render(Report.build(many, ran=[Category.BASE]))
    assert sum(1 for line in text.splitlines() if line.startswith("::error ")) == MAX_PER_KIND
    assert "25 findings in all" in text


def test_github_keeps_the_total_within_the_notice_limit() -> None:
    """GitHub shows 10 annotations of a kind per step: with more findings than shown, the total notice takes
    the tenth notice's place instead of being dropped as an eleventh."""
    many = [Finding(f"I-{i}", Category.EFFECT, Severity.INFO, f"fine {i}") for i in range(12)]
    many += [Finding(f"E-{i}", Category.BASE, Severity.ERROR, f"bad {i}") for i in range(12)]
    lines = renderer_for(Format.GITHUB).render(Report.build(many, ran=[Category.BASE])).splitlines()
    notices = [line for line in lines if line.startswith("::notice ")]
    assert len(notices) == MAX_PER_KIND and "24 findings in all" in notices[-1]
    assert sum(1 for line in lines if line.startswith("::error ")) == MAX_PER_KIND
    few = [Finding(f"I-{i}", Category.EFFECT, Severity.INFO, f"fine {i}") for i in range(MAX_PER_KIND)]
    lines = renderer_for(Format.GITHUB).render(Report.build(few, ran=[Category.EFFECT])).splitlines()
    assert sum(1 for line in lines if line.startswith("::notice ")) == MAX_PER_KIND  # all shown, no total


def test_truncated_markdown_closes_its_details_block() -> None:
    many = [Finding(f"X-{i}", Category.BASE, Severity.ERROR, "x" * 100, hint="h" * 400) for i in range(6000)]
    text = renderer_for(Format.MARKDOWN).render(Report.build(many, ran=[Category.BASE]))
    assert "truncated" in text
    assert text.count("<details>") == text.count("</details>")
    assert text.rindex("</details>") < text.index("truncated")


def test_markdown_stays_under_the_summary_limit() -> None:
    many = [Finding(f"X-{i}", Category.BASE, Severity.ERROR, "x" * 2000, hint="h" * 500) for i in range(2000)]
    text = renderer_for(Format.MARKDOWN).render(Report.build(many, ran=[Category.BASE]))
    assert len(text.encode()) <= MAX_BYTES
    assert "truncated" in text


@pytest.mark.parametrize("fmt", [Format.TEXT, Format.MARKDOWN, Format.GITHUB])
def test_goldens(fmt: Format) -> None:
    text = renderer_for(fmt, color=False, width=120).render(sample())
    golden = GOLDENS / f"report.{fmt.value}"
    if os.environ.get("LORA_LOCK_REGEN_GOLDENS"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")
