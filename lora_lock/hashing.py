"""Streaming, parallel sha256 of files.

hashlib releases the GIL while hashing, so a thread pool over files scales with cores; a fixed 1 MiB buffer
keeps memory flat whatever the file size. Digests are written ``sha256:<hex>`` so the algorithm travels with them.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from lora_lock.errors import InputError
from lora_lock.sources.fence import open_regular
from lora_lock.text import brief

ALGORITHM = "sha256"
BUFFER_BYTES = 1 << 20

#: Called with the number of bytes just hashed (from worker threads); used for progress bars.
Progress = Callable[[int], None]


#: What follows the prefix: a sha256 in lowercase hex, as hashlib and the Hub write it.
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileDigest:
    """One file as the lock records it: its ``sha256:<hex>`` digest and its size in bytes."""

    digest: str  # "sha256:<hex>"
    size: int


def digest_text(hexdigest: str) -> str:
    """``"ab12…"`` → ``"sha256:ab12…"``: the one way a digest is written, in the lock and in findings. The hex is
    taken as given (a Hub listing's or a cache blob's name); :meth:`Digest.from_str` is the validating way in."""
    return f"{ALGORITHM}:{hexdigest}"


def sha256_bytes(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of bytes already in memory (a canonical text, a token list)."""
    return digest_text(hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Digest:
    """A validated sha256 digest; ``str()`` gives its lock spelling, ``sha256:<64 lowercase hex>``."""

    hex: str

    def __post_init__(self) -> None:
        if not _HEX.fullmatch(self.hex):
            raise InputError(f"{brief(self.hex)} is not a sha256 hex digest (64 lowercase hex characters)")

    @classmethod
    def from_str(cls, text: str) -> Digest:
        """The digest ``text`` spells, or :class:`InputError` naming it when it is not ``sha256:<64 hex>`` (an
        edited lock's value is quoted briefly, never whole)."""
        algorithm, sep, hexdigest = text.partition(":") if isinstance(text, str) else ("", "", "")
        if algorithm != ALGORITHM or not sep or not _HEX.fullmatch(hexdigest):
            raise InputError(f"{brief(text)} is not a digest of the form {ALGORITHM}:<64 lowercase hex>")
        return cls(hexdigest)

    def __str__(self) -> str:
        return digest_text(self.hex)


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
    return FileDigest(digest_text(h.hexdigest()), size)


def default_workers() -> int:
    """Threads for hashing: the CPUs this process may run on (its affinity mask, not the machine's count)."""
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
