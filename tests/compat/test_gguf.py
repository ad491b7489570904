"""GGUF bases: real GGUF files written by the ``gguf`` package's GGUFWriter, read by lora-lock without it.

The ``gguf`` package is a test dependency only: lora-lock's reader is its own (stdlib ``struct``), and its name
table is generated from transformers' GGUF loader (``scripts/gen_gguf_names.py``). The slow tests load the files
with transformers itself (``gguf_file=``) and compare its parameters with lora-lock's static view.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from lora_lock._cli import main
from lora_lock.inspect.gguf import read_gguf
from tests.fixtures.header_bases import write_adapter
from tests.fixtures.tiny_models import LLAMA_SHAPE, RANK, LlamaShape
from tests.helpers import NO_CRASH, ROOT, run_cli
from tests.test_static_imports import run_child

gguf = pytest.importorskip("gguf", reason="the GGUF tests write files with the gguf package (test extra)")
np = pytest.importorskip("numpy")

Q = gguf.GGMLQuantizationType


class GgufShape(LlamaShape):
    """``write_llama_gguf``'s sizes: the tiny Llama's, with a vocabulary."""

    vocab: int


TINY: GgufShape = {**LLAMA_SHAPE, "vocab": 1000}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The shared runner with no crash allowed; stdout and stderr together."""
    rc, out, err = run_cli(capsys, *argv, forbid=NO_CRASH)
    return rc, out + err


def llama_params(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int) -> dict[str, Any]:
    """transformers' Llama parameter names and torch shapes."""
    head_dim = hidden // heads
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    out["lm_head.weight"] = (vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = (heads * head_dim, hidden)
        out[p + "self_attn.k_proj.weight"] = (kv_heads * head_dim, hidden)
        out[p + "self_attn.v_proj.weight"] = (kv_heads * head_dim, hidden)
        out[p + "self_attn.o_proj.weight"] = (hidden, heads * head_dim)
        out[p + "mlp.gate_proj.weight"] = (intermediate, hidden)
        out[p + "mlp.up_proj.weight"] = (intermediate, hidden)
        out[p + "mlp.down_proj.weight"] = (hidden, intermediate)
        out[p + "input_layernorm.weight"] = (hidden,)
        out[p + "post_attention_layernorm.weight"] = (hidden,)
    return out


def gguf_name(hf_name: str, layers: int) -> str:
    """The llama.cpp name the gguf package's TensorNameMap gives a transformers name (as convert_hf_to_gguf)."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    found = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    assert found is not None, hf_name
    return str(found)


def write_llama_gguf(
    path: Path,
    *,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    vocab: int,
    data: Mapping[str, Any] | None = None,
    proj_type: Any = Q.Q8_0,
    tie: bool = False,
) -> Path:
    """A Llama GGUF file as llama.cpp's converter lays it out: F32 norms, F16 embeddings, quantized projections."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(intermediate)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(vocab)])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    for name, shape in llama_params(hidden, layers, heads, kv_heads, intermediate, vocab).items():
        if tie and name == "lm_head.weight":
            continue
        array = np.asarray(data[name], dtype=np.float32) if data else rng.standard_normal(shape).astype(np.float32)
        target = gguf_name(name, layers)
        if len(shape) == 1:
            writer.add_tensor(target, array)
        elif "embed_tokens" in name:
            writer.add_tensor(target, array.astype(np.float16))
        else:
            writer.add_tensor(target, gguf.quants.quantize(array, proj_type), raw_dtype=proj_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def lora_shapes(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, r: int) -> dict[str, Any]:
    params = llama_params(hidden, layers, heads, kv_heads, intermediate, 10)
    out: dict[str, tuple[int, int]] = {}
    for name, (rows, cols) in ((n, s) for n, s in params.items() if any(p in n for p in PROJECTIONS)):
        module = "base_model.model." + name.removesuffix(".weight")
        out[module + ".lora_A.weight"] = (r, cols)
        out[module + ".lora_B.weight"] = (rows, r)
    return out


def adapter(root: Path, *, hidden: int, intermediate: int, layers: int = 2, heads: int = 4, kv_heads: int = 2) -> Path:
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": RANK,
        "lora_alpha": 16,
        "target_modules": list(PROJECTIONS),
        "base_model_name_or_path": "org/tiny-llama",
    }
    return write_adapter(root, config, lora_shapes(hidden, layers, heads, kv_heads, intermediate, RANK))


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose only weights are one Q8_0 GGUF file of the tiny Llama's shape (no config.json)."""
    root = tmp_path_factory.mktemp("gguf-base")
    write_llama_gguf(root / "tiny-llama-Q8_0.gguf", **TINY)
    return root


def report(capsys: pytest.CaptureFixture[str], adapter_dir: Path, base: Path) -> tuple[int, dict[str, Any]]:
    rc, out = cli(capsys, "check", str(adapter_dir), "--base", str(base), "--format", "json")
    return rc, json.loads(out)


def unusable(capsys: pytest.CaptureFixture[str], adapter_dir: Path, base: Path) -> tuple[int, str]:
    """Exit code and the one paragraph (message and hint) of an unusable-input report."""
    rc, doc = report(capsys, adapter_dir, base)
    assert [f["code"] for f in doc["findings"]] == ["INPUT-UNUSABLE"], doc["findings"]
    finding = doc["findings"][0]
    return rc, f"{finding['message']}\nhint: {finding.get('hint')}"


def codes(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["code"]: f for f in doc["findings"]}


# --- check on GGUF bases -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_file", [False, True], ids=["directory", "file"])
def test_a_fitting_adapter_on_a_gguf_base_is_refused_with_both_ways_that_work(
    gguf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], as_file: bool
) -> None:
    fits = adapter(tmp_path / "a", hidden=64, intermediate=128)
    base = gguf_dir / "tiny-llama-Q8_0.gguf" if as_file else gguf_dir
    rc, doc = report(capsys, fits, base)
    assert rc == 1
    found = codes(doc)
    assert "COMPAT-SHAPE" not in found and "INPUT-UNUSABLE" not in found
    refusal = found["COMPAT-GGUF"]
    assert refusal["severity"] == "error"
    for words in ("PEFT cannot apply", "gguf_file='tiny-llama-Q8_0.gguf'", "convert_lora_to_gguf.py", "dequantized"):
        assert words in refusal["message"]
    assert "safetensors" not in refusal["message"].split("Two ways")[0]
    fmt = found["QUANT-FORMAT"]
    # 2 layers x 7 projections + lm_head are Q8_0; 2 x 2 norms + the final norm F32; the embedding F16.
    assert fmt["actual"] == "gguf(F16=1,F32=5,Q8_0=15)"
    assert "Q8_0 ×15" in fmt["message"]


def test_shapes_are_checked_against_the_reversed_gguf_dims(
    gguf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = adapter(tmp_path / "wide", hidden=96, intermediate=128, heads=4, kv_heads=2)
    rc, doc = report(capsys, wrong, gguf_dir)
    assert rc == 1
    shape = [f for f in doc["findings"] if f["code"] == "COMPAT-SHAPE"]
    assert shape, doc["findings"]
    assert any("q_proj" in f["subject"] for f in shape)
    assert "COMPAT-GGUF" in codes(doc)


def test_facts_come_from_the_gguf_metadata_without_a_config(gguf_dir: Path) -> None:
    from lora_lock.compat.base import read_base
    from lora_lock.sources.resolve import resolve

    view = read_base(resolve(gguf_dir))
    facts = view.facts
    assert (facts.model_type, facts.architecture) == ("llama", "LlamaForCausalLM")
    assert (facts.hidden_size, facts.num_hidden_layers, facts.intermediate_size) == (64, 2, 128)
    assert (facts.num_attention_heads, facts.num_key_value_heads, facts.head_dim, facts.vocab_size) == (4, 2, 16, 1000)
    assert facts.tie_word_embeddings is False
    q = view.checkpoint.tensors["model.layers.1.self_attn.k_proj.weight"]
    assert (q.shape, q.dtype) == ((32, 64), "Q8_0")
    assert view.checkpoint.tensors["model.layers.0.mlp.down_proj.weight"].shape == (64, 128)


def test_a_gguf_next_to_safetensors_weights_is_not_the_base(tmp_path: Path) -> None:
    from lora_lock.compat.gguf import gguf_files
    from lora_lock.sources.resolve import resolve

    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "model-Q4_K_M.gguf").write_bytes(b"")
    assert gguf_files(resolve(tmp_path)) is None


def test_several_gguf_quants_in_one_directory_must_be_named(
    gguf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    for name in ("m-Q4_K_M.gguf", "m-Q8_0.gguf", "mmproj-F16.gguf"):
        os.link(gguf_dir / "tiny-llama-Q8_0.gguf", base / name)
    rc, out = unusable(capsys, adapter(tmp_path / "a", hidden=64, intermediate=128), base)
    assert rc == 2
    assert "2 GGUF files" in out and "--base" in out and "mmproj" not in out.split("hint")[0]


# --- bad input: exit 2, one paragraph, no traceback ------------------------------------------------------------------


def raw_gguf(version: int = 3, n_tensors: int = 0, n_kv: int = 0, body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + body


def gstr(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


ARCH_KV = gstr("general.architecture") + struct.pack("<I", 8) + gstr("llama")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "not a GGUF file"),
        (b"PK\x03\x04" + b"\x00" * 40, "not a GGUF file"),
        (raw_gguf()[:10], "truncated"),
        (raw_gguf(version=4), "unsupported GGUF version 4"),
        (raw_gguf(version=1), "version 1"),
        (raw_gguf(version=7_000_000), "unsupported GGUF version"),
        (raw_gguf(n_tensors=2**63), "tensor count is 9223372036854775808, which cannot be right"),
        (raw_gguf(n_kv=10**12), "key/value count"),
        (raw_gguf(n_kv=1, body=struct.pack("<Q", 2**60) + bytes(64)), "claims 1152921504606846976 bytes"),
        (raw_gguf(n_kv=1, body=gstr("a.b") + struct.pack("<I", 13)), "unknown value type 13"),
        (
            raw_gguf(n_kv=1, body=gstr("tokens") + struct.pack("<IIQ", 9, 8, 2**40)),
            "the length of array",
        ),
        (raw_gguf(n_kv=1, body=gstr("a") + struct.pack("<IB", 7, 5)), "a bool must be 0 or 1"),
        (
            raw_gguf(n_kv=2, body=ARCH_KV + ARCH_KV),
            "appears twice",
        ),
        (
            raw_gguf(n_tensors=1, n_kv=1, body=ARCH_KV + gstr("t") + struct.pack("<IQIQ", 1, 32, 99, 0)),
            "ggml type 99",
        ),
        (
            raw_gguf(n_tensors=1, n_kv=1, body=ARCH_KV + gstr("t") + struct.pack("<IQQQQQ", 5, 1, 1, 1, 1, 1)),
            "has 5 dimensions",
        ),
        (
            raw_gguf(n_tensors=1, n_kv=1, body=ARCH_KV + gstr("t") + struct.pack("<IQIQ", 1, 33, 8, 0)),
            "not a multiple of Q8_0's block size 32",
        ),
        (
            raw_gguf(n_tensors=1, n_kv=1, body=ARCH_KV + gstr("t") + struct.pack("<IQIQ", 1, 8, 0, 64)),
            "starts at data offset 64",
        ),
        (
            raw_gguf(n_tensors=1, n_kv=1, body=ARCH_KV + gstr("t") + struct.pack("<IQIQ", 1, 2**20, 0, 0)),
            "truncated GGUF file",
        ),
        (raw_gguf(n_kv=1, body=gstr("general.name") + struct.pack("<I", 8) + gstr("x")), "general.architecture"),
    ],
)
def test_a_broken_gguf_is_one_clear_paragraph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: str
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "model.gguf").write_bytes(content)
    rc, out = unusable(capsys, adapter(tmp_path / "a", hidden=64, intermediate=128), base)
    assert rc == 2, out
    assert words in out
    assert "model.gguf" in out
    assert "model.safetensors" not in out


def test_a_truncated_real_file_is_refused(gguf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = (gguf_dir / "tiny-llama-Q8_0.gguf").read_bytes()
    for cut in (100, len(data) // 3, len(data) - 1):
        base = tmp_path / f"cut{cut}"
        base.mkdir()
        (base / "model.gguf").write_bytes(data[:cut])
        rc, out = unusable(capsys, adapter(tmp_path / "a", hidden=64, intermediate=128), base)
        assert rc == 2 and "truncated" in out, out


def test_a_big_endian_file_reads_the_same(gguf_dir: Path, tmp_path: Path) -> None:
    src = gguf_dir / "tiny-llama-Q8_0.gguf"
    little = read_gguf(src)
    dst = tmp_path / "be.gguf"
    writer = gguf.GGUFWriter(str(dst), "llama", endianess=gguf.GGUFEndian.BIG)
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((10, 64), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    big = read_gguf(dst)
    assert big.big_endian and not little.big_endian
    assert big.metadata["llama.block_count"] == 2
    assert big.tensors["token_embd.weight"].shape == (10, 64)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_model_gguf_does_not_hang(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base"
    base.mkdir()
    os.mkfifo(base / "model.gguf")
    fits = adapter(tmp_path / "a", hidden=64, intermediate=128)
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(rc=main(["check", str(fits), "--base", str(base)])))
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # unblock the reader so the test session can end, then fail
        with open(base / "model.gguf", "wb"):
            pass
        worker.join(timeout=5)
        pytest.fail("check blocked on a FIFO")
    out = capsys.readouterr()
    assert result["rc"] == 2
    assert "FIFO" in out.out + out.err and "not a regular file" in out.out + out.err
    rc, text = unusable(capsys, fits, base / "model.gguf")
    assert rc == 2 and "FIFO" in text and "not a regular file" in text


def test_an_architecture_transformers_cannot_load_is_refused_without_a_shape_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rwkv.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv6")
    writer.add_tensor("token_embd.weight", np.zeros((10, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    rc, doc = report(capsys, adapter(tmp_path / "a", hidden=64, intermediate=128), path)
    assert rc == 1
    found = codes(doc)
    assert "cannot load GGUF architecture `rwkv6`" in found["COMPAT-GGUF"]["message"]
    assert not [c for c in found if c.startswith("COMPAT-") and c not in ("COMPAT-GGUF", "COMPAT-IDENTITY")]


# --- size-real: a Llama-3-8B-shaped Q4_K file, header only -----------------------------------------------------------

LLAMA3_8B = {"hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 8, "intermediate": 14336, "vocab": 128256}


def write_header_only_gguf(path: Path, shape: Mapping[str, int], qtype: Any = Q.Q4_K) -> Path:
    """The header of a real-sized GGUF (tokenizer arrays included) and a sparse data section of the true length."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(shape["layers"])
    writer.add_embedding_length(shape["hidden"])
    writer.add_feed_forward_length(shape["intermediate"])
    writer.add_head_count(shape["heads"])
    writer.add_head_count_kv(shape["kv_heads"])
    writer.add_rope_dimension_count(shape["hidden"] // shape["heads"])
    writer.add_vocab_size(shape["vocab"])
    writer.add_token_list([f"tok{i}" for i in range(shape["vocab"])])
    writer.add_token_types([1] * shape["vocab"])
    writer.add_token_merges([f"a{i} b{i}" for i in range(280_000)])
    total = 0
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    for name, dims in llama_params(**shape).items():
        kind = Q.F32 if len(dims) == 1 else qtype
        if kind == Q.F32:
            nbytes = 4 * int(np.prod(dims))
            writer.add_tensor_info(gguf_name(name, shape["layers"]), dims, np.dtype(np.float32), nbytes)
        else:
            byte_shape = (dims[0], dims[1] // block * size)
            nbytes = byte_shape[0] * byte_shape[1]
            writer.add_tensor_info(gguf_name(name, shape["layers"]), byte_shape, np.dtype(np.uint8), nbytes, kind)
        total += -(-nbytes // 32) * 32
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header = path.stat().st_size
    os.truncate(path, -(-header // 32) * 32 + total)
    return path


def test_check_on_a_llama3_8b_shaped_gguf_reads_the_header_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_header_only_gguf(tmp_path / "Meta-Llama-3-8B-Q4_K.gguf", LLAMA3_8B)
    assert base.stat().st_size > 4 * 10**9
    shape = {k: LLAMA3_8B[k] for k in ("hidden", "layers", "heads", "kv_heads", "intermediate")}
    fits = adapter(tmp_path / "a", **shape)
    start = time.perf_counter()
    rc, doc = report(capsys, fits, base)
    elapsed = time.perf_counter() - start
    assert rc == 1
    found = codes(doc)
    assert set(found) >= {"COMPAT-GGUF", "QUANT-FORMAT"} and "COMPAT-SHAPE" not in found
    assert found["QUANT-FORMAT"]["actual"] == "gguf(F32=65,Q4_K=226)"
    assert elapsed < 5, elapsed  # generous for a shared CI machine; the figure in the README is measured


# --- against the real libraries ---------------------------------------------------------------------------------


def test_the_name_table_is_what_the_generator_writes_today() -> None:
    """Regenerating the table from the installed transformers and gguf gives the shipped file (a library bump in
    constraints.txt cannot leave it stale)."""
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_gguf_names.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_transformers_loads_the_gguf_into_the_parameters_lora_lock_predicts(tiny_llama: Path, tmp_path: Path) -> None:
    """The differential check of the name map and the dim order: transformers itself loads the GGUF file."""
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    from lora_lock.compat.base import read_base
    from lora_lock.sources.resolve import resolve

    weights = load_file(str(tiny_llama / "model.safetensors"))
    base = tmp_path / "base"
    base.mkdir()
    write_llama_gguf(base / "tiny.gguf", **TINY, data=weights)
    model = AutoModelForCausalLM.from_pretrained(str(base), gguf_file="tiny.gguf", dtype=torch.float32)
    loaded = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    predicted = {name: info.shape for name, info in read_base(resolve(base)).checkpoint.tensors.items()}
    assert predicted == {name: loaded[name] for name in predicted}
    assert set(loaded) - set(predicted) <= {"model.rotary_emb.inv_freq"}
    # Q8_0 round-trips the values only approximately: the adapter would run on different weights.
    q = model.state_dict()["model.layers.0.self_attn.v_proj.weight"].numpy()
    assert not np.array_equal(q, weights["model.layers.0.self_attn.v_proj.weight"])


@pytest.mark.slow
def test_check_with_a_gguf_base_never_imports_torch(tiny_llama: Path, tiny_llama_adapter: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    base = write_llama_gguf(tmp_path / "tiny.gguf", **TINY, data=load_file(str(tiny_llama / "model.safetensors")))
    code = """
    import json
    from lora_lock._cli import main

    rc = main(["--verbose", "check", sys.argv[1], "--base", sys.argv[2], "--format", "json"])
    print(json.dumps({"rc": rc, "heavy": heavy_loaded()}), file=sys.stderr)
    raise SystemExit(rc)
    """
    result = run_child(code, str(tiny_llama_adapter), str(base))
    assert result.returncode == 1, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert {f["code"] for f in doc["findings"]} >= {"COMPAT-GGUF", "QUANT-FORMAT"}
    assert not [f for f in doc["findings"] if f["code"] in ("COMPAT-SHAPE", "COMPAT-UNMATCHED", "COMPAT-NO-MATCH")]
    assert json.loads(result.stderr.strip().splitlines()[-1]) == {"rc": 1, "heavy": []}
