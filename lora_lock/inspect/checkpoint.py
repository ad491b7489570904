"""The tensor table of a checkpoint directory: one ``.safetensors`` file or a sharded set with an index."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError
from lora_lock.inspect.safetensors_header import Header, TensorInfo, read_header
from lora_lock.sources.fence import check_name, read_text

#: File names transformers writes for full checkpoints, in the order it looks for them.
SINGLE_NAMES = ("model.safetensors",)
INDEX_NAMES = ("model.safetensors.index.json",)
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.ckpt")


@dataclass(frozen=True)
class Checkpoint:
    """All tensors of a checkpoint, keyed by name, with the shard each lives in."""

    root: Path
    files: tuple[str, ...]
    tensors: dict[str, TensorInfo]
    headers: tuple[Header, ...]

    @property
    def dtypes(self) -> dict[str, int]:
        """Count of tensors per dtype."""
        out: dict[str, int] = {}
        for info in self.tensors.values():
            out[info.dtype] = out.get(info.dtype, 0) + 1
        return dict(sorted(out.items()))


def read_json(path: Path, kind: str = "config") -> dict[str, Any]:
    """Read a JSON object file (a regular file, within the size bound of its ``kind``: see
    :data:`lora_lock.sources.fence.LIMITS`), turning every failure into an InputError naming the file."""
    text = read_text(path, kind)
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


def safe_relative(root: Path, name: str, what: Path) -> Path:
    """Resolve ``name`` under ``root`` and refuse names that would leave it (``../``, absolute, drive or UNC
    paths). Symlinks along the way were checked by the fence when the source's file set was listed."""
    return root / check_name(name, what)


#: Reads the header of a file that is not on local disk (a Hub file read with HTTP range requests).
RemoteHeader = Callable[[str], Header]


@dataclass(frozen=True)
class Remote:
    """Files of a source that live elsewhere: their names and how to read one's header."""

    names: frozenset[str]
    header: RemoteHeader


def read_checkpoint(root: Path, remote: Remote | None = None) -> Checkpoint:
    """Read the tensor table of the full-model checkpoint in ``root`` (headers only).

    Files missing from ``root`` are read through ``remote`` when given (their headers only).
    """
    # The order transformers loads in: a single model.safetensors wins over a shard index next to it.
    for name in SINGLE_NAMES:
        path = root / name
        if path.is_file() or path.is_symlink() or (remote is not None and name in remote.names):
            header = _header(root, name, remote)
            return Checkpoint(root=root, files=(name,), tensors=dict(header.tensors), headers=(header,))
    for index_name in INDEX_NAMES:
        index_path = root / index_name
        if index_path.is_file():
            return _read_sharded(root, index_path, remote)
    others = sorted(p.name for p in root.glob("*.safetensors"))
    if remote is not None:
        others = sorted(set(others) | {n for n in remote.names if n.endswith(".safetensors") and "/" not in n})
    if others:
        return read_files(root, others, remote)
    pickles = [n for n in PICKLE_NAMES if (root / n).exists()]
    if pickles:
        raise InputError(
            f"{root}: the base has only pickle weights ({', '.join(pickles)}); lora-lock never unpickles files",
            hint="convert the base to safetensors once, in a trusted environment (save_pretrained writes safetensors)",
        )
    raise InputError(
        f"{root}: no model.safetensors or model.safetensors.index.json found",
        hint="point --base at a directory holding the base model's config.json and safetensors weights",
    )


def _header(root: Path, name: str, remote: Remote | None) -> Header:
    path = safe_relative(root, name, root)
    if remote is not None and not path.is_file() and name in remote.names:
        return remote.header(name)
    return read_header(path, name)


def read_files(root: Path, names: list[str], remote: Remote | None = None) -> Checkpoint:
    """Read several safetensors files as one checkpoint (names relative to ``root``)."""
    tensors: dict[str, TensorInfo] = {}
    headers: list[Header] = []
    for name in names:
        header = _header(root, name, remote)
        headers.append(header)
        for key, info in header.tensors.items():
            if key in tensors:
                raise InputError(f"{root / name}: tensor {key!r} also appears in {tensors[key].file}")
            tensors[key] = info
    return Checkpoint(root=root, files=tuple(names), tensors=tensors, headers=tuple(headers))


def _read_sharded(root: Path, index_path: Path, remote: Remote | None) -> Checkpoint:
    doc = read_json(index_path, "index")
    weight_map = doc.get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise InputError(f"{index_path}: field `weight_map` must map tensor names to shard file names")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        path = safe_relative(root, shard, index_path)
        if not path.is_file() and not (remote is not None and shard in remote.names):
            raise InputError(
                f"{index_path}: shard {shard!r} named in `weight_map` is missing",
                hint="download every shard of the checkpoint",
            )
    checkpoint = read_files(root, shards, remote)
    for name, shard in weight_map.items():
        info = checkpoint.tensors.get(name)
        if info is None or info.file != shard:
            raise InputError(
                f"{index_path}: `weight_map` places tensor {name!r} in {shard}, but that shard does not hold it",
                hint="the index and the shards come from different revisions; re-download the checkpoint",
            )
    return Checkpoint(
        root=root, files=(INDEX_NAMES[0], *shards), tensors=checkpoint.tensors, headers=checkpoint.headers
    )
