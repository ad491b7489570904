"""GitHub workflow commands: ``::error file=…,title=…::message`` annotations, bounded in number."""

from __future__ import annotations

from lora_lock.findings import Report, Severity
from lora_lock.report import sanitize
from lora_lock.report.where import Locate

MAX_PER_KIND = 10
_COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


#: A message and a property of a workflow command: control and bidi characters shown as escapes, then escaped the
#: way @actions/core does (``%``, CR, LF; in a property also ``:`` and ``,``).
escape_data = sanitize.annotation
escape_property = sanitize.annotation_property


class GithubRenderer:
    """``source``: the workspace file the annotations point at (none: annotations on the run, not on a file)."""

    def __init__(self, *, source: str | None = "lora.lock", locate: Locate | None = None) -> None:
        self.source = source
        #: The file a finding is about, where it has one (default: ``source`` for every finding).
        self.locate = locate

    def render(self, report: Report) -> str:
        """One workflow-command annotation per finding (at most GitHub's 10 per kind; a notice then counts the
        findings left out), then the status line; every value escaped so a finding cannot issue a command."""
        lines: list[str] = []
        shown = {s: 0 for s in Severity}
        limit = dict.fromkeys(Severity, MAX_PER_KIND)
        if sum(min(report.count(s), MAX_PER_KIND) for s in Severity) < len(report.findings):
            # GitHub keeps 10 annotations of each kind per step: leave a notice's place for the total below.
            limit[Severity.INFO] = MAX_PER_KIND - 1
        for f in report.findings:
            if shown[f.severity] >= limit[f.severity]:
                continue
            shown[f.severity] += 1
            message = f.message + (f" (hint: {f.hint})" if f.hint else "")
            target = self.locate(f) if self.locate is not None else self.source
            where = f"file={escape_property(target)}," if target else ""
            lines.append(
                f"::{_COMMAND[f.severity]} {where}"
                f"title={escape_property(f'{f.code} [{f.category.value}]')}::{escape_data(message)}"
            )
        total = len(report.findings)
        if total > len(lines):
            lines.append(
                f"::notice title=lora-lock::{total} findings in all; {total - len(lines)} not shown as "
                "annotations (see the job summary or the JSON report)"
            )
        errors, warnings = report.count(Severity.ERROR), report.count(Severity.WARNING)
        lines.append(
            f"lora-lock: {report.status.value} ({errors} error{'s' if errors != 1 else ''}, "
            f"{warnings} warning{'s' if warnings != 1 else ''})"
        )
        return "\n".join(lines) + "\n"
