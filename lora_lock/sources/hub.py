"""Hugging Face Hub sources: ``org/name@revision`` resolved to a 40-hex commit, online or from the local cache.

Online, the Hub already knows every LFS file's sha256 and serves byte ranges, so a base is locked and checked
from metadata, small files (configs, tokenizer) and safetensors headers: no weight byte is downloaded. Offline
(``HF_HUB_OFFLINE=1``) the cache's ``refs/`` and ``snapshots/`` say which commit a ref points to, and blob
names (the sha256 of LFS files) say what the files are without reading them.

huggingface_hub is imported inside functions: local-only runs never pay for it.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_lock.errors import SourceError
from lora_lock.hashing import FileDigest, digest_text
from lora_lock.inspect.checkpoint import Remote
from lora_lock.inspect.safetensors_header import MAX_HEADER_BYTES, Header, parse_header
from lora_lock.inspect.tokenizer import TOKENIZER_FILES
from lora_lock.sources.fileset import MAX_FILES
from lora_lock.text import brief, short_commit

COMMIT = re.compile(r"^[0-9a-f]{40}$")
SHORT_HASH = re.compile(r"^[0-9a-f]{7,39}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_FIRST_RANGE = 100_000
#: Tokenizer files transformers may read besides the fixed names: versioned tokenizers and named chat templates.
_TOKENIZER_EXTRA = re.compile(r"^(tokenizer\..+\.json|additional_chat_templates/[^/]+\.jinja)$")

#: Small files worth downloading for a lock or a check: configs, tokenizer, adapter config, shard index.
SMALL_FILES = (
    "config.json",
    "model.safetensors.index.json",
    "adapter_config.json",
    *TOKENIZER_FILES,  # includes generation_config.json
)


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


def _token_hint() -> str:
    return "pass a token with the HF_TOKEN environment variable or `hf auth login` (it is never printed)"


def _wrap(exc: Exception, repo_id: str, revision: str | None) -> SourceError:
    """Turn huggingface_hub errors into one clear sentence, without echoing URLs' credentials or tokens."""
    from huggingface_hub import errors

    where = f"{repo_id}@{revision}" if revision else repo_id
    if isinstance(exc, errors.GatedRepoError):
        return SourceError(f"Hub repo {repo_id} is gated: accept its conditions on the Hub first", hint=_token_hint())
    if isinstance(exc, errors.RepositoryNotFoundError):
        return SourceError(
            f"Hub repo {repo_id} not found (or private and no valid token was sent)",
            hint="check the repo id; for a private repo " + _token_hint(),
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return SourceError(
            f"revision {revision!r} not found in Hub repo {repo_id}",
            hint="use an existing branch, tag or full 40-hex commit",
        )
    if isinstance(exc, errors.EntryNotFoundError):
        return SourceError(f"{where}: a file the lock needs is not in the repo ({type(exc).__name__})")
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return SourceError(
            f"{where}: offline mode is on and the files are not in the cache",
            hint=f"fetch them once online: hf download {repo_id}" + (f" --revision {revision}" if revision else ""),
        )
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        if status in (401, 403):
            return SourceError(f"Hub repo {repo_id}: access refused (HTTP {status})", hint=_token_hint())
        return SourceError(
            f"{where}: the Hub answered HTTP {status}",
            hint="retry later; if it persists, check HF_ENDPOINT and the Hub's status",
        )
    return SourceError(
        f"{where}: cannot reach the Hub ({type(exc).__name__})",
        hint="check the network and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the local cache",
    )


def _hub_errors() -> tuple[type[Exception], ...]:
    from httpx2 import HTTPError  # huggingface_hub's transport; its errors are re-exported untyped
    from huggingface_hub import errors

    return (
        errors.HfHubHTTPError,
        HTTPError,
        errors.OfflineModeIsEnabled,
        errors.LocalEntryNotFoundError,
        OSError,
    )


def resolve_online(
    repo_id: str,
    revision: str | None,
    *,
    token: str | bool | None = None,
    want: Iterable[str] = SMALL_FILES,
    cache_dir: Path | None = None,
) -> HubSnapshot:
    """Resolve ``revision`` to a commit with the Hub API and download the small files among ``want``."""
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi(token=token)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except _hub_errors() as exc:
        raise _wrap(exc, repo_id, revision) from exc
    commit = info.sha
    if not commit or not COMMIT.match(commit):
        raise SourceError(f"{repo_id}@{revision}: the Hub did not return a commit for this revision")
    files: dict[str, HubFile] = {}
    for sib in info.siblings or []:
        lfs = sib.lfs
        files[sib.rfilename] = HubFile(
            name=sib.rfilename,
            size=lfs.size if lfs else sib.size,
            sha256=lfs.sha256 if lfs else None,
            blob_id=sib.blob_id,
        )
    if len(files) > MAX_FILES:
        raise SourceError(f"{repo_id}@{short_commit(commit)}: more than {MAX_FILES} files; this is not a model repo")
    repo_dir = repo_cache_dir(repo_id, cache_dir)
    snapshot = repo_dir / "snapshots" / commit
    for name in sorted(n for n in files if n in set(want) or _must_fetch(files[n])):
        try:
            path = hf_hub_download(
                repo_id, name, revision=commit, token=token, cache_dir=str(cache_dir) if cache_dir else None
            )
        except _hub_errors() as exc:
            raise _wrap(exc, repo_id, commit) from exc
        snapshot = Path(path).parent
    ref = revision if revision and revision != commit else (None if revision else "main")
    if ref and snapshot.is_dir():
        _remember_ref(repo_dir, ref, commit)
    return HubSnapshot(
        repo_id=repo_id,
        commit=commit,
        ref=ref,
        snapshot_dir=snapshot,
        repo_dir=repo_dir,
        files=files,
        online=True,
        token=token,
    )


def _must_fetch(f: HubFile) -> bool:
    """Every file is locked with a sha256: a file whose sha256 the Hub does not state (a plain git file) is
    fetched and hashed, as are the tokenizer files transformers may load instead of ``tokenizer.json``."""
    return f.sha256 is None or bool(_TOKENIZER_EXTRA.match(f.name))


def _remember_ref(repo_dir: Path, ref: str, commit: str) -> None:
    """Record ``refs/<ref>`` → commit, as huggingface_hub does when it downloads by ref: the files were fetched by
    commit (the pin), and without the ref the same ``org/name@ref`` would not resolve offline afterwards."""
    path = repo_dir / "refs" / ref
    try:
        if path.is_file() and path.read_text(encoding="utf-8").strip() == commit:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(commit, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache still has the files; only offline resolution of the ref needs this


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


def read_range(snapshot: HubSnapshot, name: str, start: int, length: int) -> bytes:
    """``length`` bytes at ``start`` of a Hub file, with one HTTP range request (huggingface_hub's session)."""
    from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
    from huggingface_hub.utils import _headers

    build_hf_headers = _headers.build_hf_headers

    if length <= 0:
        return b""
    url = hf_hub_url(snapshot.repo_id, name, revision=snapshot.commit)
    headers = {**build_hf_headers(token=snapshot.token), "range": f"bytes={start}-{start + length - 1}"}
    try:
        response = get_session().get(url, headers=headers, follow_redirects=True)
        hf_raise_for_status(response)
    except _hub_errors() as exc:
        raise _wrap(exc, snapshot.repo_id, snapshot.commit) from exc
    data = bytes(response.content)
    if response.status_code == 200 and len(data) > length:  # server ignored the range
        data = data[start : start + length]
    if len(data) != length:
        raise SourceError(
            f"{snapshot.repo_id}/{name}: asked for {length} bytes at {start}, got {len(data)}",
            hint="the file changed or the server does not honour range requests",
        )
    return data


def remote_header(snapshot: HubSnapshot, name: str) -> Header:
    """The safetensors header of a Hub file, read with range requests (first 100 kB, then the rest if needed)."""
    meta = snapshot.files.get(name)
    size = meta.size if meta is not None else None
    label = Path(f"{snapshot.repo_id}@{short_commit(snapshot.commit)}") / name
    if size is None:
        raise SourceError(f"{label}: the Hub did not report the file's size")
    first = read_range(snapshot, name, 0, min(_FIRST_RANGE, size))
    if len(first) < 8:
        raise SourceError(f"{label}: not a safetensors file ({size} bytes)")
    (length,) = struct.unpack("<Q", first[:8])
    if length > MAX_HEADER_BYTES or 8 + length > size:
        raise SourceError(f"{label}: safetensors header length {length} does not fit the file ({size} bytes)")
    raw = (
        first[8 : 8 + length]
        if 8 + length <= len(first)
        else first[8:] + read_range(snapshot, name, len(first), 8 + length - len(first))
    )
    start = 8 + length

    def read_data(offset: int, count: int) -> bytes:
        return read_range(snapshot, name, start + offset, count)

    return parse_header(label, raw, size, name, read_data)


def download_snapshot(snapshot: HubSnapshot) -> HubSnapshot:
    """Download every file of the commit into the cache (``--download``); returns the now-local snapshot."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(snapshot.repo_id, revision=snapshot.commit, token=snapshot.token)
    except _hub_errors() as exc:
        raise _wrap(exc, snapshot.repo_id, snapshot.commit) from exc
    local = resolve_cached(snapshot.repo_id, snapshot.commit, cache_dir=Path(folder).parents[2])
    return HubSnapshot(
        repo_id=snapshot.repo_id,
        commit=snapshot.commit,
        ref=snapshot.ref,
        snapshot_dir=local.snapshot_dir,
        repo_dir=local.repo_dir,
        files=local.files,  # the cache listing: downloaded bytes are hashed, not trusted
        online=False,
        token=snapshot.token,
    )
