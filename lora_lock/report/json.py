"""The ★ JSON report (DESIGN §3): the object every other format renders."""

from __future__ import annotations

import json

from lora_lock.models import Report


class JsonRenderer:
    def render(self, report: Report) -> str:
        return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
