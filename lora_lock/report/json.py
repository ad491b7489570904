"""The ★ JSON report (DESIGN §3): the object every other format renders."""

from __future__ import annotations

import json

from lora_lock.findings import Report
from lora_lock.report.sanitize import document


class JsonRenderer:
    """``--format json``: the report's :meth:`~lora_lock.findings.Report.to_dict`, indented."""

    def render(self, report: Report) -> str:
        """The report as an indented JSON document, with raw control characters escaped."""
        # Printed to terminals and CI logs: the characters JSON leaves raw and a terminal acts on become \u escapes.
        return document(json.dumps(report.to_dict(), indent=2, ensure_ascii=False)) + "\n"
