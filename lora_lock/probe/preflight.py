"""What the probe refuses before transformers or PEFT touch a file: checks on the files and configs alone.

- **No pickle, ever.** transformers and PEFT fall back to ``torch.load`` of ``pytorch_model.bin`` /
  ``adapter_model.bin`` when no safetensors file is there; only torch's ``weights_only`` unpickler then stands
  between a crafted file and code execution. The probe loads safetensors weights only and refuses before loading.
- **No code from the Hub.** An ``attn_implementation`` naming a Hub repo (``kernels-community/flash-attn``) makes
  transformers download and run a kernel.
- **Bounded, base-preserving initialisation.** Loading a saved LoRA runs its ``init_lora_weights`` method again
  (``LoraLayer.update_layer``). PiSSA and OLoRA decompose every targeted base weight and *rewrite* it (the
  residual); LoftQ quantizes it; CorDA needs a preprocessing cache a saved adapter does not have. Such an adapter
  changes the base for any adapter loaded beside it, so it gets a model load of its own
  (:func:`rewrites_base`), and the methods whose work is unbounded or unavailable at load are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError, brief
from lora_lock.inspect.jsonfile import read_json_object

SAFE_BASE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
SAFE_ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Weight files transformers, PEFT or torch would unpickle.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

#: ``init_lora_weights`` values that leave the base untouched when a saved adapter loads (PEFT 0.21
#: ``LoraLayer.update_layer``; it lower-cases some names and not others): the LoRA weights they make are then
#: overwritten by the saved ones.
_KEEPS_BASE = frozenset({"eva", "orthogonal", "lora_ga"})
_KEEPS_BASE_ANY_CASE = frozenset({"gaussian", "mica"})
#: ``pissa_niter_N`` runs N power iterations per targeted module: bounded here.
MAX_PISSA_NITER = 64
_NITER = re.compile(r"pissa_niter_(\d{1,12})")
_REFUSED_INIT = {
    "loftq": "LoftQ quantizes every targeted base weight again at load (it needs scipy and a quantization "
    "backend, and its iteration count comes from the file)",
    "corda": "CorDA needs the covariance cache of preprocess_corda, which a saved adapter does not carry",
}
_CONVERT = (
    "convert it to a plain LoRA once, as PEFT documents (save_pretrained(..., "
    "path_initial_model_for_weight_conversion=...)), or lock it with --no-probe"
)


def refuse_unsafe_load(base_dir: Path, adapters: Sequence[tuple[str, Path]]) -> None:
    """Raise an :class:`InputError` for anything the probe must not let the libraries load or run."""
    _base_weights(base_dir)
    _base_config(base_dir)
    for name, path in adapters:
        _adapter_weights(name, path)
        rewrites_base(name, path)  # refuses what it cannot run


def _pickles(root: Path) -> list[str]:
    try:
        return sorted(p.name for p in root.iterdir() if p.name.lower().endswith(PICKLE_SUFFIXES) and p.is_file())
    except OSError:
        return []


def _base_weights(base_dir: Path) -> None:
    if any((base_dir / name).is_file() for name in SAFE_BASE_WEIGHTS):
        return
    pickles = _pickles(base_dir)
    if pickles:
        raise InputError(
            f"{base_dir}: the base has pickle weights only ({', '.join(pickles[:3])}); the probe loads safetensors "
            "weights only and never lets transformers unpickle a file",
            hint="convert the weights once in a trusted environment (save_pretrained(..., safe_serialization=True))",
            code="INPUT-PICKLE",
        )
    raise InputError(
        f"{base_dir}: no safetensors weights ({' or '.join(SAFE_BASE_WEIGHTS)}) for the probe to load",
        hint="see the base findings; the probe needs the locked weights on disk",
    )


def _adapter_weights(name: str, path: Path) -> None:
    if (path / SAFE_ADAPTER_WEIGHTS).is_file():
        return
    pickles = _pickles(path)
    raise InputError(
        f"adapter {name}: {path} has no {SAFE_ADAPTER_WEIGHTS}"
        + (f", only pickle weights ({', '.join(pickles[:3])}), which the probe never loads" if pickles else ""),
        hint="convert it once in a trusted environment: PeftModel.from_pretrained(base, path)"
        ".save_pretrained(path, safe_serialization=True)",
        code="INPUT-PICKLE" if pickles else "INPUT-UNUSABLE",
    )


def _configs(doc: Mapping[str, Any], where: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The config and its nested sub-configs (``text_config``, ``vision_config``…), with their field paths."""
    yield where, doc
    for key, value in doc.items():
        if isinstance(value, Mapping) and key.endswith("_config") and key != "quantization_config":
            yield from _configs(value, f"{where}{key}.")


def _base_config(base_dir: Path) -> None:
    import torch

    path = base_dir / "config.json"
    doc = read_json_object(path)
    for where, config in _configs(doc):
        for key in ("attn_implementation", "_attn_implementation", "_attn_implementation_internal"):
            value = config.get(key)
            if isinstance(value, str) and ("/" in value or ":" in value):
                raise InputError(
                    f"{path}: field `{where}{key}` is {brief(value)}, a kernel from the Hub; transformers would "
                    "download and run its code, which lora-lock never allows",
                    hint="use a built-in attention implementation (eager, sdpa, flash_attention_2)",
                    code="INPUT-HUB-KERNEL",
                )
        for key in ("dtype", "torch_dtype"):
            value = config.get(key)
            if value is None or value == "auto":
                continue
            if not isinstance(value, str) or not isinstance(getattr(torch, value, None), torch.dtype):
                raise InputError(
                    f"{path}: field `{where}{key}` must be a torch dtype name such as 'bfloat16', found {brief(value)}"
                )


def init_method(name: str, path: Path) -> str | bool:
    """The adapter's ``init_lora_weights`` (True when absent), or an InputError when it is no value PEFT knows."""
    config = read_json_object(path / "adapter_config.json")
    value = config.get("init_lora_weights", True)
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise InputError(
            f"{path / 'adapter_config.json'}: field `init_lora_weights` must be true, false or a method name, "
            f"found {brief(value)}",
            code="INPUT-INIT",
        )
    return value


def rewrites_base(name: str, path: Path) -> bool:
    """Whether loading the saved adapter rewrites the base weights it targets (PiSSA, OLoRA): it then needs a
    model load of its own. Raises for the methods the probe refuses (unbounded, unavailable or unknown)."""
    value = init_method(name, path)
    if isinstance(value, bool):
        return False
    where = f"{path / 'adapter_config.json'}: field `init_lora_weights`"
    lowered = value.lower()
    if value in _KEEPS_BASE or lowered in _KEEPS_BASE_ANY_CASE:
        return False
    if value == "pissa" or lowered == "olora":  # a full SVD / QR of each targeted weight, then its residual
        return True
    niter = _NITER.fullmatch(value)
    if niter:
        if int(niter.group(1)) <= MAX_PISSA_NITER:
            return True
        raise InputError(
            f"{where} is {brief(value)}: PEFT would run {niter.group(1)} power iterations on every targeted base "
            f"weight at load; the probe allows up to {MAX_PISSA_NITER}",
            hint=_CONVERT,
            code="INPUT-INIT",
        )
    if value in _REFUSED_INIT:
        raise InputError(f"{where} is {brief(value)}: {_REFUSED_INIT[value]}", hint=_CONVERT, code="INPUT-INIT")
    raise InputError(
        f"{where} is {brief(value)}, which PEFT does not know (true, false, gaussian, pissa, pissa_niter_N, olora, "
        "eva, orthogonal, lora_ga, mica, loftq, corda)",
        code="INPUT-INIT",
    )
