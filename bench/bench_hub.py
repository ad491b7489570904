"""Benchmark 4: Hub sources against a local Hub server (the real huggingface_hub client, 127.0.0.1 only).

- zero-download ``generate`` of a Llama-3-8B-shaped 4-shard base: requests made, bytes of weight files served
  (header ranges only), wall time;
- fast ``verify`` against the Hub cache: weight bytes hashed (must be 0), bytes read by the process, wall time.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from _adapters import ALL_PROJECTIONS, write_adapter
from _bases import make_base
from _util import ROOT, WORK, Section, log

HUB = WORK / "hub"


def _proc_read_bytes() -> int:
    """Bytes this process read through read() calls so far (Linux /proc/self/io ``rchar``)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def run(runs: int) -> Section:
    sys.path.insert(0, str(ROOT))
    import lora_lock.hashing as hashing
    from lora_lock.commands.generate import generate
    from lora_lock.commands.verify import verify
    from tests.fixtures.fake_hub import FakeHub, HubFile, build_cache_layout, hub_env

    sec = Section("4 hub")
    base, _, _ = make_base(WORK / "bases" / "Llama-3-8B", "Llama-3-8B")
    adapter = HUB / "adapter"
    write_adapter(adapter, base, base_name="org/llama-3-8b", r=16, targets=ALL_PROJECTIONS)
    # Sparse shards: give the server their sha256 up front (a stand-in digest: hashing 16 GB of holes is what we
    # are showing lora-lock does not need to do).
    files: dict[str, Any] = {}
    for path in sorted(base.iterdir()):
        if path.suffix == ".safetensors":
            files[path.name] = HubFile(path, sha256=hashlib.sha256(path.name.encode()).hexdigest(), lfs=True)
        elif path.is_file():
            files[path.name] = path.read_bytes()
    weight_bytes = sum(p.stat().st_size for p in base.glob("*.safetensors"))

    hashed: list[tuple[str, int]] = []
    real_hash_file = hashing.hash_file

    def spy(path: Path, progress: Any = None) -> Any:
        digest = real_hash_file(path, progress)
        hashed.append((Path(path).name, digest.size))
        return digest

    hashing.hash_file = spy  # type: ignore[assignment]
    try:
        with FakeHub() as hub:
            commit = hub.add_repo("org/llama-3-8b", files)
            gen_times, requests, served = [], 0, 0
            for i in range(runs):
                home = HUB / f"home-{i}"
                shutil.rmtree(home, ignore_errors=True)  # a cold cache: count every request
                with hub_env(hub, home):
                    hub.reset_log()
                    out = HUB / f"lock-{i}" / "lora.lock"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.unlink(missing_ok=True)
                    start = time.perf_counter()
                    result = generate([adapter], "org/llama-3-8b@main", out, probe=False)
                    gen_times.append(time.perf_counter() - start)
                    assert result.written, result.report
                    requests = len(hub.requests)
                    served = hub.bytes_served(".safetensors")
            log(f"hub: generate from metadata x{runs}: {requests} requests, {served} weight-file bytes served")
            sec.add(
                "generate, Llama-3-8B 4 shards, from Hub metadata",
                sorted(gen_times)[len(gen_times) // 2],
                "s",
                f"median of {runs}, in-process (imports excluded)",
            )
            sec.add("  HTTP requests made", requests, "", "model_info + small files + header ranges")
            sec.add(
                "  bytes of weight files served", served, "B", f"of {weight_bytes / 1e9:.1f} GB: header ranges only"
            )

            cache = HUB / "cache-home"
            shutil.rmtree(cache, ignore_errors=True)
            build_cache_layout(cache / "hub", "org/llama-3-8b", commit, files)
            lock = HUB / "lock-0" / "lora.lock"
            for deep in (False,):  # --deep would re-hash stand-in digests; the tests cover it on real bytes
                with hub_env(None, cache, offline=True):
                    hashed.clear()
                    before, rss_before = _proc_read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    start = time.perf_counter()
                    report = verify(lock, deep=deep)
                    wall = time.perf_counter() - start
                    read = _proc_read_bytes() - before
                    weights = sum(size for n, size in hashed if n.startswith("model") and n.endswith(".safetensors"))
                    others = sum(size for n, size in hashed) - weights
                label = "deep" if deep else "fast"
                sec.add(f"verify {label} from the Hub cache (offline)", wall, "s", f"status {report.status.value}")
                sec.add(
                    f"  {label}: base weight bytes hashed", weights, "B", "must be 0 in fast mode" if not deep else ""
                )
                sec.add(f"  {label}: other bytes hashed", others, "B", "the local 80 MiB adapter, configs, tokenizer")
                sec.add(f"  {label}: bytes read by the process", read, "B", "/proc/self/io rchar: the above + headers")
                sec.raw[f"verify_{label}"] = {
                    "wall_s": wall,
                    "weights_hashed": weights,
                    "rchar": read,
                    "maxrss_kib_before": rss_before,
                }
    finally:
        hashing.hash_file = real_hash_file  # type: ignore[assignment]
    sec.raw["generate_s"] = gen_times
    return sec
