"""The embedded demo: lock a tiny real adapter, then reproduce the cliff and watch `verify` catch it.

Runs on CPU in about a minute: a tiny Llama base, a BPE tokenizer trained in-process, and a LoRA adapter trained
a few steps with PEFT so it really changes the model's outputs. Everything is written under .demo/.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".demo"


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def run(*args: str, cwd: Path, expect: int) -> None:
    """Run the real CLI in a subprocess, show the command and its output, and check the exit code."""
    print(f"$ lora-lock {shlex.join(args)}", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "lora_lock", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    out = (proc.stdout + proc.stderr).rstrip()
    if out:
        print("\n".join("  " + line for line in out.splitlines()))
    print(f"  (exit {proc.returncode})", flush=True)
    if proc.returncode != expect:
        raise SystemExit(f"demo: expected exit {expect}, got {proc.returncode}")


def copy_repo(src: Path, name: str) -> Path:
    dst = WORK / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.simplefilter("ignore", FutureWarning)  # library deprecation notices while training the example
    from lora_lock.testing import tiny

    start = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    repo = WORK / "repo"
    banner("building the tiny example: BPE tokenizer, Llama base v1, LoRA adapter trained with PEFT")
    tok = tiny.train_bpe_tokenizer(WORK / "tokenizer")
    base = tiny.build_tiny_llama(repo / "base", tok, seed=0)
    adapter = tiny.train_lora(
        base,
        repo / "adapter",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        seed=0,
    )
    # Name the base the way a repository would: relative to the repository root, where the commands run.
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = "base"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    print(f"  adapter effect on a prompt: KL(adapted || base) = {tiny.adapter_kl(base, adapter):.4f}")

    banner("does the adapter fit the base? (static: headers and configs only, no torch)")
    run("check", "adapter", "--base", "base", cwd=repo, expect=0)

    banner("lock it: digests, shapes, environment, and the adapter-effect probe")
    run("generate", "--adapter", "adapter", "--name", "my-adapter", "--base", "base", cwd=repo, expect=0)
    lock = (repo / "lora.lock").read_text(encoding="utf-8")
    print("  " + "\n  ".join(lock.splitlines()[:40]) + "\n  ...")
    run("verify", cwd=repo, expect=0)

    banner("cliff 1: a silent provider update of the base (same shapes, new weights)")
    moved = copy_repo(repo, "provider-update")
    from safetensors.numpy import load_file, save_file

    weights = load_file(moved / "base" / "model.safetensors")
    key = next(k for k in sorted(weights) if k.endswith("mlp.down_proj.weight"))
    weights[key] = weights[key] * 1.05
    save_file(weights, moved / "base" / "model.safetensors", metadata={"format": "pt"})
    run("check", "adapter", "--base", "base", cwd=moved, expect=0)
    print("  ^ the shapes still fit: only the lock notices")
    run("verify", cwd=moved, expect=1)

    banner("cliff 2: a tokenizer swap (new vocabulary, same model files)")
    swapped = copy_repo(repo, "tokenizer-swap")
    tiny.train_bpe_tokenizer(WORK / "tokenizer-v2", vocab_size=600)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = WORK / "tokenizer-v2" / name
        if src.exists():
            shutil.copy(src, swapped / "base" / name)
    run("verify", "--only", "tokenizer", cwd=swapped, expect=1)

    banner("cliff 3: a new release renamed the modules the adapter targets (self_attn -> attention)")
    renamed = copy_repo(repo, "renamed-modules")
    weights = load_file(renamed / "base" / "model.safetensors")
    save_file(
        {k.replace(".self_attn.", ".attention."): v for k, v in weights.items()},
        renamed / "base" / "model.safetensors",
        metadata={"format": "pt"},
    )
    run("check", "adapter", "--base", "base", cwd=renamed, expect=1)
    run("verify", "--only", "compat", cwd=renamed, expect=1)

    banner("cliff 4: the adapter's effect is halved (lora_B x 0.5, as a scaling-rule change would do)")
    scaled = copy_repo(repo, "scaled-effect")
    weights = load_file(scaled / "adapter" / "adapter_model.safetensors")
    save_file(
        {k: (v * 0.5 if ".lora_B." in k else v) for k, v in weights.items()},
        scaled / "adapter" / "adapter_model.safetensors",
        metadata={"format": "pt"},
    )
    run("check", "adapter", "--base", "base", cwd=scaled, expect=0)
    print("  ^ every shape fits; the effect probe measures what the adapter now does")
    run("verify", "--only", "effect", cwd=scaled, expect=1)

    banner("what changed, in a reviewer's words")
    run("generate", "--from-lock", "-o", "lora.new.lock", cwd=moved, expect=0)
    run("diff", "lora.lock", "lora.new.lock", cwd=moved, expect=1)
    print(f"\ndemo finished in {time.monotonic() - start:.0f} s; files are under {WORK.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
