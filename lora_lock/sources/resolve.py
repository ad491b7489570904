"""Where bases and adapters come from: a local directory, or a Hub repo id with an optional ``@revision``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NamedTuple, Protocol

from lora_lock.errors import InputError, SourceError
from lora_lock.inspect.checkpoint import Remote
from lora_lock.sources.fence import admit, check_name, inside_repository, resolve_fence, windows_form
from lora_lock.sources.fileset import list_local
from lora_lock.text import brief, short_commit

if TYPE_CHECKING:
    from lora_lock.hashing import FileDigest
    from lora_lock.sources.hub import HubSnapshot


@dataclass(frozen=True)
class Resolved:
    """A source made concrete.

    ``path`` holds the files available locally (for a Hub source: the cache snapshot with the small files);
    ``remote`` reads the headers of files that are not local; ``known`` holds digests proven without reading
    bytes (Hub LFS metadata, or cache blob names); ``contain`` is the directory symlinks may point into;
    ``files`` is the source's whole file set (sorted relative POSIX names), checked by the fence when resolved.
    """

    spec: str
    path: Path
    repo_id: str | None = None
    revision: str | None = None
    ref: str | None = None
    remote: Remote | None = None
    known: Mapping[str, FileDigest] = field(default_factory=dict)
    contain: Path | None = None
    hub: HubSnapshot | None = field(default=None, repr=False, compare=False)
    files: tuple[str, ...] = ()
    allow_symlinks: bool = False

    @property
    def label(self) -> str:
        """How messages name this source: ``repo@<12 hex>`` for a Hub source, else its path."""
        if self.repo_id:
            return f"{self.repo_id}@{short_commit(self.revision)}" if self.revision else self.repo_id
        return str(self.path)

    def origin(self, lock_dir: Path) -> Origin:
        """How the lock names this source: a relative path, or repo + resolved commit (+ the ref, for info)."""
        if self.repo_id is not None:
            return Origin(repo=self.repo_id, revision=self.revision, ref=self.ref or None)
        return Origin(source=posix_relative(self.path, lock_dir))


class Origin(NamedTuple):
    """Where a lock section comes from, as the lock names it: a ``source`` directory relative to the lock, or a
    Hub ``repo`` at the commit ``revision`` (with the ``ref`` it was resolved from). Unused fields are None."""

    source: str | None = None
    repo: str | None = None
    revision: str | None = None
    ref: str | None = None


def posix_relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` in POSIX form (the lock never stores absolute paths). Symlinks are kept as
    written (``base`` → a shared model directory stays ``base``), so the lock moves with the repository; only if
    that spelling does not lead back to the same directory are both sides resolved."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(start))
    try:
        if not os.path.samefile(os.path.join(start, rel), path):
            rel = os.path.relpath(path.resolve(), start.resolve())
    except OSError:
        rel = os.path.relpath(path.resolve(), start.resolve())
    return PurePosixPath(*Path(rel).parts).as_posix() if rel != "." else "."


_SNAPSHOT_PARTS = re.compile(r"^models--[^/]+$")
_COMMIT_NAME = re.compile(r"^[0-9a-f]{40}$")


def _cache_repo(path: Path) -> Path | None:
    """The Hub cache repo a ``models--org--name/snapshots/<commit>`` directory links into (its ``blobs/``)."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):
        return None
    if (
        _COMMIT_NAME.match(real.name)
        and real.parent.name == "snapshots"
        and _SNAPSHOT_PARTS.match(real.parents[1].name)
    ):
        return real.parents[1]
    return None


def local_source(spec: str, path: Path, *, allow_symlinks: bool) -> Resolved:
    """A local directory, with its whole file set listed through the fence (before any file is opened)."""
    contain = _cache_repo(path)
    files = list_local(path, fence=resolve_fence(path, contain), allow_symlinks=allow_symlinks)
    return Resolved(spec=spec, path=path, contain=contain, files=files, allow_symlinks=allow_symlinks)


def resolve_local(
    spec: str | Path, *, relative_to: Path | None = None, what: str = "source", allow_symlinks: bool = False
) -> Resolved:
    """Resolve a local directory spec (relative specs first against the cwd, then ``relative_to``)."""
    raw = Path(spec).expanduser()
    candidates = [raw]
    if relative_to is not None and not raw.is_absolute():
        candidates.append(relative_to / raw)
    for candidate in candidates:
        try:
            found = candidate.is_dir()
        except OSError as exc:  # a name too long for the filesystem, …
            raise SourceError(f"{what} {brief(str(spec))}: {exc.strerror or exc}") from exc
        if found:
            return local_source(str(spec), candidate, allow_symlinks=allow_symlinks)
        if candidate.name.lower().endswith(".gguf") and os.path.lexists(candidate):
            # A GGUF base is often one file; lora_lock.compat.gguf refuses it unless it is a regular file.
            return Resolved(spec=str(spec), path=candidate, allow_symlinks=allow_symlinks)
    raise SourceError(
        f"{what} {str(spec)!r} is not a local directory",
        hint="pass a directory holding the model's files, or a Hub repo id such as org/name@main",
    )


def snapshot_files(snap: HubSnapshot, *, allow_symlinks: bool) -> tuple[str, ...]:
    """A Hub commit's file set: the Hub's listing (or the cache's), each local file checked by the fence."""
    fence = resolve_fence(snap.snapshot_dir, snap.repo_dir) if snap.snapshot_dir.is_dir() else None
    names = sorted(snap.files)
    for name in names:
        check_name(name, f"{snap.repo_id}@{short_commit(snap.commit)}")
        if fence is not None and os.path.lexists(snap.snapshot_dir / name):
            admit(snap.snapshot_dir, name, fence=fence, allow_symlinks=allow_symlinks)
    return tuple(names)


def from_snapshot(
    spec: str, snap: HubSnapshot, *, trust_cache_names: bool = True, allow_symlinks: bool = False
) -> Resolved:
    """A resolved source for a Hub snapshot: its cache directory, commit, file set (each local name checked by
    the fence) and the digests the Hub or the cache already states."""
    return Resolved(
        spec=spec,
        path=snap.snapshot_dir,
        repo_id=snap.repo_id,
        revision=snap.commit,
        ref=snap.ref,
        remote=snap.remote(),
        known=snap.known_digests(trust_cache_names=trust_cache_names),
        contain=snap.repo_dir,
        hub=snap,
        files=snapshot_files(snap, allow_symlinks=allow_symlinks),
        allow_symlinks=allow_symlinks,
    )


def resolve(
    spec: str | Path,
    *,
    relative_to: Path | None = None,
    what: str = "source",
    token: str | bool | None = None,
    offline: bool | None = None,
    allow_symlinks: bool = False,
) -> Resolved:
    """A local directory if one exists at ``spec``; otherwise a Hub repo id (``org/name[@revision]``)."""
    text = str(spec)
    try:
        return resolve_local(spec, relative_to=relative_to, what=what, allow_symlinks=allow_symlinks)
    except SourceError:
        from lora_lock.sources.hub import looks_like_repo_id, resolve_hub

        if not looks_like_repo_id(text) or text.startswith((".", "/", "~")):
            raise
        _refuse_path_typo(text, relative_to, what)
    try:
        snap = resolve_hub(text, token=token, offline=offline)
    except SourceError as exc:
        if "/" in text.partition("@")[0] or "local directory" in exc.message:
            raise
        # A bare name ("my-adapter") is more likely a mistyped directory than a legacy un-namespaced Hub id.
        raise SourceError(
            f"{what} {brief(text)}: no local directory of that name, and as a Hub repo id: {exc.message}",
            hint="check the directory name (or pass ./NAME), or give the Hub repo id as org/name@revision",
        ) from exc
    return from_snapshot(text, snap, allow_symlinks=allow_symlinks)


def _refuse_path_typo(spec: str, relative_to: Path | None, what: str) -> None:
    """``adapters/foxx`` where ``adapters/`` is a local directory is a mistyped path, not a Hub repo id: say so
    instead of reporting that the Hub cannot be reached (or has no such repo)."""
    first = spec.partition("@")[0].split("/")[0]
    for root in (Path.cwd(), *((relative_to,) if relative_to is not None else ())):
        parent = root / first
        try:
            if not parent.is_dir():
                continue
            names = sorted(p.name for p in parent.iterdir() if p.is_dir())[:1000]
        except OSError:
            continue
        import difflib

        wanted = spec.partition("@")[0].split("/", 1)[1]
        near = difflib.get_close_matches(wanted, names, n=3)
        raise SourceError(
            f"{what} {brief(spec)} is not a local directory: {first}/ exists here but holds no {brief(wanted)} "
            "(not looked up on the Hub, since the path names a local directory)",
            hint=(f"did you mean {', '.join(f'{first}/{n}' for n in near)}? " if near else "")
            + "check the path, or pass a Hub repo id whose owner is not a local directory name",
        )


@dataclass(frozen=True)
class SourceOptions:
    """How :func:`locked_source` finds a lock's source again: ``deep`` hashes local bytes (a Hub commit must be
    fully in the cache, whose blob names are then not trusted); ``token`` / ``offline`` as for :func:`resolve`;
    ``also``: the locked file names the snapshot must hold (the section's own, and the tokenizer's when it comes
    from the base's repo and commit); ``allow_symlinks`` / ``allow_outside`` turn the symlink and
    outside-the-repository fences off."""

    deep: bool = False
    token: str | bool | None = field(default=None, repr=False)
    offline: bool | None = None
    also: Iterable[str] = ()
    allow_symlinks: bool = False
    allow_outside: bool = False


class LockedSection(Protocol):
    """Where a lock's section says it comes from (each ``Sourced`` section of :mod:`lora_lock.lock.model`)."""

    @property
    def source(self) -> str | None:
        """The lock's relative directory, for a local section."""

    @property
    def repo(self) -> str | None:
        """The Hub repo id, for a section locked from the Hub."""

    @property
    def revision(self) -> str | None:
        """The Hub commit the repo is pinned to."""


def locked_source(section: LockedSection, lock_dir: Path, what: str, options: SourceOptions | None = None) -> Resolved:
    """The source a lock names, found again: a directory relative to the lock, or the pinned Hub commit
    (from the cache when it is there; else from the Hub, metadata and small files only), as ``options`` says.

    A directory outside the lock's repository (its git top-level, or the lock's directory when there is none)
    is refused unless ``options.allow_outside``: a crafted lock must not make verify publish facts of arbitrary
    files."""
    options = options if options is not None else SourceOptions()
    if section.repo is not None:
        if section.revision is None:
            raise InputError(
                f"the lock's {what} is locked from the Hub repo {brief(section.repo)} but has no 'revision'; "
                "expected the commit the repo is pinned to, found none",
                hint="regenerate the lock with `lora-lock generate`",
            )
        return _locked_hub(section.repo, section.revision, options)
    return _locked_directory(str(section.source), lock_dir, what, options)


def _locked_hub(repo: str, commit: str, options: SourceOptions) -> Resolved:
    """The pinned Hub commit of a lock's section: the cache's snapshot when it holds every locked file, else the
    Hub's metadata of that commit (refused offline, or with ``deep``, when files are missing)."""
    from lora_lock.sources.hub import is_offline, parse_spec, resolve_cached, resolve_online

    parse_spec(f"{repo}@{commit}")  # an edited lock's repo id huggingface_hub would refuse: a clear error
    locked_files = list(dict.fromkeys(options.also))
    offline_now = options.offline if options.offline is not None else is_offline()
    hint = f"fetch them once online: hf download {repo} --revision {commit}"
    try:
        snap = resolve_cached(repo, commit)
        missing = [n for n in locked_files if not (snap.snapshot_dir / n).exists()]
    except SourceError:
        if offline_now:
            raise
        snap, missing = None, locked_files
    if missing and (offline_now or options.deep):
        # Not drift: the pinned commit is simply not (fully) in the cache here.
        raise SourceError(
            f"{repo}@{short_commit(commit)}: {len(missing)} locked file(s) are not in the local Hub cache "
            f"({', '.join(missing[:4])}{', …' if len(missing) > 4 else ''})",
            hint=hint + ("" if offline_now else " (--deep hashes local bytes)"),
        )
    if snap is None or missing:
        # A partial cache (e.g. the small files a zero-download generate fetched): the Hub's metadata of the
        # pinned commit proves the rest, without downloading weights.
        snap = resolve_online(repo, commit, token=options.token)
    return from_snapshot(
        f"{repo}@{commit}", snap, trust_cache_names=not options.deep, allow_symlinks=options.allow_symlinks
    )


def _locked_directory(source: str, lock_dir: Path, what: str, options: SourceOptions) -> Resolved:
    """A lock's relative ``source`` directory, resolved against the lock's directory and kept inside the lock's
    repository (unless ``options.allow_outside``), its file set listed through the fence."""
    pure = PurePosixPath(source)
    if pure.is_absolute() or source.startswith(("\\", "/")) or windows_form(source):
        raise InputError(
            f"the lock's {what} source {source!r} is an absolute path; locks store relative paths",
            hint="regenerate the lock with `lora-lock generate`",
        )
    path = lock_dir / Path(*pure.parts)
    try:
        found = path.is_dir()
    except OSError as exc:
        raise InputError(f"the lock's {what} source {brief(source)}: {exc.strerror or exc}") from exc
    if not found:
        raise InputError(
            f"the {what} directory {source!r} named by the lock is missing (looked in {path})",
            # Lock paths resolve against the lock's directory, never the working directory: a moved directory
            # is restored, or the lock regenerated with its new place.
            hint=f"paths in a lock are relative to the lock's directory ({lock_dir}); restore the directory, or "
            f"regenerate the lock with its new place: lora-lock generate --from-lock --{what} NEW-DIR",
        )
    inside, top = inside_repository(path, lock_dir)
    if not inside and not options.allow_outside:
        raise InputError(
            f"the lock's {what} source {brief(source)} leads outside the lock's repository {top}",
            hint="a lock names directories inside its own repository; if this one is intended, pass "
            "--allow-outside-sources",
        )
    return local_source(source, path, allow_symlinks=options.allow_symlinks)
