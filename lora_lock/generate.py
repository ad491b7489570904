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
from lora_lock.sources import Resolved, resolve_local

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


def generate(
    adapters: Sequence[str | Path],
    base: str | Path | None = None,
    output: str | Path = "lora.lock",
    *,
    tokenizer: str | Path | None = None,
    allow_symlinks: bool = False,
    progress: Progress | None = None,
) -> GenerateResult:
    """Lock ``adapters`` over ``base`` into ``output``.

    Refuses to write (status fail) when an adapter does not fit the base: a lock of a broken pairing protects
    nothing. Unusable input raises :class:`InputError`.
    """
    out = Path(output)
    if not adapters:
        raise InputError("no adapter given", hint="pass --adapter DIR (repeat it to lock several adapters)")
    sources = [resolve_local(a, what="adapter") for a in adapters]
    if base is None:
        named = {default_base_spec(read_adapter(s.path, require_weights=False)) for s in sources}
        if len(named) > 1:
            raise InputError(
                f"the adapters name different bases ({', '.join(sorted(named))})",
                hint="pass --base DIR to say which base they are locked to",
            )
        base = named.pop()
        base_source = resolve_local(base, relative_to=sources[0].path, what="base")
    else:
        base_source = resolve_local(base, what="base")
    tok_source = resolve_local(tokenizer, what="tokenizer") if tokenizer is not None else None
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
