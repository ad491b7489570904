"""Bounded JSON reading by file name: the fence's size bound for that kind of file, then a checked parse.

``json.loads`` keeps every value as a Python object, about 25 times the bytes of the text for a list of short
strings, so a crafted 99 MB ``adapter_config.json`` would cost gigabytes before any field is checked: each kind of
file is refused above a size its real instances stay far below (:data:`lora_lock.sources.fence.LIMITS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_lock.inspect.checkpoint import read_json


def kind_for(path: Path) -> str:
    """The fence's file kind for a JSON file, by its name."""
    if path.name.endswith(".safetensors.index.json"):
        return "index"
    if path.name == "tokenizer_config.json":
        return "tokenizer-config"
    if path.name == "adapter_config.json":
        return "adapter-config"
    return "config"


def read_json_object(path: Path) -> dict[str, Any]:
    """Read a JSON object file within the size bound of its kind; every failure is an InputError naming the file."""
    return read_json(path, kind_for(path))
