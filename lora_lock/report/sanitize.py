"""The one escaping boundary: text from files made safe for a terminal, a CI log, an annotation or a job summary.

Every string that came from a lock, a config, a file name or a foreign exception passes through one of these
before it is written anywhere a human or a CI runner reads it. What they neutralise:

- control characters (C0 including ESC and CR, DEL, C1 such as the 8-bit CSI ``\\x9b``): no terminal sequence, no
  carriage-return overwrite of what a reviewer sees;
- bidirectional overrides and isolates and the Unicode line separators: no text that reads differently from what
  it is, no line break a log viewer honours;
- a GitHub Actions workflow command (``::error``, ``::set-output``, ``::add-mask``, ``::stop-commands``), which the
  runner executes when a log line starts with ``::`` after optional whitespace;
- in markdown, links, images, HTML (``<details>``) and table cell breaks.

Escapes are shown, not dropped (``\\x1b``, ``\\u202e``), so a reader sees that the value held them.
"""

from __future__ import annotations

import re

#: Characters never written raw: C0 except TAB/LF (handled per function), DEL, C1, bidi controls, separators.
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff"
_UNSAFE_TEXT = re.compile(f"[{_UNSAFE}]")
_UNSAFE_LINE = re.compile(f"[\t\n{_UNSAFE}]")
#: A workflow command: ``::`` at the start of a line, after optional whitespace (the runner strips it).
_COMMAND = re.compile(r"^(\s*)::", re.MULTILINE)
#: Characters inside a JSON or TOML text that ``json.dumps(..., ensure_ascii=False)`` leaves raw but a terminal acts on.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _defuse(text: str) -> str:
    return _COMMAND.sub(lambda m: m.group(1) + ":\u200b:", text)


def text(value: str) -> str:
    """Multi-line text for a terminal or a log: line feeds and tabs kept, every other control or bidi character
    shown as an escape, and no line that starts a workflow command."""
    return _defuse(_UNSAFE_TEXT.sub(_escape, value))


def line(value: str) -> str:
    """One line (a title, a field, a name): like :func:`text`, and line feeds and tabs escaped too."""
    return _defuse(_UNSAFE_LINE.sub(_escape, value))


def cell(value: str) -> str:
    """Inline markdown (a job-summary table cell or list item): :func:`text` on one line (line breaks and tabs
    become spaces), then what markdown or HTML would act on escaped: ``\\``, the cell break ``|``, ``<`` (no HTML
    tag such as ``<details>``, no autolink) and ``](`` (no link or image), backticks (no code span breaking out)."""
    flat = text(value).replace("\n", " ").replace("\t", " ")
    flat = flat.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("`", "\\`")
    return flat.replace("](", "\\](")


def annotation(value: str) -> str:
    """The message of a ``::error …::message`` command: :func:`text`, then @actions/core's escaping (``%``, CR,
    LF), so a multi-line message stays one command."""
    return text(value).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotation_property(value: str) -> str:
    """A property of a workflow command (``file=``, ``title=``): :func:`annotation` and ``:`` / ``,`` escaped."""
    return annotation(value).replace(":", "%3A").replace(",", "%2C")


def document(rendered: str) -> str:
    """A JSON document (``json.dumps(..., ensure_ascii=False)``) or a TOML one (tomli-w writes basic strings only)
    with the characters both leave raw and a terminal would act on (C1 controls, bidi controls, line separators)
    written as ``\\uXXXX`` escapes: the same value, safe to print or ``cat``. Outside strings neither format has
    such characters, so replacing them everywhere is exact."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", rendered)
