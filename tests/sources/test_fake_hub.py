"""The fake Hub server speaks enough of the Hub API for huggingface_hub's real client (and its cache layout)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from tests.fixtures.fake_hub import (
    FakeHub,
    FileSource,
    HubEnv,
    HubFile,
    build_cache_layout,
    git_blob_sha1,
    hub_env,
    lfs_pointer,
)

pytest_plugins = ["tests.fixtures.fake_hub"]

REPO = "org/tiny"
CONFIG = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8}).encode()
WEIGHTS = b"\x00" * 4096 + b"weights!"
TOKEN = "hf_fake_token_1234"


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _sparse_safetensors(path: Path, rows: int, cols: int) -> tuple[int, int]:
    """A valid safetensors header for one F32 [rows, cols] tensor, then a hole up to the true size."""
    nbytes = rows * cols * 4
    header = {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [0, nbytes]},
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + nbytes)
    return 8 + len(raw) + nbytes, len(raw)


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: symlink target, 'dir', or the file's bytes' sha256."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = _sha256(p.read_bytes())
    return out


def test_model_info_with_and_without_revision_and_blobs(fake_hub: FakeHub, fake_hub_env: HubEnv) -> None:
    import huggingface_hub
    from huggingface_hub import HfApi

    sha = fake_hub.add_repo(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS}, tags=["v1"])
    api = HfApi(endpoint=fake_hub.endpoint)

    plain = api.model_info(REPO)
    assert plain.id == REPO and plain.sha == sha
    assert sorted(s.rfilename for s in plain.siblings or []) == ["config.json", "model.safetensors"]
    assert all(s.size is None and s.blob_id is None and s.lfs is None for s in plain.siblings or [])
    assert plain.config == {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}

    info = api.model_info(REPO, revision="v1", files_metadata=True)
    assert info.sha == sha
    sib = {s.rfilename: s for s in info.siblings or []}
    assert sib["config.json"].size == len(CONFIG)
    assert sib["config.json"].blob_id == git_blob_sha1(CONFIG)
    assert sib["config.json"].lfs is None
    lfs = sib["model.safetensors"].lfs
    assert lfs is not None and lfs.sha256 == _sha256(WEIGHTS) and lfs.size == len(WEIGHTS)
    assert lfs.pointer_size == len(lfs_pointer(_sha256(WEIGHTS), len(WEIGHTS)))
    assert sib["model.safetensors"].blob_id == git_blob_sha1(lfs_pointer(_sha256(WEIGHTS), len(WEIGHTS)))
    assert api.model_info(REPO, revision=sha).sha == sha

    # The module-level helpers (a HfApi built at import time) and the default endpoint are redirected too.
    assert huggingface_hub.model_info(REPO).sha == sha
    assert HfApi().model_info(REPO).sha == sha
    assert fake_hub.requests[0] == ("GET", f"/api/models/{REPO}", None)
    assert fake_hub.log[1].query == "blobs=true" and fake_hub.log[1].path == f"/api/models/{REPO}/revision/v1"
    assert fake_hub.count("GET", "/api/models/") == 5


def test_hf_hub_download_small_and_lfs_into_cache(fake_hub: FakeHub, fake_hub_env: HubEnv) -> None:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    sha = fake_hub.add_repo(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS, "sub/extra.json": b"{}"})
    cache = fake_hub_env.cache_dir
    cfg = Path(hf_hub_download(REPO, "config.json"))
    weights = Path(hf_hub_download(REPO, "model.safetensors", revision="main", cache_dir=cache))
    nested = Path(hf_hub_download(REPO, "sub/extra.json"))

    repo_dir = cache / "models--org--tiny"
    assert cfg == repo_dir / "snapshots" / sha / "config.json"
    assert cfg.read_bytes() == CONFIG and weights.read_bytes() == WEIGHTS and nested.read_bytes() == b"{}"
    assert os.readlink(cfg) == f"../../blobs/{git_blob_sha1(CONFIG)}"
    assert os.readlink(weights) == f"../../blobs/{_sha256(WEIGHTS)}"
    assert os.readlink(nested) == f"../../../blobs/{git_blob_sha1(b'{}')}"
    assert sorted(p.name for p in (repo_dir / "blobs").iterdir()) == sorted(
        [git_blob_sha1(CONFIG), _sha256(WEIGHTS), git_blob_sha1(b"{}")]
    )
    assert (repo_dir / "refs" / "main").read_text() == sha
    assert try_to_load_from_cache(REPO, "model.safetensors") == str(weights)
    assert fake_hub.count("HEAD") == 3 and fake_hub.count("GET") == 3
    assert fake_hub.bytes_served(".safetensors") == len(WEIGHTS)

    # Cached: by commit sha no request at all; by branch one HEAD and no body.
    fake_hub.reset_log()
    assert hf_hub_download(REPO, "model.safetensors", revision=sha) == str(weights)
    assert fake_hub.requests == []
    assert hf_hub_download(REPO, "model.safetensors") == str(weights)
    assert fake_hub.requests == [("HEAD", f"/{REPO}/resolve/main/model.safetensors", None)]


def test_hand_built_cache_layout_matches_a_real_download(
    fake_hub: FakeHub, fake_hub_env: HubEnv, tmp_path: Path
) -> None:
    from huggingface_hub import hf_hub_download

    files = {"config.json": CONFIG, "model.safetensors": WEIGHTS, "sub/extra.json": b"{}", "tokenizer.model": b"spm"}
    sha = fake_hub.add_repo(REPO, files)
    fake_hub.add_tag(REPO, "v1")
    for name in files:
        hf_hub_download(REPO, name)
    hf_hub_download(REPO, "config.json", revision="v1")
    built = build_cache_layout(tmp_path / "built", REPO, sha, files, refs={"main": sha, "v1": sha})
    assert built == tmp_path / "built" / "models--org--tiny" / "snapshots" / sha
    assert _tree(built.parents[1]) == _tree(fake_hub_env.cache_dir / "models--org--tiny")


def test_range_reads_of_a_sparse_multi_gb_safetensors_file(
    fake_hub: FakeHub, fake_hub_env: HubEnv, tmp_path: Path
) -> None:
    from huggingface_hub import HfApi, get_session

    big = tmp_path / "model.safetensors"
    size, header_len = _sparse_safetensors(big, 32768, 24576)
    assert size > 3 * 1024**3
    sha = fake_hub.add_repo(REPO, {"config.json": CONFIG, "model.safetensors": big})
    api = HfApi(endpoint=fake_hub.endpoint)

    meta = api.parse_safetensors_file_metadata(REPO, "model.safetensors")
    assert meta.metadata == {"format": "pt"}
    assert meta.tensors["w"].shape == [32768, 24576] and meta.tensors["w"].dtype == "F32"
    assert fake_hub.requests == [("GET", f"/{REPO}/resolve/main/model.safetensors", "bytes=0-100000")]
    assert fake_hub.log[0].status == 206
    assert fake_hub.bytes_served(".safetensors") == 100_001

    # Raw ranges: a slice, a suffix, an open end and an unsatisfiable one; the true size in Content-Range.
    url = fake_hub.url(REPO, "model.safetensors", revision=sha)
    r = get_session().get(url, headers={"Range": "bytes=0-7"})
    assert r.status_code == 206 and struct.unpack("<Q", r.content)[0] == header_len
    assert r.headers["Content-Range"] == f"bytes 0-7/{size}" and r.headers["X-Repo-Commit"] == sha
    r = get_session().get(url, headers={"Range": "bytes=-16"})
    assert r.status_code == 206 and r.content == b"\0" * 16
    r = get_session().get(url, headers={"Range": f"bytes={size - 4}-"})
    assert r.status_code == 206 and r.content == b"\0" * 4
    r = get_session().get(url, headers={"Range": f"bytes={size}-{size + 10}"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
    assert fake_hub.bytes_served(".safetensors") < 200_000


def test_trusted_sha256_skips_hashing_a_huge_file(fake_hub: FakeHub, fake_hub_env: HubEnv, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    big = tmp_path / "model.safetensors"
    size, _ = _sparse_safetensors(big, 32768, 24576)
    fake_sha = "ab" * 32
    fake_hub.add_repo(REPO, {"model.safetensors": HubFile(big, sha256=fake_sha)})
    info = HfApi(endpoint=fake_hub.endpoint).model_info(REPO, files_metadata=True)
    (sib,) = info.siblings or []
    assert sib.lfs is not None and sib.lfs.sha256 == fake_sha and sib.lfs.size == size
    assert HfApi(endpoint=fake_hub.endpoint).get_hf_file_metadata(url=fake_hub.url(REPO, "model.safetensors")).etag == (
        fake_sha
    )


def test_moved_branch_keeps_old_commit_reachable(fake_hub: FakeHub, fake_hub_env: HubEnv) -> None:
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi(endpoint=fake_hub.endpoint)
    first = fake_hub.add_repo(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    assert api.model_info(REPO, revision="main").sha == first
    second = fake_hub.commit(REPO, {"model.safetensors": WEIGHTS + b"v2"})
    assert second != first
    assert api.model_info(REPO, revision="main").sha == second
    assert api.model_info(REPO, revision=first).sha == first

    assert Path(hf_hub_download(REPO, "model.safetensors", revision=first)).read_bytes() == WEIGHTS
    assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == WEIGHTS + b"v2"
    assert Path(hf_hub_download(REPO, "config.json")).parent.name == second  # unchanged file, new snapshot
    assert (fake_hub_env.cache_dir / "models--org--tiny" / "refs" / "main").read_text() == second

    refs = api.list_repo_refs(REPO)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", second)]
    assert [c.commit_id for c in api.list_repo_commits(REPO)] == [second, first]
    # A commit with the same files is still a new commit.
    assert fake_hub.commit(REPO, {}) not in (first, second)


def test_private_repo_needs_the_token(fake_hub: FakeHub, fake_hub_env: HubEnv) -> None:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    sha = fake_hub.add_repo(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    fake_hub.set_private(REPO, token=TOKEN)
    fake_hub.add_token("hf_other_user")
    api = HfApi(endpoint=fake_hub.endpoint)

    with pytest.raises(RepositoryNotFoundError) as err:
        api.model_info(REPO)
    assert err.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError) as err:
        hf_hub_download(REPO, "config.json")
    assert err.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError) as err:
        api.model_info(REPO, token="hf_other_user")
    assert err.value.response.status_code == 404
    with pytest.raises(HfHubHTTPError) as unknown:  # a token the Hub does not know: 401, not "not found"
        api.model_info(REPO, token="hf_garbage")
    assert not isinstance(unknown.value, RepositoryNotFoundError) and unknown.value.response.status_code == 401
    assert not api.file_exists(REPO, "config.json")

    assert api.model_info(REPO, token=TOKEN).sha == sha
    assert api.model_info(REPO, token=TOKEN).private is True
    assert Path(hf_hub_download(REPO, "config.json", token=TOKEN)).read_bytes() == CONFIG
    assert api.file_exists(REPO, "model.safetensors", token=TOKEN)
    assert fake_hub.log[-1].authorization == f"Bearer {TOKEN}"


def test_gated_repo(fake_hub: FakeHub, fake_hub_env: HubEnv) -> None:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError

    fake_hub.add_repo(REPO, {"config.json": CONFIG}, gated="manual", token=TOKEN)
    fake_hub.add_token("hf_other_user")
    api = HfApi(endpoint=fake_hub.endpoint)
    assert api.model_info(REPO).gated == "manual"  # metadata stays public
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download(REPO, "config.json")
    assert err.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as err:
        api.file_exists(REPO, "config.json", token="hf_other_user")
    assert err.value.response.status_code == 403
    assert Path(hf_hub_download(REPO, "config.json", token=TOKEN)).read_bytes() == CONFIG


def test_missing_repo_revision_and_file(fake_hub: FakeHub, fake_hub_env: HubEnv) -> None:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    sha = fake_hub.add_repo(REPO, {"config.json": CONFIG})
    api = HfApi(endpoint=fake_hub.endpoint)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/nope")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/nope", "config.json")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="f" * 40)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "model.safetensors")
    # The client remembers the absent file (it reads X-Repo-Commit from the 404).
    assert (fake_hub_env.cache_dir / "models--org--tiny" / ".no_exist" / sha / "model.safetensors").is_file()
    assert api.file_exists(REPO, "config.json")
    assert not api.file_exists(REPO, "model.safetensors")
    assert not api.file_exists("org/nope", "config.json")
    assert not api.revision_exists(REPO, "nope") and api.revision_exists(REPO, "main")
    assert not api.repo_exists("org/nope") and api.repo_exists(REPO)


def test_server_errors_and_transient_failures(fake_hub: FakeHub, fake_hub_env: HubEnv) -> None:
    import httpx2
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    fake_hub.add_repo(REPO, {"config.json": CONFIG})
    api = HfApi(endpoint=fake_hub.endpoint)

    fake_hub.fail_next("/api/models/", 500)
    with pytest.raises(HfHubHTTPError) as err:  # model_info does not retry
        api.model_info(REPO)
    assert err.value.response.status_code == 500
    assert api.model_info(REPO).id == REPO

    fake_hub.fail_next("/resolve/", 503, method="HEAD")
    with pytest.raises(HfHubHTTPError) as err:
        api.file_exists(REPO, "config.json")
    assert err.value.response.status_code == 503

    # hf_hub_download's metadata HEAD retries once at once after a 5xx: one failure is absorbed.
    fake_hub.reset_log()
    fake_hub.fail_next("/resolve/", 500, method="HEAD")
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == CONFIG
    assert [(r.method, r.status) for r in fake_hub.log] == [("HEAD", 500), ("HEAD", 200), ("GET", 200)]

    # A failing GET of the content is not retried (only 408/429 are) and leaves nothing behind.
    fake_hub.commit(REPO, {"other.json": b"[]"})
    fake_hub.fail_next("other.json", 500, method="GET")
    with pytest.raises(HfHubHTTPError):
        hf_hub_download(REPO, "other.json")
    assert not list((fake_hub_env.cache_dir / "models--org--tiny" / "blobs").glob("*.incomplete"))

    # A dropped connection: the metadata HEAD of file_exists does not retry.
    fake_hub.fail_next("/resolve/", 0, method="HEAD")
    with pytest.raises(httpx2.RemoteProtocolError):
        api.file_exists(REPO, "config.json")


def test_slow_answers_hit_client_timeouts(fake_hub: FakeHub, fake_hub_env: HubEnv) -> None:
    import httpx2
    from huggingface_hub import HfApi

    fake_hub.add_repo(REPO, {"config.json": CONFIG})
    fake_hub.slow("/api/models/", 0.5, times=1)
    with pytest.raises(httpx2.TimeoutException):
        HfApi(endpoint=fake_hub.endpoint).model_info(REPO, timeout=0.1)
    assert HfApi(endpoint=fake_hub.endpoint).model_info(REPO, timeout=2).id == REPO


def test_tree_paths_info_and_snapshot_download(fake_hub: FakeHub, fake_hub_env: HubEnv) -> None:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    files = {"config.json": CONFIG, "model.safetensors": WEIGHTS, "sub/extra.json": b"{}"}
    sha = fake_hub.add_repo(REPO, files)
    api = HfApi(endpoint=fake_hub.endpoint)
    assert sorted(api.list_repo_files(REPO)) == sorted(files)
    top = {e.path: e for e in api.list_repo_tree(REPO)}
    assert set(top) == {"config.json", "model.safetensors", "sub"} and isinstance(top["sub"], RepoFolder)
    weights = top["model.safetensors"]
    assert isinstance(weights, RepoFile) and weights.lfs is not None and weights.lfs.sha256 == _sha256(WEIGHTS)
    assert [e.path for e in api.list_repo_tree(REPO, path_in_repo="sub")] == ["sub/extra.json"]

    infos = api.get_paths_info(REPO, ["config.json", "sub", "missing"], expand=True)
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "config.json"), ("RepoFolder", "sub")]
    assert isinstance(infos[0], RepoFile) and infos[0].blob_id == git_blob_sha1(CONFIG)
    assert infos[0].last_commit is not None and infos[0].last_commit.oid == sha

    folder = Path(snapshot_download(REPO))
    assert folder == fake_hub_env.cache_dir / "models--org--tiny" / "snapshots" / sha
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == set(files)


def test_lfs_redirect_to_a_cdn_origin(fake_hub: FakeHub, fake_hub_env: HubEnv, tmp_path: Path) -> None:
    from huggingface_hub import HfApi, hf_hub_download

    fake_hub.lfs_redirect = True
    _sparse_safetensors(tmp_path / "small.safetensors", 4, 4)
    weights = (tmp_path / "small.safetensors").read_bytes()
    fake_hub.add_repo(REPO, {"config.json": CONFIG, "model.safetensors": weights}, private=True, token=TOKEN)
    path = Path(hf_hub_download(REPO, "model.safetensors", token=TOKEN))
    assert path.read_bytes() == weights and path.resolve().name == _sha256(weights)
    head, get = fake_hub.log
    assert (head.method, head.status, get.method, get.status) == ("HEAD", 302, "GET", 200)
    assert get.path.startswith("/__cdn__/") and get.authorization is None  # no token sent off the Hub origin

    fake_hub.reset_log()
    meta = HfApi(endpoint=fake_hub.endpoint, token=TOKEN).parse_safetensors_file_metadata(REPO, "model.safetensors")
    assert meta.tensors["w"].shape == [4, 4]
    assert [(r.method, r.status, r.range) for r in fake_hub.log] == [
        ("GET", 302, "bytes=0-100000"),
        ("GET", 206, "bytes=0-100000"),
    ]
    assert fake_hub.log[0].authorization == f"Bearer {TOKEN}" and fake_hub.log[1].authorization is None


def test_offline_cache_layout_is_what_huggingface_hub_reads(offline_hub_cache: HubEnv, tmp_path: Path) -> None:
    from huggingface_hub import _CACHED_NO_EXIST, constants, hf_hub_download, scan_cache_dir, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError

    assert constants.HF_HUB_OFFLINE is True
    commit = "1" * 40
    big = tmp_path / "model.safetensors"
    size, _ = _sparse_safetensors(big, 32768, 24576)
    files: dict[str, FileSource] = {
        "config.json": CONFIG,
        "model.safetensors": HubFile(big, sha256="cd" * 32),
        "sub/x.json": b"{}",
    }
    snap = build_cache_layout(offline_hub_cache.cache_dir, REPO, commit, files, no_exist=["adapter_config.json"])

    assert try_to_load_from_cache(REPO, "config.json") == str(snap / "config.json")
    assert try_to_load_from_cache(REPO, "sub/x.json", revision=commit) == str(snap / "sub" / "x.json")
    assert try_to_load_from_cache(REPO, "adapter_config.json") is _CACHED_NO_EXIST
    assert try_to_load_from_cache(REPO, "config.json", revision="2" * 40) is None
    assert os.readlink(snap / "model.safetensors") == "../../blobs/" + "cd" * 32
    assert (snap / "model.safetensors").stat().st_size == size
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == CONFIG
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "missing.json")

    (repo,) = scan_cache_dir().repos  # default cache dir: the patched one
    assert repo.repo_id == REPO and set(repo.refs) == {"main"}
    (rev,) = repo.revisions
    assert rev.commit_hash == commit and {f.file_name for f in rev.files} == {
        "config.json",
        "model.safetensors",
        "x.json",
    }
    assert {f.blob_path.name for f in rev.files} == {git_blob_sha1(CONFIG), "cd" * 32, git_blob_sha1(b"{}")}


def test_hub_env_context_manager_restores_everything(fake_hub: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import HfApi, constants

    before = (constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE, os.environ.get("HF_ENDPOINT"))
    sha = fake_hub.add_repo(REPO, {"config.json": CONFIG})
    with hub_env(fake_hub, tmp_path / "home") as env:
        assert fake_hub.endpoint == constants.ENDPOINT and not constants.HF_HUB_OFFLINE
        assert env.cache_dir == tmp_path / "home" / "hub" and str(env.cache_dir) == constants.HF_HUB_CACHE
        assert HfApi().model_info(REPO).sha == sha
    after = (constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE, os.environ.get("HF_ENDPOINT"))
    assert after == before
