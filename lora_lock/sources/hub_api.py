"""The calls to the Hugging Face Hub's API for Hub sources: a revision resolved to a commit with every file's
metadata, the small files downloaded, safetensors headers read with HTTP range requests, a whole commit
downloaded on request. Every huggingface_hub error becomes one :class:`~lora_lock.errors.SourceError` sentence.

:mod:`lora_lock.sources.hub` (what a Hub source is, and the offline cache) imports this module at its top and
re-exports its public names; the few steps here that build its types import it when they run, so neither module
needs the other to be loaded first. huggingface_hub is imported inside functions: local-only runs never pay
for it.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from lora_lock.errors import SourceError
from lora_lock.inspect.safetensors_header import MAX_HEADER_BYTES, Header, parse_header
from lora_lock.inspect.tokenizer import TOKENIZER_FILES
from lora_lock.sources.fileset import MAX_FILES
from lora_lock.text import short_commit

if TYPE_CHECKING:
    from lora_lock.sources.hub import HubFile, HubSnapshot

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

    # At call time: lora_lock.sources.hub imports this module at its top (see the module docstring).
    from lora_lock.sources.hub import COMMIT, HubFile, HubSnapshot, repo_cache_dir

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

    from lora_lock.sources.hub import HubSnapshot, resolve_cached  # at call time, as in resolve_online

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
