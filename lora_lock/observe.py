"""The world as lock-shaped data: what ``generate`` writes and what ``verify`` compares against the lock.

Both commands go through the same functions, so a fresh lock always verifies and any difference verify reports
is a real change of the inputs, never a difference of code paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
#: The digest of a file compared by size only (``verify(hash_weights=False)``, the serving guard's fast path).
UNHASHED = ""
BASE_EXTRA_FILES = ("config.json", "generation_config.json")


def checked_file(source: Resolved, name: str, *, allow_symlinks: bool) -> Path:
    """The local file ``name`` of ``source``, refusing symlinks that lead outside the source unless allowed.

    A Hub cache snapshot links into its repo's ``blobs/``: that is inside ``source.contain``, so it is fine.
    """
    root = source.path
    path = root / name
    if not path.exists() and not path.is_symlink():
        where = (
            f" (Hub {source.label}: fetch it with `hf download {source.repo_id} --revision {source.revision}`)"
            if source.repo_id
            else ""
        )
        raise InputError(f"{path}: file not found{where}")
    if path.is_symlink() and not allow_symlinks:
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise InputError(f"{path}: broken or looping symlink ({exc})") from exc
        fence = (source.contain or root).resolve()
        if not target.is_relative_to(fence):
            raise InputError(
                f"{path}: symlink points outside the locked directory {fence} (to {target})",
                hint="copy the file into the directory, or pass --allow-symlinks if the link is intended",
            )
    return path


@dataclass
class Observed:
    """Everything read from the sources for one lock: facts, fits and file digests."""

    base: BaseView
    tokenizer_source: Resolved
    tokenizer: TokenizerFacts | None
    adapters: list[tuple[str, Resolved, Adapter, Fit]]
    findings: list[Finding]
    digests: dict[tuple[str, str], FileDigest]  # (section, name); section "base", "tokenizer" or "adapter:<name>"
    unreadable: dict[str, InputError] = field(default_factory=dict)  # adapters left out (``skip_unreadable``)


def base_file_names(base: BaseView) -> list[str]:
    names = set(base.checkpoint.files)
    names.update(n for n in BASE_EXTRA_FILES if (base.source.path / n).is_file() or (base.source.path / n).is_symlink())
    return sorted(names)


def adapter_file_names(adapter: Adapter) -> list[str]:
    names = {CONFIG_NAME}
    if adapter.weights is not None:
        names.add(WEIGHTS_NAME)
    names.update(tokenizer_files(adapter.root))
    return sorted(names)


def observe(
    base_source: Resolved,
    adapters: Iterable[tuple[str, Resolved]],
    *,
    tokenizer_source: Resolved | None = None,
    allow_symlinks: bool = False,
    deep: bool = False,
    hash_selected: Callable[[tuple[str, str]], bool] = lambda _: True,
    size_only: Callable[[tuple[str, str]], bool] = lambda _: False,
    progress: Progress | None = None,
    skip_unreadable: bool = False,
    name_findings: bool | None = None,
) -> Observed:
    """Read every source. Digests proven without reading (``source.known``) are used unless ``deep``.

    ``skip_unreadable``: an adapter whose config or weights cannot be read is left out and its error kept in
    ``Observed.unreadable`` (``verify`` still checks the base and the other adapters); otherwise it raises.
    ``name_findings``: start each adapter's findings with its name (default: when there are several adapters)."""
    base = read_base(base_source)
    tok_source = tokenizer_source or base_source
    wanted: list[tuple[tuple[str, str], Resolved]] = []
    wanted += [(("base", n), base_source) for n in base_file_names(base)]
    wanted += [(("tokenizer", n), tok_source) for n in tokenizer_files(tok_source.path)]
    fitted: list[tuple[str, Resolved, Adapter, Fit]] = []
    findings: list[Finding] = []
    pairs = list(adapters)
    named = len(pairs) > 1 if name_findings is None else name_findings
    unreadable: dict[str, InputError] = {}
    for name, source in pairs:
        try:
            adapter = read_adapter(source.path, remote=source.remote)
            result, more = static_findings(adapter, base)
        except InputError as exc:
            if not skip_unreadable:
                raise
            unreadable[name] = exc
            continue
        fitted.append((name, source, adapter, result))
        findings += [f.for_adapter(name) for f in more] if named else more
        wanted += [((f"adapter:{name}", f), source) for f in adapter_file_names(adapter)]

    digests: dict[tuple[str, str], FileDigest] = {}
    to_hash: dict[tuple[str, str], Path] = {}
    for key, source in wanted:
        if not hash_selected(key):
            continue
        known = None if deep else source.known.get(key[1])
        if known is not None:
            digests[key] = known
        elif size_only(key):
            path = checked_file(source, key[1], allow_symlinks=allow_symlinks)
            digests[key] = FileDigest(UNHASHED, path.stat().st_size)
        else:
            to_hash[key] = checked_file(source, key[1], allow_symlinks=allow_symlinks)
    by_path = hash_files(sorted(set(to_hash.values())), progress=progress)
    digests.update({k: by_path[p] for k, p in to_hash.items()})
    return Observed(
        base=base,
        tokenizer_source=tok_source,
        tokenizer=read_tokenizer_facts(tok_source.path),
        adapters=fitted,
        findings=findings,
        digests=dict(sorted(digests.items())),
        unreadable=unreadable,
    )


def files_table(observed: Observed, section: str) -> dict[str, dict[str, Any]]:
    return {name: {"digest": d.digest, "size": d.size} for (sec, name), d in observed.digests.items() if sec == section}


def base_section(observed: Observed, lock_dir: Path) -> dict[str, Any]:
    facts = observed.base.facts
    quant = facts.quantization
    section: dict[str, Any] = {
        **observed.base.source.lock_fields(lock_dir),
        "config": facts.identity(),
        "weights-dtypes": observed.base.checkpoint.dtypes,
        "quantization": {"method": quant.method, **({"params": quant.params} if quant.params else {})}
        if quant
        else {"method": "none"},
        "files": files_table(observed, "base"),
    }
    if facts.dtype:
        section["dtype"] = facts.dtype
    return section


def tokenizer_section(observed: Observed, lock_dir: Path) -> dict[str, Any]:
    tok = observed.tokenizer
    section: dict[str, Any] = {
        **observed.tokenizer_source.lock_fields(lock_dir),
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


def adapter_section(
    observed: Observed, name: str, source: Resolved, adapter: Adapter, result: Fit, lock_dir: Path
) -> dict[str, Any]:
    section: dict[str, Any] = {
        "name": name,
        **source.lock_fields(lock_dir),
        "settings": adapter.config.settings(),
        "files": files_table(observed, f"adapter:{name}"),
        "modules": module_rows(result),
    }
    if adapter.config.base_model_name_or_path:
        named = adapter.config.base_model_name_or_path
        # A local absolute path (what PEFT writes for local bases) would tie the lock to one machine: keep ids
        # and relative paths only.
        if not PurePosixPath(named).is_absolute() and not named.startswith(("~", "\\")) and ":" not in named[:3]:
            section["base-named"] = named
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
        (adapter_section(observed, n, s, a, r, lock_dir) for n, s, a, r in observed.adapters),
        key=lambda s: str(s["name"]),
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
