"""Serve several LoRA adapters with vLLM, refusing each adapter whose lock entry no longer holds.

    python examples/serving/vllm_guard.py --lock lora.lock --adapter support-bot --adapter sql-bot
    python examples/serving/vllm_guard.py --lock lora.lock --adapter support-bot --check-only   # no vLLM needed

Each adapter is checked with `lora_lock.guard` before its `LoRARequest` is built: vLLM loads LoRA weights lazily,
on the first request that names them, so without this check a drifted base or adapter would only show up as
wrong answers in production. A violation prints the full report and exits non-zero before the engine starts.
vLLM is imported only once every adapter passed (it is not needed to run the check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import lora_lock
from lora_lock.lock.io import read
from lora_lock.report import Format, renderer_for


def pinned(fields: dict[str, Any], lock_dir: Path) -> tuple[str, str | None]:
    """The Hub repo and its locked commit, or the directory next to the lock."""
    if "repo" in fields:
        return str(fields["repo"]), str(fields["revision"])
    return str(lock_dir / fields["source"]), None


def local_path(fields: dict[str, Any], lock_dir: Path) -> str:
    """vLLM's ``LoRARequest`` wants a local directory: fetch the locked Hub commit (from the cache when it is there)."""
    repo, revision = pinned(fields, lock_dir)
    if revision is None:
        return repo
    from huggingface_hub import snapshot_download

    return snapshot_download(repo, revision=revision)


def guarded(lockfile: Path, names: list[str]) -> int:
    """Check every adapter; print each violation. The exit code: 0 when all hold, 1 when any drifted, else 2
    (unusable input), as `lora-lock verify` has it."""
    codes = set()
    for name in names:
        try:
            lora_lock.guard(lockfile, adapters=[name])
        except lora_lock.LockViolation as violation:
            sys.stderr.write(renderer_for(Format.TEXT).render(violation.report))
            print(f"refusing to serve {name}: {violation.message}", file=sys.stderr)
            codes.add(violation.report.status.exit_code)
        except lora_lock.LoraLockError as exc:
            print(f"refusing to serve {name}: {exc}", file=sys.stderr)
            codes.add(2)
    return 1 if 1 in codes else max(codes, default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", default="lora.lock", type=Path)
    parser.add_argument("--adapter", action="append", required=True, help="an adapter's name in the lock (repeat)")
    parser.add_argument("--prompt", default="Hello")
    parser.add_argument("--check-only", action="store_true", help="check the adapters, then exit (no vLLM needed)")
    args = parser.parse_args(argv)

    refused = guarded(args.lock, args.adapter)
    if refused:
        return refused
    if args.check_only:
        print(f"lora.lock holds for {', '.join(args.adapter)}")
        return 0
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError:
        print("every adapter holds, but vLLM is not installed (pip install vllm)", file=sys.stderr)
        return 2

    lock = read(args.lock)
    lock_dir = args.lock.resolve().parent
    base, base_revision = pinned(lock["base"], lock_dir)
    entries = {a["name"]: a for a in lock["adapter"]}
    # vLLM preallocates LoRA slots: size them for the largest rank the lock records (per module, rank_pattern too).
    ranks = [int(m["rank"]) for name in args.adapter for m in entries[name].get("modules", [])]
    ranks += [int(entries[name]["settings"]["r"]) for name in args.adapter if "settings" in entries[name]]
    llm = LLM(
        model=base, revision=base_revision, enable_lora=True, max_loras=len(args.adapter), max_lora_rank=max(ranks)
    )
    requests = [
        LoRARequest(name, index, local_path(entries[name], lock_dir))
        for index, name in enumerate(args.adapter, start=1)
    ]
    params = SamplingParams(temperature=0.0, max_tokens=20)
    for request in requests:
        out = llm.generate([args.prompt], params, lora_request=request)
        print(f"[{request.lora_name}] {out[0].outputs[0].text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
