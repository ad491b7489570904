"""GGUF bases: llama.cpp's weight files, seen as transformers would load them, and why PEFT cannot use them as is.

A base that is a ``.gguf`` file, or a directory whose weights are ``.gguf`` (with or without ``config.json``), is
read from its header alone (:mod:`lora_lock.inspect.gguf`). Its tensors are renamed to the transformers
parameters the architecture's GGUF loader fills (``blk.N.attn_q.weight`` → ``model.layers.N.self_attn.q_proj
.weight``) and given torch's dim order, so the static engine checks the adapter's shapes exactly as for a
safetensors base. The model facts come from ``config.json`` when there is one, else from the GGUF metadata keys
transformers reads (``llama.embedding_length``, ``llama.block_count``, …).

Whatever the shapes say, PEFT adapts a transformers model, never GGUF files: :func:`gguf_findings` says so with
the two ways that work (transformers dequantizes the file first; or llama.cpp serves an adapter converted to GGUF).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Severity
from lora_lock.inspect.checkpoint import Checkpoint
from lora_lock.inspect.gguf import ArrayInfo, GGUFFile, read_gguf
from lora_lock.inspect.gguf_names import MERGED, TRANSPOSED, ArchNames, architecture, known_architectures
from lora_lock.inspect.model_config import _ALIASES, ModelFacts, read_model_facts
from lora_lock.inspect.safetensors_header import TensorInfo
from lora_lock.sources.resolve import Resolved
from lora_lock.text import brief

_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
#: ggml types that hold the values exactly as a float checkpoint would (dequantizing them changes nothing).
_FLOAT_TYPES = frozenset({"F32", "F16", "BF16", "F64"})
_MAX_FACT = 2**40


@dataclass(frozen=True)
class GGUFBase:
    """A GGUF base: its files, architecture, the transformers view of its tensors, and its facts."""

    files: tuple[GGUFFile, ...]
    arch: str
    names: ArchNames | None
    checkpoint: Checkpoint
    facts: ModelFacts
    unmapped: tuple[str, ...]

    def type_counts(self) -> dict[str, int]:
        """Tensors per ggml type over every file of the base, most frequent first (ties by name)."""
        out: dict[str, int] = {}
        for file in self.files:
            for name, count in file.type_counts().items():
                out[name] = out.get(name, 0) + count
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def is_gguf_name(name: str) -> bool:
    """Whether a file name is a GGUF file's (``.gguf``, any case)."""
    return name.lower().endswith(".gguf")


def gguf_files(source: Resolved) -> list[Path] | None:
    """The GGUF weight files of a base, or ``None`` when the base is not a GGUF base.

    A directory is a GGUF base when it has ``.gguf`` files and no safetensors weights (with both, transformers
    loads the safetensors). llama.cpp's vision projectors (``mmproj-*.gguf``) are not the model's weights."""
    root = source.path
    if is_gguf_name(root.name) and not root.is_dir():
        return [root]
    if not root.is_dir():
        return None
    names = _listing(root)
    if source.remote is not None and _remote_safetensors(source, names):
        return None
    if any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names):
        return None
    ggufs = [n for n in names if is_gguf_name(n) and not n.lower().startswith("mmproj")]
    if not ggufs:
        return None
    if len(ggufs) > 1 and not _one_split_set(ggufs):
        shown = ", ".join(ggufs[:6]) + (", …" if len(ggufs) > 6 else "")
        raise InputError(
            f"{root}: {len(ggufs)} GGUF files ({shown}), so which one is the base is ambiguous",
            hint=f"name the file you serve: --base {root / ggufs[0]}",
        )
    fence = (source.contain or root).resolve()
    return [_contained(root / name, fence) for name in ggufs]


def _listing(root: Path) -> list[str]:
    """The directory's entry names, sorted."""
    try:
        return sorted(p.name for p in root.iterdir())
    except OSError as exc:
        raise InputError(f"{root}: cannot list the directory: {exc.strerror or exc}") from exc


def _remote_safetensors(source: Resolved, names: list[str]) -> bool:
    """Whether a Hub base has safetensors weights (here or not yet downloaded); a Hub base whose weights are GGUF
    files not downloaded is refused, since only local GGUF headers are read."""
    assert source.remote is not None
    local = set(names)
    remote = sorted(n for n in source.remote.names if "/" not in n and n not in local)
    if any(n.endswith(".safetensors") for n in [*names, *remote]):
        return True
    if any(is_gguf_name(n) for n in remote):
        raise InputError(
            f"{source.label}: the base's weights are GGUF files on the Hub "
            f"({', '.join(n for n in remote if is_gguf_name(n))[:200]}); lora-lock reads GGUF headers from "
            "local files only",
            hint=f"download the one you serve (hf download {source.repo_id} FILE.gguf) and pass --base FILE.gguf",
        )
    return False


def _contained(path: Path, fence: Path) -> Path:
    """``path``, refused when it is a symlink that is broken, loops, or points outside ``fence``."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise InputError(f"{path}: broken or looping symlink ({exc})") from exc
        if not target.is_relative_to(fence):
            raise InputError(
                f"{path}: symlink points outside the base directory {fence} (to {target})",
                hint="copy the file into the directory, or pass the file itself as --base",
            )
    return path


def _one_split_set(names: list[str]) -> bool:
    """``model-00001-of-00003.gguf`` … ``model-00003-of-00003.gguf``: one model in shards (llama.cpp gguf-split)."""
    matches = [_SPLIT.match(n) for n in names]
    if not all(matches):
        return False
    keys = {(m["stem"], m["count"]) for m in matches if m}
    numbers = sorted(int(m["no"]) for m in matches if m)
    return len(keys) == 1 and numbers == list(range(1, int(next(iter(keys))[1]) + 1))


def read_gguf_base(source: Resolved, paths: list[Path]) -> GGUFBase:
    """Read every file's header and map its tensors to the transformers parameters they load into."""
    files = tuple(read_gguf(p) for p in paths)
    first = files[0]
    arch = first.metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise InputError(
            f"{first.path}: metadata key `general.architecture` is missing or not a string, found {brief(arch)}",
            hint="every GGUF model file names its architecture; the file is corrupt or not a model",
        )
    for other in files[1:]:
        if other.metadata.get("general.architecture", arch) != arch:
            raise InputError(f"{other.path}: `general.architecture` differs from {first.path.name}'s {arch!r}")
    names = architecture(arch)
    tensors: dict[str, TensorInfo] = {}
    unmapped: list[str] = []
    seen: dict[str, Path] = {}
    for file in files:
        for info in file.tensors.values():
            if info.name in seen:
                raise InputError(f"{file.path}: tensor {info.name!r} also appears in {seen[info.name]}")
            seen[info.name] = file.path
            mapped = names.map_name(info.name) if names is not None else None
            if mapped is None:
                unmapped.append(info.name)
                continue
            hf_name, layout = mapped
            if layout == MERGED and hf_name.endswith(".weight"):
                continue  # reshaped on load (Mamba's conv): its stored dims are not the parameter's
            shape = info.dims if layout == TRANSPOSED else info.shape
            tensors.setdefault(
                hf_name,
                TensorInfo(hf_name, info.type_name, shape, file.path.name, info.offset, info.offset + info.nbytes),
            )
    root = source.path if source.path.is_dir() else source.path.parent
    checkpoint = Checkpoint(root=root, files=tuple(f.path.name for f in files), tensors=tensors, headers=())
    config = root / "config.json"
    if source.path.is_dir() and config.is_file():
        facts = read_model_facts(config)
    else:
        facts = metadata_facts(first, arch, names, tensors_named=seen)
    return GGUFBase(files, arch, names, checkpoint, facts, tuple(unmapped))


def metadata_facts(file: GGUFFile, arch: str, names: ArchNames | None, tensors_named: dict[str, Path]) -> ModelFacts:
    """The model facts transformers' GGUF loader derives from the metadata (config attribute ← ``{arch}.{key}``),
    read through the same aliases as a ``config.json``."""
    config: dict[str, int] = {}
    tokens = file.metadata.get("tokenizer.ggml.tokens")
    token_count = tokens.count if isinstance(tokens, ArrayInfo) else len(tokens) if isinstance(tokens, list) else None
    for attr, sub in (names.config if names is not None else {}).items():
        key = f"{arch}.{sub}"
        value: Any = token_count if sub == "@tokenizer.ggml.tokens" else file.metadata.get(key)
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            value = max(value)  # per-layer counts (LFM2's KV heads): transformers takes the largest
        if value is None or isinstance(value, ArrayInfo):
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_FACT:
            config[attr] = value
        elif attr in {a for aliases in _ALIASES.values() for a in aliases}:
            raise InputError(
                f"{file.path}: metadata key `{key}` must be an integer from 0 to 2**40, found {brief(value)}"
            )
    if "vocab_size" not in config and token_count is not None:
        config["vocab_size"] = token_count  # what transformers does when the file has no vocab_size key

    def pick(fact: str) -> int | None:
        return next((config[k] for k in _ALIASES[fact] if k in config), None)

    heads = pick("num_attention_heads")
    hidden = pick("hidden_size")
    head_dim = pick("head_dim")
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    kv_heads = pick("num_key_value_heads")
    tie = "output.weight" not in tensors_named or (names is not None and names.tie_always)
    return ModelFacts(
        architecture=names.model_class if names is not None else None,
        model_type=names.model_type if names is not None else None,
        hidden_size=hidden,
        intermediate_size=pick("intermediate_size"),
        num_hidden_layers=pick("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads if kv_heads is not None else heads,
        head_dim=head_dim,
        vocab_size=pick("vocab_size"),
        tie_word_embeddings=tie,
        dtype=None,
        quantization=None,
    )


def gguf_findings(base: GGUFBase) -> list[Finding]:
    """The GGUF base's own findings: its format and quant types, and why PEFT cannot apply an adapter to it."""
    counts = base.type_counts()
    listed = ", ".join(f"{name} ×{n}" for name, n in counts.items())
    label = base.files[0].path.name + (f" (+{len(base.files) - 1} split files)" if len(base.files) > 1 else "")
    quantized = [t for t in counts if t not in _FLOAT_TYPES]
    findings = [
        Finding(
            "QUANT-FORMAT",
            Category.QUANTIZATION,
            Severity.INFO,
            f"the base is GGUF (llama.cpp's format, version {base.files[0].version}, architecture `{base.arch}`): "
            f"{listed}",
            subject=label,
            actual="gguf(" + ",".join(f"{name}={n}" for name, n in sorted(counts.items())) + ")",
        )
    ]
    if quantized:
        weights = (
            f"the {'/'.join(quantized)} weights are then dequantized values, not the bf16/fp16 base the adapter was "
            "trained on"
        )
    else:
        weights = f"the weights are stored unquantized ({'/'.join(counts)}), so they load unchanged"
    if base.names is None:
        route = (
            f"transformers cannot load GGUF architecture `{base.arch}` at all (it loads "
            f"{', '.join(known_architectures())}), so only llama.cpp can serve this base: convert the adapter "
            "with llama.cpp's convert_lora_to_gguf.py and pass it to llama-server --lora. The adapter's shapes "
            "were not checked: lora-lock knows no transformers names for this architecture's tensors"
        )
    else:
        gguf_file = base.files[0].path.name
        route = (
            f"either transformers dequantizes the file first (from_pretrained(..., gguf_file={gguf_file!r}), "
            f"which needs the `gguf` package; {weights}), and PEFT then applies the adapter to that model; or "
            "llama.cpp serves the base with the adapter converted to GGUF (llama.cpp's convert_lora_to_gguf.py, "
            "then llama-server --lora)"
        )
    extra = ""
    if base.unmapped and base.names is not None:
        shown = ", ".join(sorted({_template(n) for n in base.unmapped})[:5])
        extra = f"; {len(base.unmapped)} GGUF tensor(s) load into no transformers parameter and are ignored ({shown})"
    findings.append(
        Finding(
            "COMPAT-GGUF",
            Category.COMPAT,
            Severity.ERROR,
            f"PEFT cannot apply the adapter to {label} as it is: PEFT adapts a transformers model, and this base is "
            f"llama.cpp GGUF weights. Two ways work: {route}{extra}",
            subject=label,
            expected="a transformers checkpoint (safetensors), or the adapter converted to GGUF for llama.cpp",
            actual=f"gguf ({base.arch}; {', '.join(counts)})",
            hint="to check the fit itself, point --base at the safetensors base the GGUF file was converted from",
        )
    )
    return findings


_NUM = re.compile(r"\.\d+\.")


def _template(name: str) -> str:
    return _NUM.sub(".N.", name)
