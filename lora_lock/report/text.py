"""Human text for a terminal: findings grouped by category, coloured by severity (rich; NO_COLOR respected)."""

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
_STATUS_TEXT = {
    Status.PASS: ("[bold green]PASS[/]", "no problem found"),
    Status.FAIL: ("[bold red]FAIL[/]", "drift or incompatibility found"),
    Status.ERROR: ("[bold magenta]ERROR[/]", "unusable input; nothing could be concluded"),
}


def _indent(text: str) -> str:
    """Continuation lines of a multi-line message line up under the finding (sanitised, then rich-escaped)."""
    from rich.markup import escape

    return escape(sanitize.text(text)).replace("\n", "\n          ")


class TextRenderer:
    """``--format text``: the terminal report (colour only when asked), wrapped at ``width`` columns."""

    def __init__(self, *, color: bool = False, width: int = 100) -> None:
        self.color = color
        self.width = width

    def render(self, report: Report) -> str:
        """The report as terminal text: findings by category with their hints, then the status line."""
        from rich.console import Console
        from rich.markup import escape

        buf = io.StringIO()
        console = Console(
            file=buf,
            force_terminal=self.color,
            no_color=not self.color,
            width=self.width,
            highlight=False,
            soft_wrap=True,
            emoji=False,
        )
        by_cat: dict[Category, list[Finding]] = {}
        for f in report.findings:
            by_cat.setdefault(f.category, []).append(f)
        for cat, findings in by_cat.items():
            state = report.checked.get(cat)
            label = f" [{_STATE_STYLE[state]}]{state.value}[/]" if state else ""
            console.print(f"[bold]{cat.value}[/]{label}")
            for f in findings:
                console.print(
                    f"  [{_STYLE[f.severity]}]{f.severity.value:<7}[/] [bold]{f.code}[/] {_indent(f.message)}"
                )
                if f.expected is not None and f.actual is not None and f.expected not in f.message:
                    console.print(f"          expected: {escape(sanitize.line(f.expected))}")
                    console.print(f"          actual:   {escape(sanitize.line(f.actual))}")
                if f.hint:
                    console.print(f"          [dim]hint:[/] {_indent(f.hint)}")
        quiet = [c for c, s in report.checked.items() if c not in by_cat]
        if quiet:
            console.print(
                "  ".join(f"{c.value} [{_STATE_STYLE[report.checked[c]]}]{report.checked[c].value}[/]" for c in quiet)
            )
        word, meaning = _STATUS_TEXT[report.status]
        if report.status is Status.ERROR:
            meaning = _unusable_meaning(report)
        elif report.status is Status.PASS and passed_with_reservations(report):
            word, meaning = "[bold yellow]WARN[/]", passed_with_reservations(report)
        counts = ", ".join(f"{report.count(s)} {s.value}{'s' if report.count(s) != 1 else ''}" for s in Severity)
        console.print(f"{word} {escape(sanitize.line(report.title))}: {meaning} ({counts})")
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
        return _STATUS_TEXT[Status.ERROR][1]
    count = f"{len(passed)} categor{'y' if len(passed) == 1 else 'ies'} passed"
    if not stuck:
        return f"unusable input; {count}"
    return f"unusable input kept {', '.join(stuck)} from being checked; {count}"
