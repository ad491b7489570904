"""Bounded JSON reading for the small JSON files of a model, adapter or lock (no torch).

``json.loads`` keeps every value of a document as a Python object, about 25 times the bytes of the text for a
list of short strings: a 99 MB ``adapter_config.json`` costs gigabytes before any field is checked. Each kind of
file has a size its real instances stay far below; a larger one is refused before it is parsed.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError

MIB = 1 << 20
#: Largest file read per kind, in bytes. Real configs are kilobytes; a tokenizer_config.json with a big
#: added-tokens table or chat templates runs to a few megabytes; a shard index of a 400B model to ~2 MiB.
LIMITS = {
    "adapter_config.json": 4 * MIB,
    "config.json": 4 * MIB,
    "generation_config.json": 1 * MIB,
    "tokenizer_config.json": 16 * MIB,
    "special_tokens_map.json": 1 * MIB,
    "model.safetensors.index.json": 32 * MIB,
}
DEFAULT_LIMIT = 16 * MIB


def limit_for(path: Path) -> int:
    """The size bound of a JSON file, by its name (shard indexes by their suffix)."""
    if path.name.endswith(".safetensors.index.json"):
        return LIMITS["model.safetensors.index.json"]
    return LIMITS.get(path.name, DEFAULT_LIMIT)


def read_text_bounded(path: Path, limit: int, what: str = "file") -> str:
    """The UTF-8 text of ``path``, refusing more than ``limit`` bytes before reading them (the size is checked on
    the open file and the read is capped, so a file growing meanwhile or a device reports no more)."""
    try:
        # Non-blocking open: a FIFO planted under the name must not hang us before the type check below.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{path}: not a regular file (a device, FIFO or socket under a file's name)")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputError(
            f"{path}: the {what} is larger than {limit // MIB} MiB; a real one is far smaller, so it is not read",
            hint="check that this is the file written by the library, not something else under its name",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: cannot read: not UTF-8 ({exc.reason} at byte {exc.start})") from exc


def loads_object(text: str, path: Path) -> dict[str, Any]:
    """Parse a JSON object, turning every failure into an InputError naming the file."""
    try:
        doc = json.loads(text)
    except RecursionError as exc:
        raise InputError(f"{path}: JSON nested too deeply to read") from exc
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        where = f" (line {exc.lineno}, column {exc.colno}: {exc.msg})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputError(f"{path}: not valid JSON{where}") from exc
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object at the top level, found {type(doc).__name__}")
    return doc


def read_json_object(path: Path, limit: int | None = None) -> dict[str, Any]:
    """Read a JSON object file within its size bound (:func:`limit_for` unless ``limit``)."""
    return loads_object(read_text_bounded(path, limit_for(path) if limit is None else limit, "JSON file"), path)
