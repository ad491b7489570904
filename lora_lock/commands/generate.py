"""``generate``: read the base, tokenizer, adapters and environment, and write ``lora.lock``."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from lora_lock.compat.base import default_base_spec
from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Report, Severity
from lora_lock.hashing import Progress
from lora_lock.inspect.adapter import read_adapter
from lora_lock.inspect.environment import current_environment
from lora_lock.lock.io import parse, write_atomic
from lora_lock.lock.model import Golden, Lock, Probe
from lora_lock.lock.snapshot import Observed, build_lock, observe
from lora_lock.probe.loaded import CODE_DROPPED
from lora_lock.probe.sidecar import Step
from lora_lock.runtime import lock_stack
from lora_lock.sources.resolve import Resolved, posix_relative, resolve
from lora_lock.text import short_digest
from lora_lock.userregex import per_run

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
    lock: Lock | None


def adapter_names(sources: Sequence[Resolved], lock_dir: Path) -> list[str]:
    """Name each adapter by its directory (or Hub repo); when two share a name, by their path relative to the
    lock (or their repo id), so the name never depends on how the path was typed."""
    seen: dict[str, str] = {}
    for s in sources:
        key = f"{s.repo_id}@{s.revision}" if s.repo_id else str(s.path.resolve())
        if key in seen:
            raise InputError(f"adapter {s.spec} is given twice (also as {seen[key]})", hint="pass each adapter once")
        seen[key] = str(s.spec)
    # A directory is named as written (a symlink ``adapter`` → ``/shared/v3`` is "adapter"), like its source path.
    names = [s.repo_id.rpartition("/")[2] if s.repo_id else Path(os.path.abspath(s.path)).name for s in sources]
    if len(set(names)) == len(names):
        return names
    # ".." stays in the long name: "../x/a" and "x/a" are different adapters and must keep different names.
    long = [s.repo_id or posix_relative(s.path, lock_dir) for s in sources]
    return [n.replace("/", "--") for n in long]


def _fetch(source: Resolved, download: bool) -> Resolved:
    """With ``download``, bring a Hub source's files into the cache so their bytes are hashed, not trusted."""
    if not download or source.hub is None:
        return source
    from lora_lock.sources.hub import download_snapshot
    from lora_lock.sources.resolve import from_snapshot

    return from_snapshot(
        source.spec, download_snapshot(source.hub), trust_cache_names=False, allow_symlinks=source.allow_symlinks
    )


@per_run
def generate(  # noqa: PLR0913  the documented keyword options of the public API
    adapters: Sequence[str | Path],
    base: str | Path | None = None,
    output: str | Path = "lora.lock",
    *,
    tokenizer: str | Path | None = None,
    allow_symlinks: bool = False,
    download: bool = False,
    probe: bool | None = None,
    probe_prompts: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    golden: str | Path | None = None,
    progress: Progress | None = None,
    probe_step: Step | None = None,
    names: Sequence[str | None] | None = None,
) -> GenerateResult:
    """Lock ``adapters`` over ``base`` into ``output``.

    Sources are local directories or Hub ``org/name[@revision]`` (resolved to a commit). Hub weights are not
    downloaded: their digests come from the Hub's LFS metadata and shapes from header range reads; with
    ``download=True`` the files are fetched into the cache and hashed. Refuses to write (status fail) when an
    adapter does not fit the base: a lock of a broken pairing protects nothing. Unusable input raises
    :class:`InputError`.

    ``adapters``: one source per adapter to lock (at least one). ``base``: the base model (default: the base the
    adapter configs name; they must agree). ``output``: the lock file to write (its directory must exist; a sidecar
    with the probe's fingerprints goes next to it). ``tokenizer``: a tokenizer source of its own (default: the
    base's). ``allow_symlinks``: follow symlinks that lead out of a source. ``download``: fetch Hub files into the
    cache and hash them, rather than trusting the Hub's metadata.

    ``probe`` (default: on when torch, transformers and peft are installed) loads the base once with every
    adapter and records the adapter-effect fingerprints (``[probe]`` + a sidecar file next to the lock);
    ``probe_prompts``: a prompts file for the probe instead of the built-in prompts; ``device`` / ``dtype``: where
    and in which dtype the probe loads the model (``auto``: the best available); ``golden`` (a JSONL file) records
    per-item correctness for the golden-set gate. ``progress``: called as files are hashed; ``probe_step``: called
    at each step of the probe. ``names``: the lock's name of each adapter (None or a missing entry: named by its
    directory or repo).

    When the probe is left to its default and the probe stack is not installed, the report carries an
    ``EFFECT-NOT-LOCKED`` warning: the lock then has no ``[probe]``, so verify cannot check the effect.
    """
    out = Path(output)
    base_source, sources, tok_source = _sources(adapters, base, tokenizer, out, allow_symlinks, download)
    run_probe = probe_enabled(probe) or golden is not None
    env = current_environment()
    observed = observe(
        base_source,
        list(zip(chosen_names(adapter_names(sources, out.parent), names), sources, strict=True)),
        tokenizer_source=tok_source,
        allow_symlinks=allow_symlinks,
        progress=progress,
        lock_path=out,
        transformers_version=env.versions.get("transformers"),
        # The rules of the stack the lock records, so that `verify` (which applies those) meets the same model.
        stack=lock_stack(env.versions),
    )
    report = Report.build(
        [*observed.findings, *_vocab_findings(observed, tok_source or base_source)],
        ran=GENERATE_CATEGORIES,
        title="lora-lock generate",
    )
    if any(f.severity is Severity.ERROR for f in report.findings):
        return GenerateResult(path=out, report=report, written=False, lock=None)
    lock = build_lock(observed, out.parent, env)
    sidecar: tuple[Path, str] | None = None
    findings = list(report.findings)
    if probe is None and not run_probe:
        findings.append(not_locked_warning())
        report = Report.build(findings, ran=GENERATE_CATEGORIES, title="lora-lock generate")
    if run_probe:
        options = ProbeOptions(probe_enabled(probe), probe_prompts, golden, device, dtype, probe_step)
        lock, report, sidecar, refused = _with_behaviour(observed, out, lock, findings, options)
        if refused:
            return GenerateResult(path=out, report=report, written=False, lock=None)
    written = publish(out, lock.to_toml(), sidecar)
    return GenerateResult(path=out, report=report, written=written, lock=lock)


def _with_behaviour(
    observed: Observed, out: Path, lock: Lock, findings: list[Finding], options: ProbeOptions
) -> tuple[Lock, Report, tuple[Path, str] | None, bool]:
    """``lock`` with its behaviour sections: the lock, the report with their findings, the sidecar to write, and
    whether the lock is refused because PEFT's own load dropped adapter tensors."""
    recorded = behaviour_sections(observed, out, options)
    findings = [*findings, *recorded.findings]
    ran = [c for c, section in ((Category.EFFECT, recorded.probe), (Category.GOLDEN, recorded.golden)) if section]
    report = Report.build(findings, ran=(*GENERATE_CATEGORIES, *ran), title="lora-lock generate")
    # PEFT's own load dropped adapter tensors (the static check missed it): a broken pairing, not locked.
    refused = any(f.code == CODE_DROPPED and f.severity is Severity.ERROR for f in findings)
    return replace(lock, probe=recorded.probe, golden=recorded.golden), report, recorded.sidecar, refused


def _sources(
    adapters: Sequence[str | Path],
    base: str | Path | None,
    tokenizer: str | Path | None,
    out: Path,
    allow_symlinks: bool,
    download: bool,
) -> tuple[Resolved, list[Resolved], Resolved | None]:
    """The base, adapter and tokenizer sources resolved (and fetched with ``download``); refuses an output
    directory that does not exist or cannot be written before anything is hashed."""
    if not adapters:
        raise InputError("no adapter given", hint="pass --adapter DIR (repeat it to lock several adapters)")
    sources = [_fetch(resolve(a, what="adapter", allow_symlinks=allow_symlinks), download) for a in adapters]
    if base is None:
        named = {default_base_spec(read_adapter(s.path, require_weights=False, remote=s.remote)) for s in sources}
        if len(named) > 1:
            raise InputError(
                f"the adapters name different bases ({', '.join(sorted(named))})",
                hint="pass --base to say which base they are locked to",
            )
        base_source = resolve(named.pop(), relative_to=sources[0].path, what="base", allow_symlinks=allow_symlinks)
    else:
        base_source = resolve(base, what="base", allow_symlinks=allow_symlinks)
    base_source = _fetch(base_source, download)
    tok_source = (
        _fetch(resolve(tokenizer, what="tokenizer", allow_symlinks=allow_symlinks), download)
        if tokenizer is not None
        else None
    )
    if not out.parent.is_dir():
        raise InputError(f"{out}: the directory {out.parent} does not exist")
    writable_or_raise(out)
    return base_source, sources, tok_source


def _vocab_findings(observed: Observed, tokenizer: Resolved) -> list[Finding]:
    """The locked tokenizer, and any an adapter ships, against the base's embedding rows (``COMPAT-VOCAB``)."""
    from lora_lock.compat.vocab import embedding_rows, tokenizer_size, vocab_finding

    if observed.base.gguf is not None:
        return []
    rows = embedding_rows(observed.base)
    out = vocab_finding(tokenizer_size(tokenizer.path, tokenizer.files), rows, "the locked tokenizer")
    for one in observed.adapters:
        out += vocab_finding(tokenizer_size(one.source.path, one.source.files), rows, f"adapter {one.name}")
    return out


def not_locked_warning() -> Finding:
    """``generate`` without the probe stack writes a static lock: say so (verify then cannot check the effect)."""
    return Finding(
        "EFFECT-NOT-LOCKED",
        Category.EFFECT,
        Severity.WARNING,
        "the probe extra (torch, transformers, peft) is not installed, so this lock has no [probe]: verify will "
        "check files, shapes, tokenizer and environment, not what the adapter does",
        hint="pip install 'lora-lock[probe]' and run `lora-lock generate --from-lock`; pass --no-probe to lock "
        "statically on purpose",
    )


def chosen_names(default: Sequence[str], names: Sequence[str | None] | None) -> list[str]:
    """The adapters' lock names: ``--name`` where given (in order), else the directory's or repo's name."""
    if not names:
        return list(default)
    if len(names) > len(default):
        raise InputError(
            f"{len(names)} --name values for {len(default)} adapters", hint="give one --name per --adapter, in order"
        )
    chosen = [n if n is not None else d for n, d in zip([*names, *[None] * len(default)], default, strict=False)]
    for name in chosen:
        if not name.strip() or name != name.strip() or any(ord(c) < 32 for c in name) or len(name) > 200:
            raise InputError(
                f"--name {name!r}: an adapter name must be non-empty printable text without surrounding spaces"
            )
    twice = sorted({n for n in chosen if chosen.count(n) > 1})
    if twice:
        raise InputError(
            f"adapter name {twice[0]!r} is given to more than one adapter", hint="give each its own --name"
        )
    return chosen


def writable_or_raise(out: Path) -> None:
    """Fail before hashing and the probe, not after them, when the lock cannot be written: create and remove a
    temp file where the atomic write will create its own (``os.access`` is wrong on read-only mounts as root)."""
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".check", dir=out.parent)
    except OSError as exc:
        raise InputError(
            f"{out}: cannot write the lock into {out.parent}: {exc.strerror or exc}",
            hint="choose a writable place with -o, or fix the directory's permissions",
        ) from exc
    os.close(fd)
    os.unlink(tmp)


def probe_enabled(probe: bool | None) -> bool:
    """``None`` means: on when the probe stack is installed."""
    if probe is not None:
        return probe
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "peft"))


def _sidecars(lock_path: Path) -> list[Path]:
    return sorted(lock_path.parent.glob(f"{glob.escape(lock_path.name)}.probe-*.json"))


@contextmanager
def _exclusive(directory: Path) -> Iterator[bool]:
    """Hold an advisory lock on the lock's directory (``flock`` on its descriptor: no lock file to leave behind)
    so that concurrent ``generate`` runs publish one after the other. Yields False where there is no ``flock``."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield False
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise InputError(f"{directory}: cannot open the lock's directory: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # releases the lock


def _named_sidecar(lock_path: Path) -> str | None:
    """The sidecar the lock on disk names (None when there is no lock or it names none)."""
    try:
        probe = parse(lock_path.read_text(encoding="utf-8")).get("probe")
    except (OSError, ValueError, RecursionError):  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return None
    name = probe.get("sidecar") if isinstance(probe, dict) else None
    return name if isinstance(name, str) else None


def publish(out: Path, lock_text: str, sidecar: tuple[Path, str] | None) -> bool:
    """Write the sidecar (content-addressed: same bytes, same name), then the lock, each atomically (unique temp
    name + ``os.replace``); then delete the sidecars no lock names. Concurrent runs are serialised by an advisory
    lock, so a lock on disk never names a sidecar another run deleted; where there is no advisory lock, stale
    sidecars are left in place rather than risk that. Returns whether the lock changed."""
    with _exclusive(out.parent) as exclusive:
        old_sidecars = _sidecars(out)
        if sidecar is not None:
            write_atomic(sidecar[0], sidecar[1])
        written = write_atomic(out, lock_text)
        if exclusive:
            keep = {sidecar[0].name} if sidecar is not None else set()
            named = _named_sidecar(out)  # the lock on disk now: ours, or identical to ours
            keep |= {named} if named else set()
            for stale in old_sidecars:
                if stale.name not in keep:
                    stale.unlink(missing_ok=True)  # after the new lock is in place: a crash keeps the old pair valid
    return written


@dataclass(frozen=True)
class ProbeOptions:
    """How ``generate`` runs the behaviour checks: the effect probe on or off, its prompts file, the golden set,
    the device and dtype of the model load, and the progress step."""

    probe: bool
    prompts_file: str | Path | None
    golden: str | Path | None
    device: str
    dtype: str
    step: Step | None


@dataclass(frozen=True)
class BehaviourSections:
    """What the behaviour checks add to a lock: its ``[probe]`` and ``[golden]`` (None: not recorded), the
    sidecar to write next to it (path and text), and the findings of loading the adapters."""

    probe: Probe | None
    golden: Golden | None
    sidecar: tuple[Path, str] | None
    findings: list[Finding]


def behaviour_sections(observed: Observed, out: Path, options: ProbeOptions) -> BehaviourSections:
    """Run the probe and the golden set with one model load; return the lock sections, the sidecar, findings."""
    from lora_lock.probe.api import lock_behaviour

    base_dir, tok_dir = probe_dirs(observed.base.source, observed.tokenizer_source)
    adapters = [(one.name, one.source.path) for one in observed.adapters]
    result = lock_behaviour(
        base_dir,
        tok_dir,
        adapters,
        probe=options.probe,
        prompts_file=options.prompts_file,
        golden=options.golden,
        lock_dir=out.parent,
        device=options.device,
        dtype=options.dtype,
        step=options.step,
    )
    probe, sidecar = None, None
    if result.probe is not None:
        # Content-addressed: the same fingerprints keep the same file name.
        name = f"{out.name}.probe-{short_digest(result.probe.sidecar_digest)}.json"
        probe = result.probe.record(name)
        sidecar = (out.parent / name, result.probe.sidecar_text)
    return BehaviourSections(probe, result.golden, sidecar, result.findings)


def probe_dirs(base: Resolved, tokenizer: Resolved) -> tuple[Path, Path]:
    """The probe loads real weights: a Hub base must be in the cache (``--download``)."""
    missing = [n for n in base.known if not (base.path / n).exists()] if base.repo_id else []
    if missing:
        raise InputError(
            f"the effect probe needs the base weights locally, and {base.label} has {len(missing)} file(s) only "
            "on the Hub",
            hint="pass --download to fetch them into the cache, or --no-probe for a static lock",
        )
    return base.path, tokenizer.path
