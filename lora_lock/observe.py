"""The world as lock-shaped data: what ``generate`` writes and what ``verify`` compares against the lock.

Both commands go through the same functions, so a fresh lock always verifies and any difference verify reports
is a real change of the inputs, never a difference of code paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lora_lock._version import __version__
from lora_lock.checker import BaseView, read_base, static_findings
from lora_lock.compat import Fit
from lora_lock.errors import InputError
from lora_lock.hashing import ALGORITHM, FileDigest, Progress, hash_files
from lora_lock.inspect.adapter import CONFIG_NAME, WEIGHTS_NAME, Adapter, read_adapter
from lora_lock.inspect.environment import DEFAULT_POLICY, Environment, current_environment
from lora_lock.inspect.tokenizer import FINGERPRINT_SCHEME, TokenizerFacts, read_tokenizer_facts, tokenizer_files
from lora_lock.lockfile import LOCK_VERSION
from lora_lock.models import Finding
from lora_lock.sources import Resolved

HASHING = {
    "algorithm": ALGORITHM,
    "files": f"{ALGORITHM} of each file's full bytes, streamed",
    "tokenizer-fingerprint": FINGERPRINT_SCHEME,
}
BASE_EXTRA_FILES = ("config.json", "generation_config.json")


def posix_relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` in POSIX form (the lock never stores absolute paths)."""
    rel = os.path.relpath(path.resolve(), start.resolve())
    return PurePosixPath(*Path(rel).parts).as_posix() if rel != "." else "."


def checked_file(root: Path, name: str, *, allow_symlinks: bool) -> Path:
    """The file ``name`` under ``root``, refusing symlinks that lead outside ``root`` unless allowed."""
    path = root / name
    if path.is_symlink() and not allow_symlinks:
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise InputError(f"{path}: broken or looping symlink ({exc})") from exc
        if not target.is_relative_to(root.resolve()):
            raise InputError(
                f"{path}: symlink points outside the locked directory {root} (to {target})",
                hint="copy the file into the directory, or pass --allow-symlinks if the link is intended",
            )
    return path


@dataclass
class Observed:
    """Everything read from the sources for one lock: facts, fits and the files to hash."""

    base: BaseView
    tokenizer_root: Path
    tokenizer: TokenizerFacts | None
    adapters: list[tuple[str, Adapter, Fit]]
    findings: list[Finding]
    files: dict[tuple[str, str], Path]  # (section, name) → path; section "base", "tokenizer" or "adapter:<name>"
    digests: dict[tuple[str, str], FileDigest]


def base_file_names(base: BaseView) -> list[str]:
    names = set(base.checkpoint.files)
    names.update(n for n in BASE_EXTRA_FILES if (base.source.path / n).is_file())
    return sorted(names)


def adapter_file_names(adapter: Adapter) -> list[str]:
    names = {CONFIG_NAME, WEIGHTS_NAME}
    names.update(tokenizer_files(adapter.root))
    return sorted(n for n in names if (adapter.root / n).is_file())


def observe(
    base_source: Resolved,
    adapters: Iterable[tuple[str, Resolved]],
    *,
    tokenizer_source: Resolved | None = None,
    allow_symlinks: bool = False,
    hash_selected: Callable[[tuple[str, str]], bool] = lambda _: True,
    progress: Progress | None = None,
) -> Observed:
    base = read_base(base_source)
    tok_root = (tokenizer_source or base_source).path
    files: dict[tuple[str, str], Path] = {}
    for name in base_file_names(base):
        files[("base", name)] = checked_file(base.source.path, name, allow_symlinks=allow_symlinks)
    for name in tokenizer_files(tok_root):
        files[("tokenizer", name)] = checked_file(tok_root, name, allow_symlinks=allow_symlinks)
    fitted: list[tuple[str, Adapter, Fit]] = []
    findings: list[Finding] = []
    for name, source in adapters:
        adapter = read_adapter(source.path)
        result, more = static_findings(adapter, base)
        fitted.append((name, adapter, result))
        findings += more
        for fname in adapter_file_names(adapter):
            files[(f"adapter:{name}", fname)] = checked_file(adapter.root, fname, allow_symlinks=allow_symlinks)
    selected = {k: p for k, p in files.items() if hash_selected(k)}
    by_path = hash_files(sorted(set(selected.values())), progress=progress)
    digests = {k: by_path[p] for k, p in selected.items()}
    return Observed(
        base=base,
        tokenizer_root=tok_root,
        tokenizer=read_tokenizer_facts(tok_root),
        adapters=fitted,
        findings=findings,
        files=files,
        digests=digests,
    )


def files_table(observed: Observed, section: str) -> dict[str, dict[str, Any]]:
    return {name: {"digest": d.digest, "size": d.size} for (sec, name), d in observed.digests.items() if sec == section}


def base_section(observed: Observed, lock_dir: Path) -> dict[str, Any]:
    facts = observed.base.facts
    quant = facts.quantization
    section: dict[str, Any] = {
        "source": posix_relative(observed.base.source.path, lock_dir),
        "config": facts.identity(),
        "weights-dtypes": observed.base.checkpoint.dtypes,
        "quantization": {"method": quant.method, **({"params": quant.params} if quant.params else {})}
        if quant
        else {"method": "none"},
        "files": files_table(observed, "base"),
    }
    if facts.dtype:
        section["dtype"] = facts.dtype
    if observed.base.source.repo_id:
        section["repo"] = observed.base.source.repo_id
    if observed.base.source.revision:
        section["revision"] = observed.base.source.revision
    return section


def tokenizer_section(observed: Observed, lock_dir: Path) -> dict[str, Any]:
    tok = observed.tokenizer
    section: dict[str, Any] = {
        "source": posix_relative(observed.tokenizer_root, lock_dir),
        "files": files_table(observed, "tokenizer"),
    }
    if tok is None:
        return section
    if tok.vocab_size is not None:
        section["vocab-size"] = tok.vocab_size
    if tok.special_tokens:
        section["special-tokens"] = tok.special_tokens
    if tok.chat_template:
        section["chat-template"] = tok.chat_template
    if tok.fingerprint:
        section["fingerprint"] = tok.fingerprint
        section["fingerprint-tokens"] = tok.fingerprint_tokens
    return section


def shape_text(shape: Iterable[int]) -> str:
    """``(4096, 16)`` → ``"4096x16"``: one token per shape keeps lock diffs one line per change."""
    return "x".join(str(d) for d in shape)


def module_rows(result: Fit) -> list[dict[str, Any]]:
    return [
        {
            "pattern": g.pattern,
            "count": g.count,
            "layers": g.layers,
            "kind": g.kind,
            "base-shape": shape_text(g.base_shape),
            "rank": g.rank,
            "lora-a": shape_text(g.lora_a),
            "lora-b": shape_text(g.lora_b),
            **({"quantized": g.quantized} if g.quantized else {}),
        }
        for g in result.modules
    ]


def adapter_section(observed: Observed, name: str, adapter: Adapter, result: Fit, lock_dir: Path) -> dict[str, Any]:
    section: dict[str, Any] = {
        "name": name,
        "source": posix_relative(adapter.root, lock_dir),
        "settings": adapter.config.settings(),
        "files": files_table(observed, f"adapter:{name}"),
        "modules": module_rows(result),
    }
    if adapter.config.base_model_name_or_path:
        section["base-named"] = adapter.config.base_model_name_or_path
    if result.saved:
        section["saved"] = [{"name": n, "shape": shape_text(s)} for n, s in result.saved]
    return section


def environment_section(env: Environment) -> dict[str, Any]:
    section: dict[str, Any] = {
        "versions": env.versions,
        "policy": {k: v for k, v in DEFAULT_POLICY.items() if k in env.versions},
    }
    if env.gpu:
        section["gpu"] = env.gpu
    return section


def build_lock(observed: Observed, lock_dir: Path, env: Environment | None = None) -> dict[str, Any]:
    adapters = sorted(
        (adapter_section(observed, n, a, r, lock_dir) for n, a, r in observed.adapters), key=lambda s: str(s["name"])
    )
    return {
        "lock-version": LOCK_VERSION,
        "generated-by": f"lora-lock {__version__}",
        "hashing": HASHING,
        "base": base_section(observed, lock_dir),
        "tokenizer": tokenizer_section(observed, lock_dir),
        "adapter": adapters,
        "environment": environment_section(env or current_environment()),
    }
