"""One harness per reader of untrusted input: ``harness(data: bytes) -> None``.

A harness writes ``data`` where the reader expects its file (or passes it directly), calls the reader and returns
when the reader returned a result or raised :class:`~lora_lock.errors.InputError`. Any other exception escapes:
that is a contract violation (a crash). A call that runs longer than :data:`DEFAULT_BUDGET` seconds raises
:class:`HarnessTimeout` (a hang is a crash too).

The same functions serve hypothesis (``tests/fuzz/test_fuzz.py``, ``fuzz/hypothesis_main.py``) and atheris
(``fuzz/atheris_main.py``), so a crash found by one engine replays in the other and in a plain pytest test.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import struct
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

from lora_lock.compat import is_targeted, rank_for
from lora_lock.errors import InputError
from lora_lock.inspect.adapter import CONFIG_NAME, read_adapter_config
from lora_lock.inspect.checkpoint import INDEX_NAMES, read_checkpoint
from lora_lock.inspect.model_config import read_model_facts
from lora_lock.inspect.safetensors_header import parse_header, read_header
from lora_lock.inspect.tokenizer import read_tokenizer_facts
from lora_lock.lock import io as lockfile
from lora_lock.probe.golden import read_golden, score_generation

T = TypeVar("T")

#: Seconds one harness call may take before it counts as a hang. Generous: a healthy call takes microseconds.
DEFAULT_BUDGET = float(os.environ.get("LORA_LOCK_FUZZ_BUDGET", "2.0"))

#: Module names (model namespace) the adapter harness matches a parsed config against, as ``check`` does.
#: The last one is a name a hostile base checkpoint could carry (a layer index of 5000 digits).
TARGET_KEYS: tuple[str, ...] = (
    "model.layers.0.self_attn.q_proj",
    "model.layers.11.mlp.down_proj",
    "model.embed_tokens",
    "lm_head",
    "transformer.h.3.attn.c_attn",
    "base_model.model.model.layers.31.self_attn.v_proj",
    "model.layers." + "7" * 5000 + ".mlp.up_proj",
)

#: The model output the golden harness scores every parsed item against.
GOLDEN_OUTPUT = "The answer is 42.\nQ: next"

#: Separator between the files of the tokenizer harness: tokenizer_config.json, chat_template.jinja, tokenizer.json.
TOKENIZER_SEPARATOR = b"\n--8<--\n"


class HarnessTimeout(BaseException):  # a BaseException: a reader's `except Exception` cannot swallow it
    """A harness call ran past its time budget (a hang: catastrophic regex backtracking, quadratic parsing...)."""


@contextlib.contextmanager
def time_budget(seconds: float | None = None) -> Iterator[None]:
    """Raise :class:`HarnessTimeout` in the block after ``seconds`` (main thread only; otherwise no limit).

    CPython's regex engine and bytecode loop both check for signals, so SIGALRM interrupts a backtracking match.
    """
    budget = DEFAULT_BUDGET if seconds is None else seconds
    if budget <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise HarnessTimeout(f"harness call ran longer than {budget} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Workspace:
    """A private temp directory whose files the harnesses overwrite on every call (one per process)."""

    def __init__(self) -> None:
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="lora-lock-fuzz-"))
        return self._root

    def directory(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def write(self, directory: str, name: str, data: bytes) -> Path:
        path = self.directory(directory) / name
        path.write_bytes(data)
        return path


WORKSPACE = Workspace()


def _contract(call: Callable[[], T]) -> T | None:
    """Run a reader: its result, or None when it refused the input with an InputError (the allowed outcome)."""
    try:
        return call()
    except InputError:
        return None


# --- the harnesses ------------------------------------------------------------------------------------------------


def split_sized(data: bytes) -> tuple[int, bytes]:
    """``parse_header`` harness input: a little-endian u32 data-section length, then the raw header JSON."""
    if len(data) < 4:
        return 0, data
    (data_len,) = struct.unpack("<I", data[:4])
    return data_len, data[4:]


def sized(data_len: int, raw: bytes) -> bytes:
    """Inverse of :func:`split_sized`."""
    return struct.pack("<I", data_len) + raw


def safetensors_parse(data: bytes) -> None:
    """``parse_header(path, raw, file_size)`` on raw header JSON bytes, with a data section of a given length."""
    data_len, raw = split_sized(data)
    path = WORKSPACE.root / "model.safetensors"
    with time_budget():
        _contract(lambda: parse_header(path, raw, 8 + len(raw) + data_len))


def safetensors_file(data: bytes) -> None:
    """``read_header(path)`` on a whole file (8-byte length prefix, header, data), then one ``read_data``."""
    path = WORKSPACE.write("st", "model.safetensors", data)
    with time_budget():
        header = _contract(lambda: read_header(path, "model.safetensors"))
        if header is not None and header.read_data is not None:
            for info in list(header.tensors.values())[:1]:
                header.read_data(info.begin, min(info.end - info.begin, 64))


def model_config(data: bytes) -> None:
    """``read_model_facts(config.json)``, then the facts a lock records."""
    path = WORKSPACE.write("base", "config.json", data)
    with time_budget():
        facts = _contract(lambda: read_model_facts(path))
        if facts is not None:
            facts.identity()
            if facts.quantization is not None:
                facts.quantization.describe()


def adapter_config(data: bytes) -> None:
    """``read_adapter_config(adapter_config.json)``; an accepted config must then match module names in bounded
    time without raising (``is_targeted`` / ``rank_for`` compile the config's regexes, as ``check`` does)."""
    path = WORKSPACE.write("adapter", CONFIG_NAME, data)
    with time_budget():
        config = _contract(lambda: read_adapter_config(path))
        if config is not None:
            config.settings()
            for key in TARGET_KEYS:
                _contract(functools.partial(is_targeted, config, key))
                _contract(functools.partial(rank_for, config, key))


#: The two valid shards next to the fuzzed index (tensor "a" in the first, "b" in the second).
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def _checkpoint_root() -> Path:
    root = WORKSPACE.directory("ckpt")
    if not (root / SHARDS[1]).exists():
        from fuzz.seeds import safetensors_file as build

        (root / SHARDS[0]).write_bytes(build({"a": ("F32", [2, 2])}))
        (root / SHARDS[1]).write_bytes(build({"b": ("F16", [3])}))
    return root


def checkpoint_index(data: bytes) -> None:
    """``read_checkpoint(root)`` on a directory with two valid shards and a fuzzed ``model.safetensors.index.json``."""
    root = _checkpoint_root()
    (root / INDEX_NAMES[0]).write_bytes(data)
    with time_budget():
        _contract(lambda: read_checkpoint(root))


def lock(data: bytes) -> None:
    """``lockfile.read(lora.lock)``: TOML parse, lock-version policy, JSON Schema."""
    path = WORKSPACE.write("lock", lockfile.DEFAULT_NAME, data)
    with time_budget():
        _contract(lambda: lockfile.read(path))


def golden(data: bytes) -> None:
    """``read_golden(golden.jsonl)``; every accepted item must then score an output without raising."""
    path = WORKSPACE.write("golden", "golden.jsonl", data)
    with time_budget():
        result = _contract(lambda: read_golden(path))
        if result is not None:
            for item in result[0]:
                if item.kind == "generation":
                    score_generation(item, GOLDEN_OUTPUT)


def tokenizer(data: bytes) -> None:
    """``read_tokenizer_facts(root)`` on tokenizer_config.json / chat_template.jinja / tokenizer.json cut from
    ``data`` at :data:`TOKENIZER_SEPARATOR` (a missing part is a missing file)."""
    root = WORKSPACE.directory("tok")
    parts = data.split(TOKENIZER_SEPARATOR, 2)
    for name, part in zip(
        ("tokenizer_config.json", "chat_template.jinja", "tokenizer.json"), [*parts, None, None], strict=False
    ):
        target = root / name
        if part is None:
            target.unlink(missing_ok=True)
        else:
            target.write_bytes(part)
    with time_budget():
        _contract(lambda: read_tokenizer_facts(root))


@dataclass(frozen=True)
class Spec:
    name: str
    run: Callable[[bytes], None]
    reader: str


HARNESSES: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        Spec("safetensors_parse", safetensors_parse, "inspect.safetensors_header.parse_header"),
        Spec("safetensors_file", safetensors_file, "inspect.safetensors_header.read_header"),
        Spec("model_config", model_config, "inspect.model_config.read_model_facts"),
        Spec("adapter_config", adapter_config, "inspect.adapter.read_adapter_config + compat.is_targeted"),
        Spec("checkpoint_index", checkpoint_index, "inspect.checkpoint.read_checkpoint (sharded)"),
        Spec("lock", lock, "lockfile.read"),
        Spec("golden", golden, "probe.golden.read_golden + score_generation"),
        Spec("tokenizer", tokenizer, "inspect.tokenizer.read_tokenizer_facts"),
    )
}


# --- crash bookkeeping --------------------------------------------------------------------------------------------


def signature(exc: BaseException) -> str:
    """A stable name for a crash: exception type, innermost lora_lock frame, innermost frame overall."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/lora_lock/" in f.filename]
    inner = frames[-1] if frames else None

    def where(frame: traceback.FrameSummary | None) -> str:
        if frame is None:
            return "?"
        name = frame.filename
        for marker in ("/lora_lock/", "/site-packages/"):
            if marker in name:
                name = name.split(marker, 1)[1]
                break
        else:
            name = re.sub(r"^.*/lib/python3\.\d+/", "", name)
        return f"{name}:{frame.lineno}:{frame.name}"

    return f"{type(exc).__name__} @ {where(ours[-1] if ours else None)} <- {where(inner)}"
