"""Renderers: one per output format, each turning a :class:`Report` into text. The CLI decides where it goes."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

from lora_lock.findings import Finding, Report


def printable(text: str) -> str:
    """Text from files made safe for a terminal or a CI log (see :func:`lora_lock.report.sanitize.text`)."""
    from lora_lock.report.sanitize import text as _text

    return _text(text)


class Format(str, enum.Enum):
    """The output formats of a report: ``text``, ``json``, ``markdown``, ``github`` (annotations and summary)."""

    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"
    GITHUB = "github"


class Renderer(Protocol):
    """What every format's renderer provides: ``render(report)`` → the text to print."""

    def render(self, report: Report) -> str:
        """The report as this format's text."""
        ...


def renderer_for(
    fmt: Format,
    *,
    color: bool = False,
    width: int = 100,
    source: str | None = "lora.lock",
    locate: Callable[[Finding], str | None] | None = None,
) -> Renderer:
    """The renderer of a format. Every :class:`Format` has one (a test walks the enum). ``locate``: for ``github``,
    the workspace file each finding is about (default: ``source``)."""
    if fmt is Format.TEXT:
        from lora_lock.report.text import TextRenderer

        return TextRenderer(color=color, width=width)
    if fmt is Format.JSON:
        from lora_lock.report.json import JsonRenderer

        return JsonRenderer()
    if fmt is Format.MARKDOWN:
        from lora_lock.report.markdown import MarkdownRenderer

        return MarkdownRenderer()
    if fmt is Format.GITHUB:
        from lora_lock.report.github import GithubRenderer

        return GithubRenderer(source=source, locate=locate)
    raise AssertionError(f"unhandled format {fmt}")
