"""Streaming, parallel sha256 of files.

hashlib releases the GIL while hashing, so a thread pool over files scales with cores; a fixed 1 MiB buffer
keeps memory flat whatever the file size. Digests are written ``sha256:<hex>`` so the algorithm travels with them.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from lora_lock.errors import InputError
from lora_lock.fence import open_regular

ALGORITHM = "sha256"
BUFFER_BYTES = 1 << 20

#: Called with the number of bytes just hashed (from worker threads); used for progress bars.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class FileDigest:
    digest: str  # "sha256:<hex>"
    size: int


def prefixed(hexdigest: str) -> str:
    return f"{ALGORITHM}:{hexdigest}"


def sha256_bytes(data: bytes) -> str:
    return prefixed(hashlib.sha256(data).hexdigest())


def hash_file(path: Path, progress: Progress | None = None) -> FileDigest:
    """sha256 of one regular file, streamed; the size is the number of bytes actually hashed. A FIFO or a device
    is refused (never waited on or read forever), and a file that grows while it is read is refused."""
    h = hashlib.sha256()
    buf = bytearray(BUFFER_BYTES)
    view = memoryview(buf)
    size = 0
    try:
        with open_regular(path, buffering=0) as fh:
            before = os.fstat(fh.fileno())
            while size <= before.st_size:
                n = cast(io.RawIOBase, fh).readinto(buf)
                if not n:
                    break
                h.update(view[:n])
                size += n
                if progress is not None:
                    progress(n)
            after = os.fstat(fh.fileno())
    except OSError as exc:
        raise InputError(f"{path}: cannot read for hashing: {exc.strerror or exc}") from exc
    if size != before.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        # A digest of bytes from two versions of the file would match no version of it: refuse it.
        raise InputError(
            f"{path}: the file changed while it was being hashed ({before.st_size} → {after.st_size} bytes)",
            hint="wait for the writer (a download, a sync) to finish, then run again",
        )
    return FileDigest(prefixed(h.hexdigest()), size)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def hash_files(
    paths: Sequence[Path], *, workers: int | None = None, progress: Progress | None = None
) -> dict[Path, FileDigest]:
    """Hash files in parallel (largest first, so the pool ends together). Order of the result follows ``paths``."""
    if not paths:
        return {}
    n = min(workers or default_workers(), len(paths))
    lock = threading.Lock()

    def report(nbytes: int) -> None:
        if progress is not None:
            with lock:
                progress(nbytes)

    def size_of(p: Path) -> int:
        try:
            return p.stat().st_size
        except OSError:
            return 0

    order = sorted(paths, key=size_of, reverse=True)
    if n == 1:
        results = {p: hash_file(p, report) for p in order}
    else:
        from concurrent.futures import ThreadPoolExecutor  # its import (logging, queue) is for hashing only

        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="lora-lock-hash") as pool:
            futures = {p: pool.submit(hash_file, p, report) for p in order}
            results = {p: f.result() for p, f in futures.items()}
    return {p: results[p] for p in paths}
