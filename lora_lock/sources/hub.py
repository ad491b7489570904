"""Hugging Face Hub sources: ``org/name@revision`` resolved to a 40-hex commit, online or from the local cache.

Online, the Hub already knows every LFS file's sha256 and serves byte ranges, so a base is locked and checked
from metadata, small files (configs, tokenizer) and safetensors headers: no weight byte is downloaded. Offline
(``HF_HUB_OFFLINE=1``) the cache's ``refs/`` and ``snapshots/`` say which commit a ref points to, and blob
names (the sha256 of LFS files) say what the files are without reading them.

This module holds what a Hub source is (a commit's files, a repo id, the cache layout) and the offline
resolution; the calls to the Hub's API are in :mod:`lora_lock.sources.hub_api`, re-exported here.
huggingface_hub is imported inside functions: local-only runs never pay for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_lock.errors import SourceError
from lora_lock.hashing import FileDigest, digest_text
from lora_lock.inspect.checkpoint import Remote
from lora_lock.sources.hub_api import SMALL_FILES as SMALL_FILES
from lora_lock.sources.hub_api import download_snapshot as download_snapshot
from lora_lock.sources.hub_api import read_range as read_range
from lora_lock.sources.hub_api import remote_header as remote_header
from lora_lock.sources.hub_api import resolve_online as resolve_online
from lora_lock.text import brief

COMMIT = re.compile(r"^[0-9a-f]{40}$")
SHORT_HASH = re.compile(r"^[0-9a-f]{7,39}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class HubFile:
    """A file of a Hub commit as its metadata describes it."""

    name: str
    size: int | None
    sha256: str | None  # LFS files: the sha256 of the content
    blob_id: str | None  # git blob sha1 (small files) or the LFS pointer's


@dataclass(frozen=True)
class HubSnapshot:
    """One commit of a Hub repo: where its small files are on disk, and what the Hub says of every file."""

    repo_id: str
    commit: str
    ref: str | None
    snapshot_dir: Path
    repo_dir: Path
    files: dict[str, HubFile] = field(default_factory=dict)
    online: bool = False
    token: str | bool | None = field(default=None, repr=False)

    def known_digests(self, *, trust_cache_names: bool) -> dict[str, FileDigest]:
        """Digests known without reading bytes: LFS sha256 from the Hub, or, in the cache, blob names that are a
        sha256 (huggingface_hub names LFS blobs by their sha256)."""
        out: dict[str, FileDigest] = {}
        for name, f in self.files.items():
            if f.sha256 and f.size is not None:
                out[name] = FileDigest(digest_text(f.sha256), f.size)
        if trust_cache_names:
            for name in list(self.files):
                local = self.snapshot_dir / name
                if local.is_symlink():
                    try:
                        target = local.resolve()
                        blobs = (self.repo_dir / "blobs").resolve()
                    except (OSError, RuntimeError):  # a symlink loop: hashed (and refused) like any file
                        continue
                    # Only a link into this repo's own blobs/ names its content: a link elsewhere proves nothing.
                    if _SHA256.match(target.name) and target.parent == blobs and target.is_file():
                        out[name] = FileDigest(digest_text(target.name), target.stat().st_size)
        return out

    def remote(self) -> Remote | None:
        """Reads of the files not in the local cache (headers by HTTP range), or ``None`` for an offline snapshot."""
        if not self.online:
            return None
        names = frozenset(n for n in self.files if not (self.snapshot_dir / n).is_file())
        return Remote(names=names, header=lambda name: remote_header(self, name))


def looks_like_repo_id(spec: str) -> bool:
    """Whether ``spec`` (``org/name[@rev]``) reads as a Hub repo id rather than a file name."""
    repo, _, _ = spec.partition("@")
    return bool(_REPO_ID.match(repo)) and not repo.endswith((".json", ".safetensors"))


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``org/name@rev`` → (``org/name``, ``rev``); refuses short hashes (ambiguous, and not a pin)."""
    repo, sep, revision = spec.partition("@")
    # huggingface_hub's own rules too: no "--" or "..", no ".git" suffix, names of at most 96 characters.
    if (
        not _REPO_ID.match(repo)
        or "--" in repo
        or ".." in repo
        or repo.endswith(".git")
        or any(len(part) > 96 or part[-1] in "-." for part in repo.split("/"))
    ):
        raise SourceError(f"{brief(spec)} is neither a local directory nor a Hub repo id (org/name[@revision])")
    if sep and not revision:
        raise SourceError(f"{spec!r}: empty revision after '@'", hint="write org/name@main, a tag or a 40-hex commit")
    if revision and any(part in ("", ".", "..") for part in revision.split("/")):
        # An HTTP client normalises "…/revision/.." away: the default branch would be locked under the ref "..".
        raise SourceError(
            f"{brief(spec)}: revision {brief(revision)} is not a branch, tag or commit name",
            hint="write org/name@main, a tag or a 40-hex commit",
        )
    if revision and SHORT_HASH.match(revision):
        raise SourceError(
            f"{spec!r}: revision {revision!r} looks like a short commit hash, which is ambiguous",
            hint="use the full 40-hex commit (or a branch or tag name)",
        )
    return repo, (revision or None)


def _constants() -> Any:
    from huggingface_hub import constants

    return constants


def repo_cache_dir(repo_id: str, cache_dir: Path | None = None) -> Path:
    """The Hub cache directory of a model repo (``models--org--name`` under ``cache_dir`` or ``HF_HUB_CACHE``)."""
    root = Path(cache_dir) if cache_dir is not None else Path(_constants().HF_HUB_CACHE)
    return root / f"models--{repo_id.replace('/', '--')}"


def is_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE``): sources then come from the cache only."""
    return bool(_constants().HF_HUB_OFFLINE)


def resolve_cached(repo_id: str, revision: str | None, *, cache_dir: Path | None = None) -> HubSnapshot:
    """Resolve from the local cache only (``refs/<ref>`` → commit → ``snapshots/<commit>``)."""
    repo_dir = repo_cache_dir(repo_id, cache_dir)
    ref = revision or "main"
    if COMMIT.match(ref):
        commit, ref_name = ref, None
    else:
        ref_file = repo_dir / "refs" / ref
        try:
            commit = ref_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SourceError(
                f"{repo_id}@{ref}: not in the local Hub cache ({repo_dir}) and offline mode is on",
                hint=f"fetch it once online: hf download {repo_id} --revision {ref}",
            ) from exc
        if not COMMIT.match(commit):
            raise SourceError(f"{ref_file}: does not hold a 40-hex commit")
        ref_name = ref
    snapshot = repo_dir / "snapshots" / commit
    if not snapshot.is_dir():
        raise SourceError(
            f"{repo_id}@{commit}: the commit is not in the local Hub cache ({repo_dir})",
            hint=f"fetch it once online: hf download {repo_id} --revision {commit}",
        )
    files: dict[str, HubFile] = {}
    for path in sorted(snapshot.rglob("*")):
        if path.is_dir():
            continue
        name = path.relative_to(snapshot).as_posix()
        blob = Path(path.readlink()).name if path.is_symlink() else ""
        size = path.stat().st_size if path.exists() else None
        files[name] = HubFile(
            name=name, size=size, sha256=None, blob_id=blob if re.match(r"^[0-9a-f]{40}$", blob) else None
        )
    return HubSnapshot(
        repo_id=repo_id,
        commit=commit,
        ref=ref_name,
        snapshot_dir=snapshot,
        repo_dir=repo_dir,
        files=files,
        online=False,
    )


def resolve_hub(
    spec: str, *, token: str | bool | None = None, offline: bool | None = None, want: Iterable[str] = SMALL_FILES
) -> HubSnapshot:
    """The snapshot ``spec`` names, pinned to a commit: from the local cache when offline, otherwise from the
    Hub (fetching the ``want`` files)."""
    repo_id, revision = parse_spec(spec)
    if offline if offline is not None else is_offline():
        return resolve_cached(repo_id, revision)
    return resolve_online(repo_id, revision, token=token, want=want)
