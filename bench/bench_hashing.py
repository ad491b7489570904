"""Benchmark 2: sha256 throughput of lora_lock.hashing against the obvious alternatives, and its memory."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from _util import GIB, MIB, PY, WORK, Section, child_env, cores, log, median, spawn, timed
from huggingface_hub.utils.sha import sha_fileobj

from lora_lock.hashing import hash_file, hash_files

HASH_DIR = WORK / "hash"
FILES = 4
FILE_MIB = 256
SMALL_MIB = 64
SPARSE_GIB = 1
CHUNK = 16 * MIB

#: The child used for peak-RSS runs: import the module, hash the files given, print nothing.
RSS_CHILD = (
    "import sys\nfrom pathlib import Path\nfrom lora_lock.hashing import hash_files\n"
    "hash_files([Path(a) for a in sys.argv[1:]])\n"
)


def random_file(path: Path, size: int) -> Path:
    """A file of ``size`` REAL random bytes; kept between runs (only its size is checked)."""
    if path.is_file() and path.stat().st_size == size:
        return path
    log(f"writing {size // MIB} MiB of random bytes to {path.relative_to(WORK)} (once)")
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as fh:
        left = size
        while left:
            n = min(CHUNK, left)
            fh.write(os.urandom(n))
            left -= n
    tmp.replace(path)
    return path


def sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that is all hole (zeros, no disk): same hashing work, no disk space."""
    if not (path.is_file() and path.stat().st_size == size):
        with path.open("wb") as fh:
            fh.truncate(size)
    return path


def warm(paths: list[Path]) -> None:
    """Read every byte once so the timed runs measure hashing, not the disk."""
    buf = bytearray(MIB)
    for p in paths:
        with p.open("rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def hashlib_single(paths: list[Path]) -> None:
    """The plain baseline: one thread, hashlib.sha256, 1 MiB reads."""
    for p in paths:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            while chunk := fh.read(MIB):
                h.update(chunk)
        h.hexdigest()


def hub_sha(paths: list[Path]) -> None:
    """huggingface_hub's own public helper (what its upload / cache code uses), 1 MiB chunks."""
    for p in paths:
        with p.open("rb") as fh:
            sha_fileobj(fh)


def sha256sum(paths: list[Path]) -> None:
    subprocess.run(["sha256sum", *map(str, paths)], check=True, stdout=subprocess.DEVNULL)


def run(runs: int) -> Section:
    sec = Section("2 hashing")
    HASH_DIR.mkdir(parents=True, exist_ok=True)
    big = [random_file(HASH_DIR / f"random-{i}.bin", FILE_MIB * MIB) for i in range(FILES)]
    small = random_file(HASH_DIR / f"random-{SMALL_MIB}m.bin", SMALL_MIB * MIB)
    sparse = sparse_file(HASH_DIR / f"sparse-{SPARSE_GIB}g.bin", SPARSE_GIB * GIB)
    total = sum(p.stat().st_size for p in big)
    total_mib = total / MIB
    log(f"hashing: warming the page cache ({total_mib:.0f} MiB + {SMALL_MIB} MiB + {SPARSE_GIB} GiB sparse)")
    warm([*big, small, sparse])

    # Sanity: every method computes the same digest of the same bytes.
    ref = hash_file(big[0]).digest.split(":", 1)[1]
    with big[0].open("rb") as fh:
        assert sha_fileobj(fh).hex() == ref

    ncores = cores()
    methods: list[tuple[str, Callable[[], object]]] = [
        (f"lora_lock hash_files (pool, {ncores} threads)", lambda: hash_files(big)),
        ("lora_lock hash_files workers=1", lambda: hash_files(big, workers=1)),
        ("hashlib.sha256 1 MiB reads, 1 thread", lambda: hashlib_single(big)),
        ("huggingface_hub sha_fileobj, 1 thread", lambda: hub_sha(big)),
    ]
    if shutil.which("sha256sum"):
        methods.append(("sha256sum (coreutils, 1 process)", lambda: sha256sum(big)))
    rate: dict[str, float] = {}
    for label, fn in methods:
        log(f"hashing: {label}")
        times = timed(fn, runs, warmup=1)
        t = median(times)
        rate[label] = total_mib / t
        sec.raw[label] = {"seconds": times, "median_s": t, "mib_per_s": rate[label]}
        sec.add(label, rate[label], "MiB/s", f"{FILES}x{FILE_MIB} MiB random, cached; median {t:.2f} s")

    par = rate[methods[0][0]]
    single = rate["hashlib.sha256 1 MiB reads, 1 thread"]
    sec.add("RATIO parallel / single-core hashlib", par / single, "x", f"{ncores} cores")
    sec.add(
        "RATIO efficiency = parallel / (cores x single)",
        par / (ncores * single),
        "",
        "1.0 = perfect scaling over cores",
    )
    sec.add("RATIO hash_files workers=1 / hashlib", rate["lora_lock hash_files workers=1"] / single, "x")
    sec.add(
        "RATIO parallel / huggingface_hub sha_fileobj",
        par / rate["huggingface_hub sha_fileobj, 1 thread"],
        "x",
    )
    if "sha256sum (coreutils, 1 process)" in rate:
        sec.add("RATIO parallel / sha256sum", par / rate["sha256sum (coreutils, 1 process)"], "x")
        sec.add(
            "RATIO hashlib 1 thread / sha256sum",
            single / rate["sha256sum (coreutils, 1 process)"],
            "x",
            "same work, one core each",
        )

    # Peak RSS of a hashing child as the hashed size grows: the 1 MiB buffer per worker keeps it flat.
    cases: list[tuple[str, list[Path]]] = [
        ("import only (0 B)", []),
        (f"{SMALL_MIB} MiB (1 file)", [small]),
        (f"{FILE_MIB} MiB (1 file)", [big[0]]),
        (f"{SPARSE_GIB} GiB (1 sparse file)", [sparse]),
        (f"{FILES * FILE_MIB // 1024} GiB ({FILES} files, pool)", big),
    ]
    rss: dict[str, int] = {}
    for label, paths in cases:
        log(f"hashing: peak RSS, {label}")
        r = spawn([PY, "-c", RSS_CHILD, *map(str, paths)], env=child_env())
        if r.returncode != 0:
            raise RuntimeError(f"hashing child failed: {r.stderr[-2000:]}")
        rss[label] = r.maxrss_kib
        sec.add(f"peak RSS hashing {label}", r.maxrss_kib / 1024, "MiB", f"{r.wall_s:.2f} s")
    base, small_rss, biggest = rss[cases[0][0]], rss[cases[1][0]], max(rss[c[0]] for c in cases[2:])
    sec.add(
        f"RATIO peak RSS largest / {SMALL_MIB} MiB",
        biggest / small_rss,
        "x",
        f"for 16x the bytes; +{(biggest - base) / 1024:.1f} MiB over import only",
    )
    sec.raw["peak_rss_kib"] = rss
    sec.raw["cores"] = ncores
    return sec
