"""Renderers: one per output format, each turning a :class:`Report` into text. The CLI decides where it goes."""

from __future__ import annotations

import enum
import re
from typing import Protocol

from lora_lock.models import Report

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_COMMAND = re.compile(r"^(\s*)::", re.MULTILINE)


def printable(text: str) -> str:
    """Text from files (names, config values) made safe for a terminal or a CI log: control characters other than
    newline and tab shown as escapes (no terminal sequences, no carriage-return overwrites), and a line that would
    start with ``::`` (a GitHub Actions workflow command, leading whitespace allowed) defused."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return _COMMAND.sub(lambda m: m.group(1) + ":\u200b:", text)


class Format(str, enum.Enum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"
    GITHUB = "github"


class Renderer(Protocol):
    def render(self, report: Report) -> str: ...


def renderer_for(fmt: Format, *, color: bool = False, width: int = 100, source: str | None = "lora.lock") -> Renderer:
    """The renderer of a format. Every :class:`Format` has one (a test walks the enum)."""
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

        return GithubRenderer(source=source)
    raise AssertionError(f"unhandled format {fmt}")
