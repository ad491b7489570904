"""The one-pass check of well-formed safetensors entries accepts exactly what the full check accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lora_lock.errors import InputError
from lora_lock.inspect.safetensors_header import _tensor, _valid_tensor

ENTRIES: list[Any] = [
    {"dtype": "BF16", "shape": [4, 2], "data_offsets": [0, 16]},
    {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]},
    {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
    {"dtype": "F32", "shape": [0, 5], "data_offsets": [0, 0]},
    {"dtype": "F32", "shape": [True, 4], "data_offsets": [0, 16]},
    {"dtype": "F32", "shape": [4], "data_offsets": [False, 16]},
    {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]},
    {"dtype": "F32", "shape": [2**63, 2**63, 2**63, 2**63, 2], "data_offsets": [0, 16]},
    {"dtype": "F32", "shape": [-1], "data_offsets": [0, 16]},
    {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]},
    {"dtype": "F32", "shape": [4], "data_offsets": [0, 17]},
    {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]},
    {"dtype": "F32", "shape": [4], "data_offsets": [0, 16, 0]},
    {"dtype": "X9", "shape": [4], "data_offsets": [0, 16]},
    {"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]},
    {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]},
    {"shape": [4], "data_offsets": [0, 16]},
    ["F32", [4], [0, 16]],
]


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_fast_path_agrees_with_the_full_check(entry: Any) -> None:
    try:
        expected = _tensor(Path("m.safetensors"), "m.safetensors", "t", entry, 24)
    except InputError:
        expected = None
    assert _valid_tensor("m.safetensors", "t", entry, 24) == expected
