"""The probe's sidecar file: fingerprints too large for a reviewable lock, bound to it by digest (no torch)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError, brief
from lora_lock.hashing import sha256_bytes
from lora_lock.sources.fence import read_beside

SIDECAR_FORMAT = 1

_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
_ROWS_IDS = {"type": "array", "minItems": 1, "items": _IDS}
#: Log-probabilities: finite and at most 0 (``math.exp`` of a crafted 1e9 would overflow in the gates).
_ROWS_LOGPS = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "array", "minItems": 1, "items": {"type": "number", "maximum": 0, "minimum": -1e6}},
}
_TOP = {
    "type": "object",
    "required": ["ids", "logps"],
    "properties": {"ids": _ROWS_IDS, "logps": _ROWS_LOGPS},
}
_KL = {"type": "number", "minimum": 0, "maximum": 1e6}
#: An embedding model's fingerprint (``FEATURE_EXTRACTION``): one vector per side instead of top-k rows.
_VECTOR = {
    "type": "object",
    "required": ["embedding"],
    "properties": {
        "embedding": {"type": "array", "minItems": 1, "items": {"type": "number", "minimum": -1e12, "maximum": 1e12}}
    },
}
_EMBEDDING_PRINT = {
    "type": "object",
    "required": ["prompt_ids", "adapted", "base"],
    "properties": {
        "prompt_ids": _IDS,
        "adapted": _VECTOR,
        "base": _VECTOR,
        "effect_distance": _KL,
        "noise_distance": _KL,
    },
}
_TOKEN_PRINT = {
    "type": "object",
    "required": ["prompt_ids", "continuation", "adapted", "base"],
    "properties": {
        "prompt_ids": _IDS,
        "continuation": _IDS,
        "adapted": _TOP,
        "base": _TOP,
        "effect_kl": _KL,
        "noise_kl": _KL,
    },
}
#: The JSON Schema of the sidecar (``format`` 1). What a schema cannot say (equal lengths) :func:`validate` checks.
SIDECAR_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "prompts", "adapters"],
    "properties": {
        "format": {"const": SIDECAR_FORMAT},
        "prompts": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "adapters": {
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "if": {
                        "type": "object",
                        "required": ["adapted"],
                        "properties": {"adapted": {"type": "object", "required": ["embedding"]}},
                    },
                    "then": _EMBEDDING_PRINT,
                    "else": _TOKEN_PRINT,
                },
            },
        },
    },
}

#: Called with (done, total) as the probe's forwards or the golden items complete; the CLI draws a progress bar.
Step = Callable[[int, int], None]


def sidecar_text(sidecar: Mapping[str, Any]) -> str:
    """The sidecar as canonical JSON text (sorted keys, no spaces, unsafe characters escaped), one line."""
    from lora_lock.report.sanitize import document

    return document(json.dumps(sidecar, sort_keys=True, separators=(",", ":"), ensure_ascii=False)) + "\n"


def sidecar_digest(text: str) -> str:
    """The ``sha256:`` digest of the sidecar text, which the lock records to bind the sidecar to it."""
    return sha256_bytes(text.encode("utf-8"))


def read_sidecar(path: Path, digest: str) -> dict[str, Any]:
    """The sidecar next to the lock, through the fence: a regular file inside the lock's repository (a link
    out of it is refused), within the sidecar size bound, bound to the lock by ``digest``."""
    try:
        text = read_beside(path, "sidecar")
    except InputError as exc:
        raise InputError(
            f"the probe fingerprints file named by the lock cannot be read: {exc.message}",
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
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{path}: unknown probe fingerprint format {brief(found)}")
    validate(data, path)
    return data


def validate(data: Mapping[str, Any], path: Path) -> None:
    """Check a sidecar's values against :data:`SIDECAR_SCHEMA` and its lengths against each other: one
    fingerprint per prompt, and per fingerprint as many top-k rows (ids and log-probs alike, each row as long as
    its pair) as continuation tokens. A file bound to the lock by digest can still be crafted with the lock."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SIDECAR_SCHEMA).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InputError(
            f"{path}: probe fingerprints field {where}: {error.message[:200]}",
            hint="the file was not written by lora-lock generate; regenerate the lock",
        )
    prompts = len(data["prompts"])
    for name, prints in data["adapters"].items():
        if len(prints) != prompts:
            raise InputError(f"{path}: adapter {name} has {len(prints)} probe fingerprints for {prompts} prompts")
        for index, fp in enumerate(prints):
            if "embedding" in fp["adapted"]:
                continue  # one vector per side: the probe compares their sizes with the model's
            positions = len(fp["continuation"])
            for side in ("adapted", "base"):
                ids, logps = fp[side]["ids"], fp[side]["logps"]
                ragged = len(ids) != positions or len(logps) != positions
                if ragged or any(len(a) != len(b) for a, b in zip(ids, logps, strict=True)):
                    raise InputError(
                        f"{path}: adapters/{name}/{index}/{side}: top-k ids and log-probs must have one row per "
                        f"continuation token ({positions}), each id row as long as its log-prob row",
                        hint="the file was not written by lora-lock generate; regenerate the lock",
                    )
