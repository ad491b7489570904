"""Human text for a terminal: findings grouped by category, coloured by severity (rich, on a colour terminal only)."""

from __future__ import annotations

import io

from lora_lock.findings import Category, CheckState, Finding, Report, Severity, Status
from lora_lock.report import sanitize

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
_STATE_STYLE = {
    CheckState.PASS: "green",
    CheckState.FAIL: "bold red",
    CheckState.ERROR: "bold magenta",
    CheckState.SKIPPED: "dim",
}
#: A line is spans of text, each with its rich style or none; only the colour renderer reads the styles.
_Span = tuple[str, str | None]
_Line = list[_Span]
_STATUS_WORD = {
    Status.PASS: ("PASS", "bold green", "no problem found"),
    Status.FAIL: ("FAIL", "bold red", "drift or incompatibility found"),
    Status.ERROR: ("ERROR", "bold magenta", "unusable input; nothing could be concluded"),
}
#: Continuation lines of a multi-line message line up under the finding.
_CONTINUATION = "\n          "


def _indent(text: str) -> str:
    """A multi-line message or hint, sanitised, its continuation lines under the finding's first line."""
    return sanitize.text(text).replace("\n", _CONTINUATION)


def report_lines(report: Report) -> list[_Line]:
    """The text report as styled spans: findings by category with their hints, then the status line. Every
    string from the report is sanitised here; styles are the renderer's to apply or drop."""
    lines: list[_Line] = []
    by_cat: dict[Category, list[Finding]] = {}
    for f in report.findings:
        by_cat.setdefault(f.category, []).append(f)
    for cat, findings in by_cat.items():
        state = report.checked.get(cat)
        label: _Line = [(" ", None), (state.value, _STATE_STYLE[state])] if state else []
        lines.append([(cat.value, "bold"), *label])
        for f in findings:
            head: _Line = [("  ", None), (f"{f.severity.value:<7}", _STYLE[f.severity]), (" ", None)]
            lines.append([*head, (f.code, "bold"), (" " + _indent(f.message), None)])
            if f.expected is not None and f.actual is not None and f.expected not in f.message:
                lines.append([(f"          expected: {sanitize.line(f.expected)}", None)])
                lines.append([(f"          actual:   {sanitize.line(f.actual)}", None)])
            if f.hint:
                lines.append([("          ", None), ("hint:", "dim"), (" " + _indent(f.hint), None)])
    quiet = [c for c, s in report.checked.items() if c not in by_cat]
    if quiet:
        spans: _Line = []
        for i, c in enumerate(quiet):
            spans += [
                ("  " if i else "", None),
                (f"{c.value} ", None),
                (report.checked[c].value, _STATE_STYLE[report.checked[c]]),
            ]
        lines.append(spans)
    word, style, meaning = _STATUS_WORD[report.status]
    if report.status is Status.ERROR:
        meaning = _unusable_meaning(report)
    elif report.status is Status.PASS and passed_with_reservations(report):
        word, style, meaning = "WARN", "bold yellow", passed_with_reservations(report)
    counts = ", ".join(f"{report.count(s)} {s.value}{'s' if report.count(s) != 1 else ''}" for s in Severity)
    lines.append([(word, style), (f" {sanitize.line(report.title)}: {meaning} ({counts})", None)])
    return lines


class TextRenderer:
    """``--format text``: the terminal report, coloured by rich when ``color`` (rich soft-wraps: ``width`` only
    bounds its layout), plain text otherwise. Plain text is what rich prints with colour off, written without
    importing rich (``check`` in a pipe or CI stays fast); a test holds the two to the same bytes."""

    def __init__(self, *, color: bool = False, width: int = 100) -> None:
        self.color = color
        self.width = width

    def render(self, report: Report) -> str:
        """The report as terminal text: findings by category with their hints, then the status line."""
        lines = report_lines(report)
        plain = ["".join(text for text, _ in spans) for spans in lines]
        # rich expands a tab to the next multiple of 8 cells, counting wide characters as two: that layout is
        # rich's to do (a tab in a report is rare: it comes from a file's text).
        if self.color or any("\t" in text for text in plain):
            return self.render_rich(lines, color=self.color)
        return "".join(text + "\n" for text in plain)

    def render_rich(self, lines: list[_Line], *, color: bool) -> str:
        """``lines`` printed by rich, each span a styled :class:`rich.text.Text` (never markup, so no text from a
        file is read as a style or loses a backslash)."""
        from rich.console import Console
        from rich.text import Text

        buf = io.StringIO()
        console = Console(
            file=buf,
            force_terminal=color,
            no_color=not color,
            width=self.width,
            highlight=False,
            soft_wrap=True,
            emoji=False,
        )
        for spans in lines:
            console.print(Text.assemble(*((text, style) if style else text for text, style in spans)))
        return buf.getvalue()


def passed_with_reservations(report: Report) -> str:
    """For a run without errors: what keeps it from a plain "no problem found" — the categories that did not
    run (a ``*-NOT-RUN`` warning says why) and the warnings to read; empty when there is nothing of the kind.
    A plain pass is never printed over a warning, or when a requested category was not checked."""
    not_run = [
        c.value for c in Category if any(f.category is c and f.code.endswith("-NOT-RUN") for f in report.findings)
    ]
    warnings = report.count(Severity.WARNING)
    others = warnings - sum(1 for f in report.findings if f.code.endswith("-NOT-RUN"))
    if not warnings:
        return ""
    parts = [f"not run: {', '.join(not_run)}"] if not_run else []
    if others:
        parts.append(f"{others} warning{'s' if others != 1 else ''} to read")
    return "no error in what was checked; " + "; ".join(parts)


def _unusable_meaning(report: Report) -> str:
    """Unusable input with some categories checked and passed says which ones it kept from being checked."""
    passed = [c for c, state in report.checked.items() if state is CheckState.PASS]
    stuck = [c.value for c, state in report.checked.items() if state is CheckState.ERROR and c is not Category.INPUT]
    if not passed:
        return _STATUS_WORD[Status.ERROR][2]
    count = f"{len(passed)} categor{'y' if len(passed) == 1 else 'ies'} passed"
    if not stuck:
        return f"unusable input; {count}"
    return f"unusable input kept {', '.join(stuck)} from being checked; {count}"
