"""Hub sources end to end: the real huggingface_hub client against the fake Hub on 127.0.0.1, and hand-built caches.

What is proven here: ``org/name@rev`` resolves to a 40-hex commit (branch, tag, commit; short hashes refused), a
base is checked and locked from metadata, small files and safetensors header ranges only (no weight byte is
downloaded, requests are bounded), tokens are sent but never printed or written, Hub failures are one clear
exit-2 message, offline runs resolve from ``refs/`` and ``snapshots/``, fast verify trusts blob names while
``--deep`` re-hashes (huggingface_hub issue #3643: a corrupted blob keeps its name), and ``outdated`` reports a
moved ref with the files and config facts that changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from lora_lock import hashing
from lora_lock.commands.check import check
from lora_lock.commands.generate import generate
from lora_lock.commands.outdated import outdated
from lora_lock.commands.verify import verify
from lora_lock.findings import Report
from lora_lock.lock.io import read as read_lock
from lora_lock.sources.hub import SMALL_FILES
from tests.fixtures.fake_hub import (
    FakeHub,
    FileSource,
    HubEnv,
    HubFile,
    build_cache_layout,
    configure_huggingface_hub,
)
from tests.helpers import run_cli

BASE = "org/base"
ADAPTER = "org/adapter"
WEIGHTS = "model.safetensors"
TOKEN = "hf_loralock_secret_token_7c1e42"
OTHER_TOKEN = "hf_someone_else_token_90ab"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a hand-built cache's commit
OTHER_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"

Cli = Callable[..., tuple[int, str]]


# --- helpers ----------------------------------------------------------------------------------------------------------


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _hub_files(root: Path) -> dict[str, Path | HubFile]:
    """The files of a model directory for the fake Hub, the weights forced to LFS (as on the real Hub)."""
    files: dict[str, Path | HubFile] = dict(_files(root))
    files[WEIGHTS] = HubFile(root / WEIGHTS, lfs=True)
    return files


def _named_adapter(src: Path, dst: Path, base: str | None = BASE, revision: str | None = None) -> Path:
    """A copy of ``src`` whose adapter_config.json names ``base`` (and ``revision``)."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    config["revision"] = revision
    (dst / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return dst


def _lock(path: Path) -> dict[str, Any]:
    """The lock as data (read and schema-checked by lora_lock's own reader)."""
    return read_lock(path)


def _codes(report: Report) -> list[str]:
    return [f.code for f in report.findings]


def _weight_gets(hub: FakeHub, repo: str = BASE) -> list[tuple[str, str | None]]:
    """(path, Range header) of every GET of a safetensors file of ``repo``."""
    return [
        (r.path, r.range) for r in hub.log if r.method == "GET" and r.path.endswith(".safetensors") and repo in r.path
    ]


def _cache_blobs(tmp_path: Path, repo: str, *, lfs_only: bool = False) -> list[Path]:
    """The blobs of ``repo`` in the test's HF cache (``lfs_only``: those named by a sha256, i.e. LFS files)."""
    blobs = tmp_path / "hf-home" / "hub" / f"models--{repo.replace('/', '--')}" / "blobs"
    found = sorted(blobs.iterdir()) if blobs.is_dir() else []
    return [b for b in found if not lfs_only or len(b.name) == 64]


def _go_offline(monkeypatch: pytest.MonkeyPatch, env: HubEnv) -> None:
    """Same cache, HF_HUB_OFFLINE=1 from now on."""
    configure_huggingface_hub(monkeypatch, home=env.home, endpoint=None, offline=True)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run the CLI; (exit code, stdout + stderr)."""

    def run(*argv: str | Path) -> tuple[int, str]:
        capsys.readouterr()
        code, out, err = run_cli(capsys, *map(str, argv), forbid=())
        return code, out + err

    return run


@pytest.fixture
def hub(fake_hub: FakeHub, fake_hub_env: HubEnv, tiny_llama: Path) -> FakeHub:
    """The fake Hub serving the tiny Llama base as ``org/base`` (branch main, tag v1), huggingface_hub pointed at
    it with an empty cache."""
    fake_hub.add_repo(BASE, _hub_files(tiny_llama), tags=["v1"])
    fake_hub.reset_log()
    return fake_hub


@pytest.fixture
def adapter(tmp_path: Path, tiny_llama_adapter: Path) -> Path:
    """The tiny Llama LoRA, naming ``org/base`` as its base."""
    return _named_adapter(tiny_llama_adapter, tmp_path / "adapter")


@pytest.fixture
def hub_adapter(hub: FakeHub, adapter: Path) -> str:
    """The adapter on the fake Hub as ``org/adapter`` with tag v1; returns its commit."""
    sha = hub.add_repo(ADAPTER, _hub_files_adapter(adapter), tags=["v1"])
    hub.reset_log()
    return sha


def _hub_files_adapter(root: Path) -> dict[str, Path | HubFile]:
    files: dict[str, Path | HubFile] = dict(_files(root))
    files["adapter_model.safetensors"] = HubFile(root / "adapter_model.safetensors", lfs=True)
    return files


# --- a sparse, size-real base (multi-GB weights that cost nothing on disk) --------------------------------------------

_DTYPE_BYTES = {"BF16": 2, "F32": 4}
#: A 2-layer Llama-3-8B: ~3 GB of weights, all of it a hole.
BIG = {"hidden": 4096, "intermediate": 14336, "layers": 2, "heads": 32, "kv_heads": 8, "vocab": 128256}
#: A small-dimension Llama with so many layers that its safetensors header (and its adapter's) exceeds the first
#: 100 kB range read.
DEEP = {"hidden": 64, "intermediate": 128, "layers": 600, "heads": 4, "kv_heads": 2, "vocab": 1000}


def _write_safetensors(path: Path, table: Sequence[tuple[str, str, tuple[int, ...]]], *, sparse: bool) -> int:
    """A valid safetensors file; ``sparse``: the data section is a hole of the true length. Returns the size."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in table:
        n = _DTYPE_BYTES[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        if sparse:
            fh.truncate(8 + len(raw) + offset)
        else:
            fh.write(bytes(offset))
    return 8 + len(raw) + offset


def _llama_base(root: Path, dims: dict[str, int]) -> Path:
    """A Llama base of ``dims``: a real config and a sparse, size-real model.safetensors."""
    h, i, v = dims["hidden"], dims["intermediate"], dims["vocab"]
    head_dim = h // dims["heads"]
    kv = dims["kv_heads"] * head_dim
    root.mkdir(parents=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": h,
        "intermediate_size": i,
        "num_hidden_layers": dims["layers"],
        "num_attention_heads": dims["heads"],
        "num_key_value_heads": dims["kv_heads"],
        "head_dim": head_dim,
        "vocab_size": v,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    }
    (root / "config.json").write_text(json.dumps(config, indent=2))
    table: list[tuple[str, str, tuple[int, ...]]] = [("model.embed_tokens.weight", "BF16", (v, h))]
    for n in range(dims["layers"]):
        p = f"model.layers.{n}"
        table += [
            (f"{p}.input_layernorm.weight", "BF16", (h,)),
            (f"{p}.self_attn.q_proj.weight", "BF16", (h, h)),
            (f"{p}.self_attn.k_proj.weight", "BF16", (kv, h)),
            (f"{p}.self_attn.v_proj.weight", "BF16", (kv, h)),
            (f"{p}.self_attn.o_proj.weight", "BF16", (h, h)),
            (f"{p}.post_attention_layernorm.weight", "BF16", (h,)),
            (f"{p}.mlp.gate_proj.weight", "BF16", (i, h)),
            (f"{p}.mlp.up_proj.weight", "BF16", (i, h)),
            (f"{p}.mlp.down_proj.weight", "BF16", (h, i)),
        ]
    table += [("model.norm.weight", "BF16", (h,)), ("lm_head.weight", "BF16", (v, h))]
    _write_safetensors(root / WEIGHTS, table, sparse=True)
    return root


def _llama_adapter(root: Path, base: str, dims: dict[str, int]) -> Path:
    """A rank-8 LoRA on q_proj and v_proj of `_llama_base` ``dims`` (dense zeros)."""
    h, r = dims["hidden"], 8
    kv = dims["kv_heads"] * (h // dims["heads"])
    root.mkdir(parents=True)
    config: dict[str, Any] = {
        "base_model_name_or_path": base,
        "revision": None,
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": False,
        "use_rslora": False,
    }
    (root / "adapter_config.json").write_text(json.dumps(config, indent=2))
    table: list[tuple[str, str, tuple[int, ...]]] = []
    for n in range(dims["layers"]):
        p = f"base_model.model.model.layers.{n}.self_attn"
        table += [
            (f"{p}.q_proj.lora_A.weight", "F32", (r, h)),
            (f"{p}.q_proj.lora_B.weight", "F32", (h, r)),
            (f"{p}.v_proj.lora_A.weight", "F32", (r, h)),
            (f"{p}.v_proj.lora_B.weight", "F32", (kv, r)),
        ]
    _write_safetensors(root / "adapter_model.safetensors", table, sparse=False)
    return root


# --- 1. sources: check reads headers and configs only -----------------------------------------------------------------


def test_check_hub_base_reads_only_the_weight_header(hub: FakeHub, adapter: Path, tiny_llama: Path, cli: Cli) -> None:
    size = (tiny_llama / WEIGHTS).stat().st_size
    report = check(adapter, f"{BASE}@main")
    assert report.status.exit_code == 0, [(f.code, f.message) for f in report.findings]
    assert "COMPAT-IDENTITY" not in _codes(report)  # the adapter names org/base, and that is what was checked
    gets = _weight_gets(hub)
    assert gets and all(rng is not None and rng.startswith("bytes=") for _, rng in gets)
    assert 0 < hub.bytes_served(".safetensors") <= 100_000 < size
    assert hub.bytes_served(".safetensors") * 4 < size

    hub.reset_log()
    code, out = cli("check", adapter, "--base", f"{BASE}@main")
    assert code == 0, out
    assert all(rng is not None for _, rng in _weight_gets(hub))
    assert hub.bytes_served(".safetensors") * 4 < size


def test_check_adapter_and_base_both_from_the_hub(hub: FakeHub, hub_adapter: str, tiny_llama: Path, cli: Cli) -> None:
    report = check(f"{ADAPTER}@v1", f"{BASE}@main")
    assert report.status.exit_code == 0, [(f.code, f.message) for f in report.findings]
    assert any(r.path == f"/api/models/{ADAPTER}/revision/v1" for r in hub.log)
    assert all(rng is not None for _, rng in _weight_gets(hub)) and all(
        rng is not None for _, rng in _weight_gets(hub, ADAPTER)
    )
    assert hub.bytes_served(f"{BASE}/resolve/") < (tiny_llama / WEIGHTS).stat().st_size // 4

    code, out = cli("check", f"{ADAPTER}@v1", "--base", f"{BASE}@main")
    assert code == 0, out


def test_headers_larger_than_the_first_range_are_read_with_a_second_range(
    fake_hub: FakeHub, fake_hub_env: HubEnv, tmp_path: Path, cli: Cli
) -> None:
    base = _llama_base(tmp_path / "deep", DEEP)
    adapter = _llama_adapter(tmp_path / "deep-adapter", "org/deep", DEEP)
    header_len = struct.unpack("<Q", (base / WEIGHTS).read_bytes()[:8])[0]
    adapter_header = struct.unpack("<Q", (adapter / "adapter_model.safetensors").read_bytes()[:8])[0]
    assert header_len > 100_000 and adapter_header > 100_000
    fake_hub.add_repo("org/deep", _hub_files(base))
    fake_hub.add_repo("org/deep-adapter", _hub_files_adapter(adapter))
    fake_hub.reset_log()

    report = check("org/deep-adapter@main", "org/deep@main")
    assert report.status.exit_code == 0, [(f.code, f.message) for f in report.findings]
    for repo, length, size in (
        ("org/deep/", header_len, (base / WEIGHTS).stat().st_size),
        ("org/deep-adapter/", adapter_header, (adapter / "adapter_model.safetensors").stat().st_size),
    ):
        ranges = [rng for path, rng in _weight_gets(fake_hub, repo)]
        assert ranges[0] == "bytes=0-99999" and len(ranges) == 2, ranges
        assert ranges[1] == f"bytes=100000-{8 + length - 1}"
        assert sum(max(r.body_bytes, r.sent_bytes) for r in fake_hub.log if repo in r.path and r.range) == 8 + length
        assert 8 + length < size
    code, out = cli("check", "org/deep-adapter@main", "--base", "org/deep@main")
    assert code == 0, out


# --- 2. zero-download generate ----------------------------------------------------------------------------------------


def test_generate_zero_download_pins_commit_and_takes_digests_from_lfs_metadata(
    hub: FakeHub, adapter: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lora.lock"
    result = generate([adapter], f"{BASE}@main", out, probe=False)
    assert result.written, [(f.code, f.message) for f in result.report.findings]
    lock = _lock(out)
    base = lock["base"]
    assert base["repo"] == BASE and base["revision"] == hub.resolve(BASE, "main") and base["ref"] == "main"
    assert "source" not in base
    assert len(base["revision"]) == 40 and all(c in "0123456789abcdef" for c in base["revision"])
    assert hub.file_info(BASE, WEIGHTS)["lfs"] is True
    assert WEIGHTS in base["files"]
    for name, entry in base["files"].items():
        assert entry == {"digest": f"sha256:{_sha256(tiny_llama / name)}", "size": (tiny_llama / name).stat().st_size}
    assert "source" in lock["adapter"][0] and "repo" not in lock["adapter"][0]

    # Bounded traffic: one model_info, at most a HEAD + GET per small file, one or two header ranges.
    small = [n for n in _files(tiny_llama) if n in SMALL_FILES]
    assert hub.count("GET", "/api/models/") == 1
    assert hub.count(None, f"/{BASE}/resolve/") <= 2 * len(small) + 2
    assert len(hub.log) <= 2 * len(small) + 3, hub.requests
    gets = _weight_gets(hub)
    assert 1 <= len(gets) <= 2 and all(rng is not None for _, rng in gets), gets
    assert hub.bytes_served(".safetensors") * 4 < (tiny_llama / WEIGHTS).stat().st_size
    # Nothing of the weights reached the cache.
    assert not list(_cache_blobs(tmp_path, BASE, lfs_only=True))


def test_generate_download_fetches_and_gets_the_same_digests(
    hub: FakeHub, adapter: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    meta = tmp_path / "meta.lock"
    assert generate([adapter], f"{BASE}@main", meta, probe=False).written
    hub.reset_log()
    fetched = tmp_path / "fetched.lock"
    assert generate([adapter], f"{BASE}@main", fetched, probe=False, download=True).written
    size = (tiny_llama / WEIGHTS).stat().st_size
    assert any(rng is None for _, rng in _weight_gets(hub)), "--download did not fetch the weights"
    assert hub.bytes_served(".safetensors") >= size
    assert [b.name for b in _cache_blobs(tmp_path, BASE, lfs_only=True)] == [_sha256(tiny_llama / WEIGHTS)]
    assert _lock(fetched)["base"] == _lock(meta)["base"]


def test_generate_download_hashes_the_downloaded_weights(
    hub: FakeHub, adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[Path] = []
    real = hashing.hash_file

    def spy(path: Path, progress: Any = None) -> hashing.FileDigest:
        hashed.append(Path(path))
        return real(path, progress)

    monkeypatch.setattr(hashing, "hash_file", spy)
    assert generate([adapter], f"{BASE}@main", tmp_path / "lora.lock", probe=False, download=True).written
    cache = tmp_path / "hf-home" / "hub"
    assert any(p.name == WEIGHTS and p.is_relative_to(cache) for p in hashed), hashed


# --- 3. revisions, errors, tokens -------------------------------------------------------------------------------------


def test_tag_and_commit_revisions(hub: FakeHub, adapter: Path, tmp_path: Path, cli: Cli) -> None:
    sha = hub.resolve(BASE, "main")
    tagged = tmp_path / "tag.lock"
    assert generate([adapter], f"{BASE}@v1", tagged, probe=False).written
    assert (_lock(tagged)["base"]["revision"], _lock(tagged)["base"]["ref"]) == (sha, "v1")
    pinned = tmp_path / "commit.lock"
    assert generate([adapter], f"{BASE}@{sha}", pinned, probe=False).written
    assert _lock(pinned)["base"]["revision"] == sha and "ref" not in _lock(pinned)["base"]
    assert cli("check", adapter, "--base", f"{BASE}@v1")[0] == 0
    assert cli("check", adapter, "--base", f"{BASE}@{sha}")[0] == 0


def test_short_commit_hash_is_refused(hub: FakeHub, adapter: Path, tmp_path: Path, cli: Cli) -> None:
    short = hub.resolve(BASE, "main")[:7]
    code, out = cli("check", adapter, "--base", f"{BASE}@{short}")
    assert code == 2 and "short commit hash" in out and "Traceback" not in out
    code, out = cli("generate", "--adapter", adapter, "--base", f"{BASE}@abc1234", "-o", tmp_path / "l", "--no-probe")
    assert code == 2 and "short commit hash" in out
    assert hub.requests == []  # refused before asking the Hub


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("org/nope@main", "not found"), (f"{BASE}@no-such-branch", "not found"), (f"{BASE}@{'f' * 40}", "not found")],
)
def test_unknown_repo_or_revision(
    hub: FakeHub, adapter: Path, tmp_path: Path, cli: Cli, spec: str, expected: str
) -> None:
    code, out = cli("check", adapter, "--base", spec)
    assert code == 2 and expected in out and "Traceback" not in out, out
    code, out = cli("generate", "--adapter", adapter, "--base", spec, "-o", tmp_path / "lora.lock", "--no-probe")
    assert code == 2 and expected in out and "Traceback" not in out, out
    assert not (tmp_path / "lora.lock").exists()


def test_private_repo_without_a_valid_token(
    hub: FakeHub, adapter: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.set_private(BASE, token=TOKEN)
    hub.add_token(OTHER_TOKEN)
    code, out = cli("check", adapter, "--base", f"{BASE}@main")
    assert code == 2 and "HF_TOKEN" in out and TOKEN not in out, out
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)  # a valid token of someone without access
    code, out = cli("generate", "--adapter", adapter, "--base", f"{BASE}@main", "-o", tmp_path / "l", "--no-probe")
    assert code == 2 and "HF_TOKEN" in out and OTHER_TOKEN not in out and TOKEN not in out, out
    assert hub.log[-1].authorization == f"Bearer {OTHER_TOKEN}"


def test_private_repo_with_hf_token_works_and_never_shows_it(
    hub: FakeHub, adapter: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.set_private(BASE, token=TOKEN)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, out = cli("check", adapter, "--base", f"{BASE}@main", "--format", "json")
    assert code == 0 and TOKEN not in out, out
    lock = tmp_path / "lora.lock"
    code, out = cli("generate", "--adapter", adapter, "--base", f"{BASE}@main", "-o", lock, "--no-probe")
    assert code == 0 and TOKEN not in out, out
    assert TOKEN not in lock.read_text() and _lock(lock)["base"]["revision"] == hub.resolve(BASE)
    code, out = cli("verify", lock, "--format", "json")
    assert TOKEN not in out
    # The header ranges were authorised with the token (read_range sends it, not only model_info).
    ranges = [r for r in hub.log if r.range is not None]
    assert ranges and all(r.authorization == f"Bearer {TOKEN}" for r in ranges)
    assert not any(TOKEN in p.read_text(errors="replace") for p in tmp_path.glob("*.lock*"))


def test_gated_repo(hub: FakeHub, adapter: Path, tmp_path: Path, cli: Cli) -> None:
    hub.set_gated(BASE, token=TOKEN)
    code, out = cli("check", adapter, "--base", f"{BASE}@main")
    assert code == 2 and "gated" in out and "Traceback" not in out, out
    code, out = cli("generate", "--adapter", adapter, "--base", f"{BASE}@main", "-o", tmp_path / "l", "--no-probe")
    assert code == 2 and "gated" in out, out


@pytest.mark.parametrize(
    ("contains", "status", "method", "expected"),
    [
        ("/api/models/", 500, None, "HTTP 500"),
        ("/config.json", 503, "GET", "HTTP 503"),  # the resolve path (content GETs are not retried)
        (f"/{WEIGHTS}", 500, "GET", "HTTP 500"),  # the header range request, mid-way through reading the base
        (f"/{WEIGHTS}", 503, "GET", "HTTP 503"),
        (f"/{WEIGHTS}", 0, "GET", "cannot reach the Hub"),  # connection dropped
    ],
)
@pytest.mark.parametrize("command", ["check", "generate"])
def test_hub_failure_is_one_clear_message(
    hub: FakeHub,
    adapter: Path,
    tmp_path: Path,
    cli: Cli,
    command: str,
    contains: str,
    status: int,
    method: str | None,
    expected: str,
) -> None:
    hub.fail_next(contains, status, method=method)
    start = time.monotonic()
    if command == "check":
        code, out = cli("check", adapter, "--base", f"{BASE}@main")
    else:
        code, out = cli("generate", "--adapter", adapter, "--base", f"{BASE}@main", "-o", tmp_path / "l", "--no-probe")
    assert code == 2 and expected in out, out
    assert "Traceback" not in out and "internal error" not in out
    assert time.monotonic() - start < 10  # no backoff retries
    assert not (tmp_path / "l").exists()
    if status:
        assert any(r.status == status for r in hub.log)
    # A transient failure: the next run works.
    assert cli("check", adapter, "--base", f"{BASE}@main")[0] == 0


def test_slow_answers_below_the_client_timeout_still_work(
    hub: FakeHub, adapter: Path, tmp_path: Path, cli: Cli
) -> None:
    hub.slow("/api/models/", 0.4, times=1)
    hub.slow(f"/{WEIGHTS}", 0.4, times=1)
    code, out = cli("check", adapter, "--base", f"{BASE}@main")
    assert code == 0, out
    hub.slow("/resolve/", 0.2, times=3)
    assert generate([adapter], f"{BASE}@main", tmp_path / "lora.lock", probe=False).written


# --- 4. offline cache -------------------------------------------------------------------------------------------------


@pytest.fixture
def cached_base(offline_hub_cache: HubEnv, tiny_llama: Path) -> Path:
    """The tiny base in a hand-built cache at `COMMIT` with refs/main; huggingface_hub offline."""
    return build_cache_layout(offline_hub_cache.cache_dir, BASE, COMMIT, _files(tiny_llama))


def test_offline_check_and_generate_resolve_refs_from_the_cache(
    cached_base: Path, adapter: Path, tiny_llama: Path, tmp_path: Path, cli: Cli
) -> None:
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE is True
    for spec in (BASE, f"{BASE}@main"):
        report = check(adapter, spec)
        assert report.status.exit_code == 0, [(f.code, f.message) for f in report.findings]
        assert cli("check", adapter, "--base", spec)[0] == 0
    assert cli("check", adapter)[0] == 0  # the base the adapter names: org/base → refs/main

    for spec in (BASE, f"{BASE}@main"):
        out = tmp_path / f"{spec.replace('/', '_')}.lock"
        assert generate([adapter], spec, out, probe=False).written
        base = _lock(out)["base"]
        assert (base["repo"], base["revision"], base["ref"]) == (BASE, COMMIT, "main") and "source" not in base
        for name, entry in base["files"].items():
            assert entry["digest"] == f"sha256:{_sha256(tiny_llama / name)}"
        assert verify(out).status.exit_code == 0


def test_offline_missing_ref_or_commit(cached_base: Path, adapter: Path, tmp_path: Path, cli: Cli) -> None:
    code, out = cli("check", adapter, "--base", f"{BASE}@v9")
    assert code == 2 and f"hf download {BASE} --revision v9" in out and "Traceback" not in out, out
    code, out = cli("generate", "--adapter", adapter, "--base", f"{BASE}@v9", "-o", tmp_path / "l", "--no-probe")
    assert code == 2 and f"hf download {BASE} --revision v9" in out, out

    code, out = cli("check", adapter, "--base", f"{BASE}@{OTHER_COMMIT}")
    assert code == 2 and "not in the local Hub cache" in out and f"--revision {OTHER_COMMIT}" in out, out
    code, out = cli("check", adapter, "--base", "org/never-downloaded@main")
    assert code == 2 and "hf download org/never-downloaded" in out, out
    assert not (tmp_path / "l").exists()


# --- 5. verify against the cache --------------------------------------------------------------------------------------


@pytest.fixture
def hash_spy(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path lora_lock hashes (``hash_files`` goes through ``hashing.hash_file``)."""
    hashed: list[Path] = []
    real = hashing.hash_file

    def spy(path: Path, progress: Any = None) -> hashing.FileDigest:
        hashed.append(Path(path))
        return real(path, progress)

    monkeypatch.setattr(hashing, "hash_file", spy)
    return hashed


def _cached_weights(hashed: list[Path], cache: Path) -> list[Path]:
    return [p for p in hashed if p.name.endswith(".safetensors") and p.is_relative_to(cache)]


def test_verify_offline_fast_trusts_blob_names_and_deep_rehashes(
    hub: FakeHub,
    fake_hub_env: HubEnv,
    adapter: Path,
    tiny_llama: Path,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    hash_spy: list[Path],
) -> None:
    lock = tmp_path / "lora.lock"
    assert generate([adapter], f"{BASE}@main", lock, probe=False).written
    sha = hub.resolve(BASE)
    snapshot = build_cache_layout(fake_hub_env.cache_dir, BASE, sha, _files(tiny_llama))
    _go_offline(monkeypatch, fake_hub_env)
    hub.reset_log()

    hash_spy.clear()
    code, out = cli("verify", lock)
    assert code == 0, out
    assert _cached_weights(hash_spy, fake_hub_env.cache_dir) == []  # 0 weight bytes read
    assert hub.requests == []  # offline: nothing asked

    hash_spy.clear()
    code, out = cli("verify", lock, "--deep")
    assert code == 0, out
    assert [p.name for p in _cached_weights(hash_spy, fake_hub_env.cache_dir)] == [WEIGHTS]

    # huggingface_hub#3643: a corrupted download keeps its blob name (the sha256 it should have).
    blob = (snapshot / WEIGHTS).resolve()
    assert blob.name == _sha256(tiny_llama / WEIGHTS)
    with blob.open("r+b") as fh:
        fh.seek(-4, 2)
        last = fh.read(4)
        fh.seek(-4, 2)
        fh.write(bytes(b ^ 0xFF for b in last))
    code, out = cli("verify", lock)
    assert code == 0, out  # documented limitation of the fast mode: names are trusted
    code, out = cli("verify", lock, "--deep")
    assert code == 1 and "BASE-FILE-CHANGED" in out and WEIGHTS in out, out
    report = verify(lock, deep=True)
    assert [f.subject for f in report.findings if f.code == "BASE-FILE-CHANGED"] == [WEIGHTS]


def test_verify_fast_never_reads_a_multi_gb_cached_weight(
    fake_hub: FakeHub,
    fake_hub_env: HubEnv,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    hash_spy: list[Path],
) -> None:
    big = _llama_base(tmp_path / "big", BIG)
    size = (big / WEIGHTS).stat().st_size
    assert size > 2 * 1024**3
    # The fake Hub trusts this sha256 (hashing 3 GB of zeros would be slow): it is the LFS oid and the blob name.
    # It is NOT the sha256 of the bytes, so a verify that read the blob would fail, and one that hashed it would be
    # slow.
    trusted = hashlib.sha256(b"size-real sparse weights").hexdigest()
    files: dict[str, FileSource] = {
        "config.json": big / "config.json",
        WEIGHTS: HubFile(big / WEIGHTS, sha256=trusted, lfs=True),
    }
    fake_hub.add_repo("org/big", files)
    adapter = _llama_adapter(tmp_path / "big-adapter", "org/big", BIG)
    lock = tmp_path / "lora.lock"
    fake_hub.reset_log()
    start = time.monotonic()
    result = generate([adapter], "org/big@main", lock, probe=False)
    assert result.written, [(f.code, f.message) for f in result.report.findings]
    assert _lock(lock)["base"]["files"][WEIGHTS] == {"digest": f"sha256:{trusted}", "size": size}
    assert fake_hub.bytes_served(".safetensors") <= 100_000
    assert all(rng is not None for _, rng in _weight_gets(fake_hub, "org/big"))

    snapshot = build_cache_layout(fake_hub_env.cache_dir, "org/big", fake_hub.resolve("org/big"), files)
    assert (snapshot / WEIGHTS).resolve().name == trusted and (snapshot / WEIGHTS).stat().st_size == size
    _go_offline(monkeypatch, fake_hub_env)
    hash_spy.clear()
    code, out = cli("verify", lock)
    assert code == 0, out
    assert _cached_weights(hash_spy, fake_hub_env.cache_dir) == []
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("missing", [WEIGHTS, "generation_config.json"])
def test_verify_offline_locked_file_missing_from_the_cache_is_exit_2_with_hf_download_hint(
    hub: FakeHub,
    fake_hub_env: HubEnv,
    adapter: Path,
    tiny_llama: Path,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    missing: str,
) -> None:
    lock = tmp_path / "lora.lock"
    assert generate([adapter], f"{BASE}@main", lock, probe=False).written
    sha = hub.resolve(BASE)
    snapshot = fake_hub_env.cache_dir / f"models--{BASE.replace('/', '--')}" / "snapshots" / sha
    if missing == WEIGHTS:
        # The zero-download generate cached only the small files: the weights are on the Hub, not here.
        assert not (snapshot / WEIGHTS).exists()
    else:
        # A complete snapshot but for one small file.
        build_cache_layout(fake_hub_env.cache_dir, BASE, sha, _files(tiny_llama))
        (snapshot / missing).unlink()
    _go_offline(monkeypatch, fake_hub_env)
    code, out = cli("verify", lock)
    assert f"hf download {BASE} --revision {sha}" in out, out
    assert code == 2, out


def test_verify_online_right_after_a_zero_download_generate_passes(
    hub: FakeHub, adapter: Path, tiny_llama: Path, tmp_path: Path, cli: Cli
) -> None:
    lock = tmp_path / "lora.lock"
    assert generate([adapter], f"{BASE}@main", lock, probe=False).written
    hub.reset_log()
    code, out = cli("verify", lock)
    assert code == 0, out
    assert all(rng is not None for _, rng in _weight_gets(hub))


def test_verify_online_with_an_empty_cache_reads_the_pinned_commit(
    hub: FakeHub,
    fake_hub_env: HubEnv,
    adapter: Path,
    tiny_llama: Path,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lock = tmp_path / "lora.lock"
    assert generate([adapter], f"{BASE}@main", lock, probe=False).written
    configure_huggingface_hub(monkeypatch, home=tmp_path / "fresh-home", endpoint=hub.endpoint)
    hub.reset_log()
    code, out = cli("verify", lock)
    assert code == 0, out
    sha = _lock(lock)["base"]["revision"]
    assert any(r.path == f"/api/models/{BASE}/revision/{sha}" for r in hub.log)
    assert all(rng is not None for _, rng in _weight_gets(hub))
    assert hub.bytes_served(".safetensors") * 4 < (tiny_llama / WEIGHTS).stat().st_size


# --- 6. moved refs and `outdated` -------------------------------------------------------------------------------------


def _moved_files(tiny_llama: Path, tmp_path: Path) -> dict[str, bytes | HubFile]:
    weights = bytearray((tiny_llama / WEIGHTS).read_bytes())
    weights[-1] ^= 0xFF  # same header, other bytes
    config = json.loads((tiny_llama / "config.json").read_text())
    config["num_hidden_layers"] = config["num_hidden_layers"] + 1
    return {WEIGHTS: HubFile(bytes(weights), lfs=True), "config.json": json.dumps(config, indent=2).encode()}


def test_outdated_sees_a_tokenizer_change_in_the_base_repo(
    hub: FakeHub, fake_hub_env: HubEnv, adapter: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    """The tokenizer usually comes from the base repo: a new tokenizer.json there is reported, not skipped."""
    lock = tmp_path / "lora.lock"
    assert generate([adapter], f"{BASE}@main", lock, probe=False).written
    assert "tokenizer.json" in _lock(lock)["tokenizer"]["files"]
    tokenizer = json.loads((tiny_llama / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [*tokenizer.get("added_tokens", []), {**tokenizer["added_tokens"][0], "id": 99999}]
    hub.commit(BASE, {"tokenizer.json": json.dumps(tokenizer).encode()})
    report = outdated(lock)
    findings = {(f.code, f.subject) for f in report.findings}
    assert ("BASE-MOVED", BASE) in findings
    assert ("BASE-FILE-CHANGED", "tokenizer.json") in findings


def test_outdated_reports_a_moved_branch_and_what_changed(
    hub: FakeHub,
    fake_hub_env: HubEnv,
    adapter: Path,
    tiny_llama: Path,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lock = tmp_path / "lora.lock"
    assert generate([adapter], f"{BASE}@main", lock, probe=False).written
    old = hub.resolve(BASE)
    code, out = cli("outdated", lock)
    assert code == 0, out

    new = hub.commit(BASE, _moved_files(tiny_llama, tmp_path))
    assert new != old
    code, out = cli("outdated", lock)
    assert code == 1 and "BASE-MOVED" in out and old[:12] in out and new[:12] in out, out
    report = outdated(lock)
    findings = {(f.code, f.subject) for f in report.findings}
    assert ("BASE-MOVED", BASE) in findings
    assert ("BASE-FILE-CHANGED", WEIGHTS) in findings and ("BASE-FILE-CHANGED", "config.json") in findings
    assert ("BASE-CONFIG", "num_hidden_layers") in findings
    assert not any(f.subject in ("tokenizer.json", "generation_config.json") for f in report.findings)
    assert _weight_gets(hub) == [] or all(rng is not None for _, rng in _weight_gets(hub))

    # The lock pins the old commit, which stays reachable: verify still passes (fresh cache, from the Hub).
    configure_huggingface_hub(monkeypatch, home=tmp_path / "fresh-home", endpoint=hub.endpoint)
    code, out = cli("verify", lock)
    assert code == 0, out


def test_outdated_pinned_local_and_offline(
    hub: FakeHub,
    fake_hub_env: HubEnv,
    adapter: Path,
    tiny_llama: Path,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sha = hub.resolve(BASE)
    pinned = tmp_path / "pinned.lock"
    assert generate([adapter], f"{BASE}@{sha}", pinned, probe=False).written
    hub.commit(BASE, _moved_files(tiny_llama, tmp_path))
    code, out = cli("outdated", pinned)
    assert code == 0 and "SOURCE-PINNED" in out and "MOVED" not in out, out

    local = tmp_path / "local.lock"
    assert generate([adapter], tiny_llama, local, probe=False).written
    code, out = cli("outdated", local)
    assert code == 0 and "SOURCE-LOCAL" in out, out

    moved = tmp_path / "moved.lock"
    assert generate([adapter], f"{BASE}@v1", moved, probe=False).written
    _go_offline(monkeypatch, fake_hub_env)
    hub.reset_log()
    code, out = cli("outdated", moved)
    assert code == 2 and "offline" in out and "Traceback" not in out, out
    assert hub.requests == []


def test_outdated_covers_a_hub_adapter_locked_from_a_tag(
    hub: FakeHub, hub_adapter: str, adapter: Path, tmp_path: Path, cli: Cli
) -> None:
    lock = tmp_path / "lora.lock"
    assert generate([f"{ADAPTER}@v1"], f"{BASE}@{hub.resolve(BASE)}", lock, probe=False).written
    entry = _lock(lock)["adapter"][0]
    assert (entry["repo"], entry["revision"], entry["ref"]) == (ADAPTER, hub_adapter, "v1")
    assert cli("outdated", lock)[0] == 0
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["lora_alpha"] = 32
    moved = hub.commit(ADAPTER, {"adapter_config.json": json.dumps(config).encode()})
    hub.add_tag(ADAPTER, "v1", moved)
    code, out = cli("outdated", lock)
    assert code == 1 and "ADAPTER-MOVED" in out and "adapter_config.json" in out, out


# --- 7. the adapter config's base_model_name_or_path + revision -------------------------------------------------------


def test_adapter_config_revision_is_the_default_base(
    hub: FakeHub, tiny_llama_adapter: Path, tmp_path: Path, cli: Cli
) -> None:
    pinned = hub.resolve(BASE)
    adapter = _named_adapter(tiny_llama_adapter, tmp_path / "pinned-adapter", BASE, pinned)
    # main moves on to a commit without weights: resolving `main` instead of the pin would fail.
    hub.commit(BASE, {}, delete=[WEIGHTS])
    assert check(adapter, f"{BASE}@main").status.exit_code == 2
    hub.reset_log()

    report = check(adapter)
    assert report.status.exit_code == 0, [(f.code, f.message) for f in report.findings]
    assert "COMPAT-IDENTITY" not in _codes(report)
    assert [r.path for r in hub.log if r.path.startswith("/api/models/")] == [f"/api/models/{BASE}/revision/{pinned}"]
    code, out = cli("check", adapter)
    assert code == 0, out

    lock = tmp_path / "lora.lock"
    assert generate([adapter], None, lock, probe=False).written
    base = _lock(lock)["base"]
    assert base["repo"] == BASE and base["revision"] == pinned and "ref" not in base


# --- the public API the brief (and the README) uses -------------------------------------------------------------------


def test_public_api_names_stay_functions_after_the_cli_imported_their_modules() -> None:
    import subprocess
    import sys

    code = (
        "import lora_lock.commands.verify, lora_lock.commands.generate, lora_lock.lock.diff, lora_lock.commands.guard\n"
        "import lora_lock\n"
        "bad = [n for n in ('verify', 'generate', 'diff', 'guard', 'check') if not callable(getattr(lora_lock, n))]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-500:]


# --- partial caches, refs, edited locks -------------------------------------------------------------------------------


def _model_files_only(tiny_llama: Path) -> dict[str, Path]:
    """What ``AutoModel.from_pretrained`` leaves in a cache: the model's files, no tokenizer."""
    return {n: p for n, p in _files(tiny_llama).items() if n in ("config.json", "generation_config.json", WEIGHTS)}


def test_a_cache_without_the_tokenizer_files_is_not_tokenizer_drift(
    hub: FakeHub, fake_hub_env: HubEnv, adapter: Path, tiny_llama: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """The tokenizer comes from the base's commit; the cache has the model files only. Online, the missing small
    files come from the pinned commit (pass); offline, they are missing input (exit 2), never drift."""
    lock = tmp_path / "lora.lock"
    assert generate([adapter], f"{BASE}@main", lock, probe=False).written
    sha = hub.resolve(BASE)
    configure_huggingface_hub(monkeypatch, home=tmp_path / "fresh", endpoint=hub.endpoint)
    build_cache_layout(tmp_path / "fresh" / "hub", BASE, sha, _model_files_only(tiny_llama))
    report = verify(lock)
    assert report.status.exit_code == 0, [(f.code, f.message) for f in report.findings]

    configure_huggingface_hub(monkeypatch, home=tmp_path / "fresh-2", endpoint=None, offline=True)
    build_cache_layout(tmp_path / "fresh-2" / "hub", BASE, sha, _model_files_only(tiny_llama))
    report = verify(lock)
    assert report.status.exit_code == 2, [(f.code, f.message) for f in report.findings]
    assert not any(f.code.startswith("TOKENIZER-") for f in report.findings)
    assert "tokenizer.json" in next(f.message for f in report.findings if f.code == "INPUT-UNUSABLE")


def test_outdated_follows_the_tokenizer_ref_even_on_the_base_commit(
    hub: FakeHub, adapter: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    sha = hub.resolve(BASE)
    lock = tmp_path / "lora.lock"
    assert generate([adapter], f"{BASE}@{sha}", lock, tokenizer=f"{BASE}@main", probe=False).written
    tokenizer = json.loads((tiny_llama / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["normalizer"] = None
    hub.commit(BASE, {"tokenizer.json": json.dumps(tokenizer).encode()})
    report = outdated(lock)
    assert [f.code for f in report.findings if f.severity.value == "error"] == ["TOKENIZER-MOVED"]


def test_a_ref_downloaded_once_resolves_offline(
    hub: FakeHub, fake_hub_env: HubEnv, adapter: Path, monkeypatch: Any, cli: Cli
) -> None:
    """Files are fetched by commit (the pin); the ref is recorded as huggingface_hub would, so the same
    ``org/base@v1`` works offline afterwards."""
    assert generate([adapter], f"{BASE}@v1", adapter.parent / "lora.lock", probe=False, download=True).written
    assert (fake_hub_env.cache_dir / "models--org--base" / "refs" / "v1").read_text() == hub.resolve(BASE)
    _go_offline(monkeypatch, fake_hub_env)
    code, out = cli("check", adapter, "--base", f"{BASE}@v1")
    assert code == 0, out


@pytest.mark.parametrize("revision", ["..", ".", "v1/..", "main/", "/main"])
def test_revisions_that_are_no_ref_name_are_refused(hub: FakeHub, adapter: Path, cli: Cli, revision: str) -> None:
    code, out = cli("check", adapter, "--base", f"{BASE}@{revision}")
    assert code == 2 and "is not a branch, tag or commit name" in out, out
    assert not [r for r in hub.log if "/api/" in r.path]  # refused before any request


@pytest.mark.parametrize("repo", ["org/ba d", "a/b/c", "org/base--x", "-org/base", "org/" + "x" * 200])
@pytest.mark.parametrize("command", ["verify", "outdated"])
def test_an_edited_lock_with_an_invalid_repo_id_is_unusable_input(
    hub: FakeHub, adapter: Path, tmp_path: Path, cli: Cli, repo: str, command: str
) -> None:
    lock = tmp_path / "lora.lock"
    assert generate([adapter], f"{BASE}@main", lock, probe=False).written
    lock.write_text(lock.read_text(encoding="utf-8").replace('repo = "org/base"', f'repo = "{repo}"'), encoding="utf-8")
    code, out = cli(command, lock)
    assert code == 2 and "internal error" not in out, out
    assert "x" * 120 not in out  # a crafted value is never echoed whole
