"""Markdown for a GitHub job summary: a status line, a table per category, details collapsed, bounded size."""

from __future__ import annotations

from lora_lock.findings import Category, Finding, Report, Severity, Status
from lora_lock.report import sanitize

#: GitHub refuses step summaries above 1 MiB; stay well below it.
MAX_BYTES = 900_000
_ICON = {Severity.ERROR: "❌", Severity.WARNING: "⚠️", Severity.INFO: "ℹ️"}
_STATUS = {
    Status.PASS: "✅ **pass**: no problem found",
    Status.FAIL: "❌ **fail**: drift or incompatibility found",
    Status.ERROR: "⛔ **error**: unusable input",
}


def _cell(text: str | None) -> str:
    return sanitize.cell(text) if text else ""


class MarkdownRenderer:
    """``--format markdown``: a status line, a table of categories checked, findings grouped by category."""

    def render(self, report: Report) -> str:
        """The report as Markdown, every untrusted value escaped for a table cell."""
        from lora_lock.report.text import passed_with_reservations

        status = _STATUS[report.status]
        if report.status is Status.PASS and passed_with_reservations(report):
            status = f"⚠️ **pass with warnings**: {_cell(passed_with_reservations(report))}"
        head = [f"## {_cell(report.title)}", "", status, ""]
        if report.checked:
            head += ["| category | state |", "|---|---|"]
            head += [f"| {c.value} | {s.value} |" for c, s in report.checked.items()]
            head.append("")
        body: list[str] = []
        by_cat: dict[Category, list[Finding]] = {}
        for f in report.findings:
            by_cat.setdefault(f.category, []).append(f)
        for cat, findings in by_cat.items():
            body += [f"### {cat.value}", "", "| | code | finding |", "|---|---|---|"]
            body += [f"| {_ICON[f.severity]} | `{f.code}` | {_cell(f.message)} |" for f in findings]
            details = [f for f in findings if f.hint or f.expected or f.actual]
            if details:
                body += ["", "<details><summary>details</summary>", ""]
                for f in details:
                    body.append(f"- `{f.code}` {_cell(f.subject)}")
                    if f.expected is not None:
                        body.append(f"  - expected: {_cell(f.expected)}")
                    if f.actual is not None:
                        body.append(f"  - actual: {_cell(f.actual)}")
                    if f.hint:
                        body.append(f"  - hint: {_cell(f.hint)}")
                body += ["", "</details>"]
            body.append("")
        text = "\n".join(head + body) + "\n"
        if len(text.encode()) > MAX_BYTES:
            kept: list[str] = []
            size = len("\n".join(head).encode())
            for line in body:
                size += len(line.encode()) + 1
                if size > MAX_BYTES - 200:
                    break
                kept.append(line)
            if kept.count("<details><summary>details</summary>") > kept.count("</details>"):
                kept += ["", "</details>"]  # cut inside a details block: close it, or it swallows what follows
            text = "\n".join(head + kept) + "\n\n_… truncated: see the JSON report for every finding._\n"
        return text
