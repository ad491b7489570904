"""The probe's sidecar file: fingerprints too large for a reviewable lock, bound to it by digest (no torch)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError

SIDECAR_FORMAT = 1

#: Called with (done, total) as the probe's forwards or the golden items complete; the CLI draws a progress bar.
Step = Callable[[int, int], None]


def sidecar_text(sidecar: Mapping[str, Any]) -> str:
    from lora_lock.report.sanitize import document

    return document(json.dumps(sidecar, sort_keys=True, separators=(",", ":"), ensure_ascii=False)) + "\n"


def sidecar_digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_sidecar(path: Path, digest: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{path}: the probe fingerprints file named by the lock cannot be read ({exc.__class__.__name__})",
            hint="commit it next to the lock, or regenerate the lock",
        ) from exc
    if sidecar_digest(text) != digest:
        raise InputError(
            f"{path}: the probe fingerprints do not match the digest in the lock",
            hint="the file was edited or belongs to another lock; regenerate the lock",
        )
    try:
        data: dict[str, Any] = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path}: the probe fingerprints are not valid JSON") from exc
    if data.get("format") != SIDECAR_FORMAT:
        raise InputError(f"{path}: unknown probe fingerprint format {data.get('format')!r}")
    return data
