"""Serve a LoRA adapter with PEFT only when lora.lock still holds.

    python examples/serving/peft_guard.py --lock lora.lock --adapter support-bot "Hello"

Before any weight is loaded, `lora_lock.guard` re-checks what the lock pins for this adapter (base and adapter files,
tokenizer, shapes, quantization, installed versions) in well under a second for local files. On drift it raises
`lora_lock.LockViolation`, whose `report` holds every finding: print it and exit non-zero, so the orchestrator keeps
the previous replica instead of serving an adapter that silently does nothing (or the wrong thing).
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
    """What to hand to ``from_pretrained``: the Hub repo and its locked commit, or the directory next to the lock."""
    if "repo" in fields:
        return str(fields["repo"]), str(fields["revision"])
    return str(lock_dir / fields["source"]), None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", default="lora.lock", type=Path)
    parser.add_argument("--adapter", required=True, help="the adapter's name in the lock")
    parser.add_argument("prompt", nargs="?", default="Hello")
    args = parser.parse_args(argv)

    try:
        lora_lock.guard(args.lock, adapters=[args.adapter])
    except lora_lock.LockViolation as violation:
        sys.stderr.write(renderer_for(Format.TEXT).render(violation.report))
        print(f"refusing to serve {args.adapter}: {violation.message}", file=sys.stderr)
        return violation.report.status.exit_code
    except lora_lock.LoraLockError as exc:  # the lock itself is unusable (missing, not TOML, unknown adapter)
        print(f"refusing to serve {args.adapter}: {exc}", file=sys.stderr)
        return 2

    # The lock holds: load exactly what it pins.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lock = read(args.lock)
    lock_dir = args.lock.resolve().parent
    base, base_revision = pinned(lock["base"], lock_dir)
    entry = next(a for a in lock["adapter"] if a["name"] == args.adapter)
    adapter, adapter_revision = pinned(entry, lock_dir)

    tokenizer = AutoTokenizer.from_pretrained(base, revision=base_revision)
    model = AutoModelForCausalLM.from_pretrained(base, revision=base_revision)
    model = PeftModel.from_pretrained(model, adapter, revision=adapter_revision)
    model.eval()

    inputs = tokenizer(args.prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    print(tokenizer.decode(output[0], skip_special_tokens=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
