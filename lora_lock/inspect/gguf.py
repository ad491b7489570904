"""A bounded, validating reader of GGUF headers (llama.cpp's file format), with the standard library only.

The layout (versions 2 and 3): ``b"GGUF"``, a uint32 version, uint64 tensor and key/value counts, the key/value
metadata (typed values: integers, floats, bools, strings, arrays of them), one info record per tensor (name,
dims, ggml type, offset into the data section) and, at the next multiple of ``general.alignment``, the data.
Only the header is read, in bounded chunks: every count and length is checked against what the file can still
hold before anything is allocated or looped over, and the header as a whole is capped. A GGUF file stores a
tensor's dims innermost first (``ne[0]`` is the row length), the reverse of torch's shape: :attr:`GGUFTensor.shape`
gives torch's order. Every way the file can be wrong is an :class:`InputError` naming the file and the fault.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from lora_lock.errors import InputError
from lora_lock.inspect.gguf_names import ggml_type
from lora_lock.text import brief

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
#: The largest header read. Real ones stay well under 50 MB even with a 256k-token vocabulary and its merges.
MAX_HEADER_BYTES = 256 * 1024 * 1024
MAX_TENSORS = 1_000_000
MAX_KV = 1_000_000
#: llama.cpp's own limits: GGML_MAX_DIMS, and names shorter than GGML_MAX_NAME (64).
MAX_DIMS = 4
MAX_NAME_BYTES = 63
MAX_KEY_BYTES = 65535
MAX_ARRAY_DEPTH = 3
#: Arrays up to this many elements keep their values; longer ones (vocabularies, merges) only their length.
KEEP_ARRAY = 64
_CHUNK = 1 << 20

# Value types: id → (name, struct code, size). Strings (8) and arrays (9) have their own layouts.
_SCALARS: dict[int, tuple[str, str, int]] = {
    0: ("uint8", "B", 1),
    1: ("int8", "b", 1),
    2: ("uint16", "H", 2),
    3: ("int16", "h", 2),
    4: ("uint32", "I", 4),
    5: ("int32", "i", 4),
    6: ("float32", "f", 4),
    7: ("bool", "B", 1),
    10: ("uint64", "Q", 8),
    11: ("int64", "q", 8),
    12: ("float64", "d", 8),
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array too long to keep (a vocabulary): its element type and length."""

    element_type: str
    count: int


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor info record. ``dims`` as stored (innermost first); ``offset`` relative to the data section."""

    name: str
    dims: tuple[int, ...]
    type_id: int
    type_name: str
    offset: int
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """The dims in torch's order (outermost first): ``[out, in]`` for a linear layer's weight."""
        return self.dims[::-1]


@dataclass(frozen=True)
class GGUFFile:
    """A parsed, validated GGUF header."""

    path: Path
    version: int
    big_endian: bool
    alignment: int
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]
    data_offset: int
    file_size: int

    def type_counts(self) -> dict[str, int]:
        """How many tensors of each ggml type (``{"F32": 65, "Q4_K": 193, ...}``), sorted by name."""
        out: dict[str, int] = {}
        for info in self.tensors.values():
            out[info.type_name] = out.get(info.type_name, 0) + 1
        return dict(sorted(out.items()))


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file: a FIFO or device named ``model.gguf`` would block
    or stream forever. ``O_NONBLOCK`` makes the open itself return at once; the check is on the opened file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(
                f"{path}: not a regular file (a {_kind(mode)}); lora-lock reads GGUF weights only from files",
                hint="point --base at the .gguf file itself, or the directory holding it",
            )
        fh = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    return fh


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "directory" if stat.S_ISDIR(mode) else "special file"


class _Cursor:
    """Reads the header front to back from a file, in chunks, never past the header cap or the file's end."""

    def __init__(self, fh: BinaryIO, path: Path, size: int) -> None:
        self.fh, self.path, self.size = fh, path, size
        self.limit = min(size, MAX_HEADER_BYTES)
        self.buf = bytearray()
        self.pos = 0
        self.order = "<"
        self.elements = 0

    def fail(self, what: str, hint: str = "the file is corrupt or not a GGUF file; re-download it") -> InputError:
        return InputError(f"{self.path}: {what}", hint=hint)

    def need(self, n: int, what: str) -> None:
        end = self.pos + n
        if end <= len(self.buf):
            return
        if end > self.limit:
            if end > self.size:
                raise self.fail(
                    f"truncated GGUF header: {what} needs {n} bytes at offset {self.pos} but the file has {self.size}",
                    hint="the file is truncated; re-download it",
                )
            raise self.fail(f"GGUF header larger than the {MAX_HEADER_BYTES}-byte limit (at {what})")
        want = max(end - len(self.buf), min(_CHUNK, self.limit - len(self.buf)))
        try:
            chunk = self.fh.read(want)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc
        self.buf += chunk or b""
        if end > len(self.buf):
            raise self.fail(f"truncated GGUF header: the file ended while reading {what}", hint="re-download it")

    def unpack(self, code: str, size: int, what: str) -> Any:
        self.need(size, what)
        (value,) = struct.unpack_from(self.order + code, self.buf, self.pos)
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        value: int = self.unpack("I", 4, what)
        return value

    def u64(self, what: str) -> int:
        value: int = self.unpack("Q", 8, what)
        return value

    def count(self, what: str, maximum: int, min_bytes: int) -> int:
        """A uint64 count whose records (each at least ``min_bytes``) must fit in the rest of the header."""
        value = self.u64(what)
        room = (self.limit - self.pos) // max(min_bytes, 1)
        if value > maximum or value > room:
            raise self.fail(
                f"{what} is {value}, which cannot be right: the limit is {maximum} and the rest of the header "
                f"holds at most {room}"
            )
        return value

    def raw_string(self, what: str, maximum: int) -> bytes:
        length = self.u64(f"the length of {what}")
        if length > maximum or length > self.limit - self.pos:
            raise self.fail(f"{what} claims {length} bytes (limit {maximum}, {self.limit - self.pos} left)")
        self.need(length, what)
        data = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.limit - self.pos:
            self.need(n, what)  # raises with the right words (truncated / too large)
        self.need(n, what)
        self.pos += n


def read_gguf(path: Path) -> GGUFFile:
    """Read and validate the header of one ``.gguf`` file (no tensor data is read)."""
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        cur = _Cursor(fh, path, size)
        return _parse(cur)


def _parse(cur: _Cursor) -> GGUFFile:
    path = cur.path
    cur.need(min(4, cur.size), "the magic")
    magic = bytes(cur.buf[:4])
    if magic != MAGIC:
        raise InputError(
            f"{path}: not a GGUF file: it starts with {brief(magic.decode('latin-1'))}, not 'GGUF'"
            + (f" (the file has only {cur.size} bytes)" if cur.size < 4 else ""),
            hint="re-download the file; it may be truncated, a Git LFS pointer or another format renamed .gguf",
        )
    cur.pos = 4
    raw_version = cur.u32("the version")
    version, big_endian = raw_version, False
    swapped = struct.unpack(">I", struct.pack("<I", raw_version))[0]
    if raw_version not in VERSIONS and swapped in (1, *VERSIONS):
        version, big_endian, cur.order = swapped, True, ">"
    if version not in VERSIONS:
        detail = (
            "version 1 is the 2023 pre-release layout (32-bit counts) that llama.cpp no longer reads"
            if version == 1
            else "lora-lock reads GGUF versions 2 and 3"
        )
        raise InputError(
            f"{path}: unsupported GGUF version {version}: {detail}",
            hint="convert the model again with a current llama.cpp (convert_hf_to_gguf.py), or check the file is "
            "not corrupt",
        )
    n_tensors = cur.count("the tensor count", MAX_TENSORS, 8 + 4 + 4 + 8)
    n_kv = cur.count("the metadata key/value count", MAX_KV, 8 + 4 + 1)
    metadata: dict[str, Any] = {}
    types: dict[str, int] = {}
    for i in range(n_kv):
        raw_key = cur.raw_string(f"metadata key #{i}", MAX_KEY_BYTES)
        key = _text(cur, raw_key, f"metadata key #{i}")
        if key in metadata:
            raise cur.fail(f"metadata key {brief(key)} appears twice")
        types[key] = cur.u32(f"the type of metadata key {brief(key)}")
        metadata[key] = _value(cur, types[key], f"metadata key {brief(key)}", depth=0)
    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        value = metadata["general.alignment"]
        if types["general.alignment"] != 4 or value == 0 or value & (value - 1):
            raise cur.fail(f"`general.alignment` must be a uint32 power of two, found {brief(value)}")
        alignment = value
    tensors = _tensor_infos(cur, n_tensors, alignment)
    data_offset = -(-cur.pos // alignment) * alignment
    data_len = cur.size - data_offset
    end = max((t.offset + t.nbytes for t in tensors.values()), default=0)
    if tensors and end > data_len:
        raise InputError(
            f"{path}: truncated GGUF file: the tensors need {end} bytes of data after offset {data_offset}, but the "
            f"file has {max(data_len, 0)}",
            hint="re-download the file",
        )
    return GGUFFile(
        path=path,
        version=version,
        big_endian=big_endian,
        alignment=alignment,
        metadata=metadata,
        tensors=tensors,
        data_offset=data_offset,
        file_size=cur.size,
    )


def _text(cur: _Cursor, raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise cur.fail(f"{what} is not valid UTF-8") from exc


def _value(cur: _Cursor, type_id: int, what: str, depth: int) -> Any:
    scalar = _SCALARS.get(type_id)
    if scalar is not None:
        name, code, size = scalar
        value = cur.unpack(code, size, what)
        if name == "bool":
            if value not in (0, 1):
                raise cur.fail(f"{what}: a bool must be 0 or 1, found {value}")
            return bool(value)
        if name.startswith("float") and not math.isfinite(value):
            return None  # NaN / inf: nothing lora-lock reads is a float, and NaN never compares equal
        return value
    if type_id == _STRING:
        return cur.raw_string(what, MAX_HEADER_BYTES).decode("utf-8", "replace")
    if type_id == _ARRAY:
        return _array(cur, what, depth)
    raise cur.fail(f"{what} has unknown value type {type_id} (GGUF value types are 0 to 12)")


def _array(cur: _Cursor, what: str, depth: int) -> Any:
    if depth >= MAX_ARRAY_DEPTH:
        raise cur.fail(f"{what}: arrays nested more than {MAX_ARRAY_DEPTH} deep")
    element = cur.u32(f"the element type of {what}")
    scalar = _SCALARS.get(element)
    min_size = scalar[2] if scalar is not None else 8 if element == _STRING else 12
    count = cur.count(f"the length of array {what}", MAX_HEADER_BYTES, min_size)
    cur.elements += count
    if cur.elements > MAX_HEADER_BYTES // 8:
        raise cur.fail(f"{what}: more array elements in the header than any real model has")
    keep = count <= KEEP_ARRAY
    if scalar is not None and not keep:
        cur.skip(count * scalar[2], what)
        return ArrayInfo(scalar[0], count)
    if element == _STRING and not keep:
        # The hot loop of a real header (a 128k-token vocabulary, 280k merges): only lengths are read, and the
        # buffer is topped up only when a string runs past what has been read so far.
        unpack = struct.Struct(cur.order + "Q").unpack_from
        buf, pos = cur.buf, cur.pos
        for i in range(count):
            if pos + 8 > len(buf):
                cur.pos = pos
                cur.need(8, f"the length of string #{i} of {what}")
                buf = cur.buf
            (length,) = unpack(buf, pos)
            pos += 8 + length
            if pos > len(buf):
                cur.pos = pos - length
                cur.skip(length, f"string #{i} of {what}")
                buf = cur.buf
        cur.pos = pos
        return ArrayInfo("string", count)
    if element not in _SCALARS and element not in (_STRING, _ARRAY):
        raise cur.fail(f"{what} has unknown element type {element} (GGUF value types are 0 to 12)")
    values = [_value(cur, element, f"element #{i} of {what}", depth + 1) for i in range(count)]
    return values if keep else ArrayInfo("array", count)


def _tensor_infos(cur: _Cursor, count: int, alignment: int) -> dict[str, GGUFTensor]:
    tensors: dict[str, GGUFTensor] = {}
    expected = 0
    for i in range(count):
        name = _text(cur, cur.raw_string(f"the name of tensor #{i}", 1024), f"the name of tensor #{i}")
        where = f"tensor {brief(name)}"
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise cur.fail(f"{where}: the name is longer than llama.cpp's {MAX_NAME_BYTES}-byte limit")
        if name in tensors:
            raise cur.fail(f"{where} appears twice")
        n_dims = cur.u32(f"the dimension count of {where}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.fail(f"{where} has {n_dims} dimensions; GGML tensors have 1 to {MAX_DIMS}")
        dims = tuple(cur.u64(f"dimension {d} of {where}") for d in range(n_dims))
        if sum(d.bit_length() for d in dims) > 63 and 0 not in dims:
            raise cur.fail(f"{where}: dims {list(dims)} have more elements than a tensor can (2**63)")
        type_id = cur.u32(f"the type of {where}")
        kind = ggml_type(type_id)
        if kind is None:
            raise cur.fail(
                f"{where} has ggml type {type_id}, which the GGUF format does not define",
                hint="the file is corrupt, or from a llama.cpp newer than this lora-lock knows",
            )
        type_name, block, type_size = kind
        if dims[0] % block:
            raise cur.fail(f"{where}: its row length {dims[0]} is not a multiple of {type_name}'s block size {block}")
        nbytes = math.prod(dims) // block * type_size
        offset = cur.u64(f"the data offset of {where}")
        if offset != expected:
            raise cur.fail(
                f"{where} starts at data offset {offset}, but the tensors before it end at {expected} "
                f"(GGUF stores tensors in order, each aligned to {alignment} bytes)"
            )
        expected = offset + -(-nbytes // alignment) * alignment
        tensors[name] = GGUFTensor(name, dims, type_id, type_name, offset, nbytes)
    return tensors
