"""``generate``: read the base, tokenizer, adapters and environment, and write ``lora.lock``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.checker import default_base_spec, input_finding
from lora_lock.errors import InputError
from lora_lock.hashing import Progress
from lora_lock.inspect.adapter import read_adapter
from lora_lock.lockfile import dumps, write_atomic
from lora_lock.models import Category, Report, Severity
from lora_lock.observe import build_lock, observe
from lora_lock.sources import Resolved, resolve

GENERATE_CATEGORIES = (
    Category.BASE,
    Category.TOKENIZER,
    Category.ADAPTER,
    Category.COMPAT,
    Category.QUANTIZATION,
    Category.ENVIRONMENT,
)


@dataclass(frozen=True)
class GenerateResult:
    """``written`` is False when the lock was refused (``report`` says why) or already up to date."""

    path: Path
    report: Report
    written: bool
    lock: dict[str, Any] | None


def adapter_names(sources: Sequence[Resolved]) -> list[str]:
    """Name each adapter by its directory; when two share a name, by their paths."""
    names = [s.path.name for s in sources]
    if len(set(names)) == len(names):
        return names
    return [s.path.as_posix().strip("/").replace("/", "--") for s in sources]


def _fetch(source: Resolved, download: bool) -> Resolved:
    """With ``download``, bring a Hub source's files into the cache so their bytes are hashed, not trusted."""
    if not download or source.hub is None:
        return source
    from lora_lock.sources import from_snapshot
    from lora_lock.sources.hub import download_snapshot

    return from_snapshot(source.spec, download_snapshot(source.hub), trust_cache_names=False)


def generate(
    adapters: Sequence[str | Path],
    base: str | Path | None = None,
    output: str | Path = "lora.lock",
    *,
    tokenizer: str | Path | None = None,
    allow_symlinks: bool = False,
    download: bool = False,
    progress: Progress | None = None,
) -> GenerateResult:
    """Lock ``adapters`` over ``base`` into ``output``.

    Sources are local directories or Hub ``org/name[@revision]`` (resolved to a commit). Hub weights are not
    downloaded: their digests come from the Hub's LFS metadata and shapes from header range reads; with
    ``download=True`` the files are fetched into the cache and hashed. Refuses to write (status fail) when an
    adapter does not fit the base: a lock of a broken pairing protects nothing. Unusable input raises
    :class:`InputError`.
    """
    out = Path(output)
    if not adapters:
        raise InputError("no adapter given", hint="pass --adapter DIR (repeat it to lock several adapters)")
    sources = [_fetch(resolve(a, what="adapter"), download) for a in adapters]
    if base is None:
        named = {default_base_spec(read_adapter(s.path, require_weights=False, remote=s.remote)) for s in sources}
        if len(named) > 1:
            raise InputError(
                f"the adapters name different bases ({', '.join(sorted(named))})",
                hint="pass --base to say which base they are locked to",
            )
        base_source = resolve(named.pop(), relative_to=sources[0].path, what="base")
    else:
        base_source = resolve(base, what="base")
    base_source = _fetch(base_source, download)
    tok_source = _fetch(resolve(tokenizer, what="tokenizer"), download) if tokenizer is not None else None
    if not out.parent.is_dir():
        raise InputError(f"{out}: the directory {out.parent} does not exist")

    observed = observe(
        base_source,
        list(zip(adapter_names(sources), sources, strict=True)),
        tokenizer_source=tok_source,
        allow_symlinks=allow_symlinks,
        progress=progress,
    )
    report = Report.build(observed.findings, ran=GENERATE_CATEGORIES, title="lora-lock generate")
    if any(f.severity is Severity.ERROR for f in report.findings):
        return GenerateResult(path=out, report=report, written=False, lock=None)
    lock = build_lock(observed, out.parent)
    written = write_atomic(out, dumps(lock))
    return GenerateResult(path=out, report=report, written=written, lock=lock)


__all__ = ["GenerateResult", "generate", "input_finding"]
