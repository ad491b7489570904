"""A bounded, validating reader of safetensors headers.

The format: 8-byte little-endian header length N, N bytes of JSON, then the data section. We read the first
8 + N bytes only, so a 16 GB shard costs the same as a 16 KB one, and we never import torch
(``safe_open(..., "pt")`` would). Every way the file can be wrong becomes an :class:`InputError` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError
from lora_lock.sources.fence import open_regular
from lora_lock.text import brief

#: safetensors refuses headers above 100 MB; so do we (a bigger one is a corrupt or hostile file).
MAX_HEADER_BYTES = 100_000_000

#: Bits per element of every dtype safetensors 0.8 knows.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in a header: where it lives, its dtype and its shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    begin: int
    end: int

    @property
    def numel(self) -> int:
        """The number of elements (1 for a scalar)."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    """A parsed, validated safetensors header."""

    path: Path
    header_bytes: int
    file_size: int
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    #: Reads ``length`` bytes at ``offset`` of the data section (local file or HTTP range); used for the few
    #: tensors that are metadata in disguise (bitsandbytes quant state), never for weights.
    read_data: Callable[[int, int], bytes] | None = field(default=None, repr=False, compare=False)


def read_header_bytes(path: Path) -> tuple[bytes, int]:
    """Read the raw header JSON bytes and the file size, refusing impossible lengths before allocating."""
    try:
        with open_regular(path) as fh:  # a FIFO or a device is refused, never waited on
            size = os.fstat(fh.fileno()).st_size
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise InputError(
                    f"{path}: not a safetensors file: it has {size} bytes, fewer than the 8-byte header length",
                    hint="re-download the file; it may be truncated or a Git LFS pointer",
                )
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                raise InputError(
                    f"{path}: safetensors header length is {length} bytes, above the {MAX_HEADER_BYTES}-byte limit",
                    hint="the file is corrupt or not a safetensors file",
                )
            if 8 + length > size:
                raise InputError(
                    f"{path}: safetensors header claims {length} bytes but the file has only {size - 8} after "
                    "the length prefix (truncated file)",
                    hint="re-download the file",
                )
            raw = fh.read(length)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return raw, size


def parse_header(
    path: Path,
    raw: bytes,
    file_size: int,
    file_label: str | None = None,
    read_data: Callable[[int, int], bytes] | None = None,
) -> Header:
    """Validate a header's JSON against the format's rules and return its tensors."""
    label = file_label if file_label is not None else path.name
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # incl. integers past the digit limit
        raise InputError(
            f"{path}: safetensors header is not valid JSON ({exc})",
            hint="the file is corrupt or not a safetensors file (a Git LFS pointer, or a pickle renamed?)",
        ) from exc
    if not isinstance(doc, dict):
        raise InputError(f"{path}: safetensors header must be a JSON object, found {type(doc).__name__}")

    metadata: dict[str, str] = {}
    raw_meta = doc.pop("__metadata__", None)
    if raw_meta is not None:
        if not isinstance(raw_meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_meta.items()
        ):
            raise InputError(f"{path}: safetensors `__metadata__` must map strings to strings")
        metadata = dict(raw_meta)

    data_len = file_size - 8 - len(raw)
    tensors: dict[str, TensorInfo] = {}
    for name, entry in doc.items():
        tensors[name] = _valid_tensor(label, name, entry, data_len) or _tensor(path, label, name, entry, data_len)

    _check_layout(path, tensors, data_len)
    return Header(
        path=path, header_bytes=len(raw), file_size=file_size, metadata=metadata, tensors=tensors, read_data=read_data
    )


def read_header(path: Path, file_label: str | None = None) -> Header:
    """Read and validate the header of one ``.safetensors`` file (no tensor data is read)."""
    raw, size = read_header_bytes(path)
    start = 8 + len(raw)

    def read_data(offset: int, length: int) -> bytes:
        try:
            with open_regular(path) as fh:
                fh.seek(start + offset)
                return fh.read(length)
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc

    return parse_header(path, raw, size, file_label, read_data)


def _valid_tensor(label: str, name: str, entry: Any, data_len: int) -> TensorInfo | None:
    """The entry of a well-formed tensor, checked with the rules of :func:`_tensor` in one pass; ``None`` for any
    entry those rules might refuse, which :func:`_tensor` then checks again to say why. A big base has
    thousands of entries and every one is valid: this keeps reading its headers a small part of ``check``."""
    if type(entry) is not dict:
        return None
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if type(dtype) is not str:
        return None
    bits = DTYPE_BITS.get(dtype)
    if bits is None or type(shape) is not list or len(shape) > MAX_RANK or type(offsets) is not list:
        return None
    if len(offsets) != 2:
        return None
    begin, end = offsets
    if type(begin) is not int or type(end) is not int or not 0 <= begin <= end <= data_len:
        return None
    dims = tuple(shape)
    for d in dims:
        if type(d) is not int or not 0 <= d <= _MAX_DIM:
            return None
    # A product too large for _tensor's bound is far more bytes than any data section holds, so the size
    # comparison below refuses it as well (and _tensor then names the right reason).
    if (math.prod(dims) * bits + 7) // 8 != end - begin:
        return None
    return TensorInfo(name, dtype, dims, label, begin, end)


def _tensor(path: Path, label: str, name: str, entry: Any, data_len: int) -> TensorInfo:
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise InputError(f"{where}: entry must be an object with dtype, shape and data_offsets")
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise InputError(
            f"{where}: unknown dtype {brief(dtype)}",
            hint=f"safetensors dtypes are {', '.join(sorted(DTYPE_BITS))}",
        )
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_dim(d) for d in shape):
        raise InputError(
            f"{where}: shape must be a list of non-negative integers (at most {MAX_RANK}, each at most 2**63), "
            f"found {brief(shape)}"
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_dim(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise InputError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, found {brief(offsets)}")
    begin, end = int(offsets[0]), int(offsets[1])
    if end > data_len:
        raise InputError(
            f"{where}: data_offsets end {end} lies past the end of the data section ({data_len} bytes)",
            hint="the file is truncated or corrupt; re-download it",
        )
    numel = (
        0 if 0 in shape else math.prod(int(d) for d in shape) if sum(int(d).bit_length() for d in shape) < 256 else -1
    )
    if numel < 0:
        raise InputError(f"{where}: shape {brief(shape)} is impossibly large", hint="the file is corrupt")
    expected = (numel * DTYPE_BITS[dtype] + 7) // 8
    if end - begin != expected:
        raise InputError(
            f"{where}: {dtype} {shape} needs {expected} bytes but data_offsets span {end - begin}",
            hint="the file is corrupt",
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(int(d) for d in shape), file=label, begin=begin, end=end)


#: Bounds that keep arithmetic and messages on crafted headers cheap (real tensors have rank <= 8 or so).
MAX_RANK = 64
_MAX_DIM = 2**63


def _is_dim(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_DIM


def _check_layout(path: Path, tensors: dict[str, TensorInfo], data_len: int) -> None:
    """Tensors must tile the data section exactly: no gaps, no overlaps, nothing after the last one."""
    position = 0
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin != position:
            kind = "overlaps the previous tensor" if info.begin < position else "leaves a gap before it"
            raise InputError(
                f"{path}: tensor {info.name!r} starts at byte {info.begin} of the data section but the previous "
                f"tensor ends at {position}; it {kind}",
                hint="the file is corrupt",
            )
        position = info.end
    if position != data_len:
        raise InputError(
            f"{path}: the tensors cover {position} bytes but the data section has {data_len}",
            hint="the file is truncated, padded or corrupt; re-download it",
        )
