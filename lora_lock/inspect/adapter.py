"""A PEFT adapter directory: ``adapter_config.json`` plus the header of ``adapter_model.safetensors``.

Every field PEFT writes is read with its type checked; fields we do not know are kept in ``raw`` and tolerated
(PEFT adds fields often). ``target_modules`` is saved from a Python set, so its order varies between runs: we
hold it as a sorted tuple and compare it as a set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_lock import userregex
from lora_lock.errors import InputError
from lora_lock.inspect.checkpoint import Remote, read_json
from lora_lock.inspect.safetensors_header import Header, read_header
from lora_lock.text import brief

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"

#: PEFT types whose tensors lora-lock can map onto a base (LoRA and its variants: DoRA, rsLoRA, AdaLoRA).
SUPPORTED_PEFT_TYPES = ("LORA", "ADALORA")

#: Fields of PEFT's old (< 0.3) format that current PEFT ignores.
LEGACY_FIELDS = ("enable_lora", "merge_weights")


@dataclass(frozen=True)
class AdapterConfig:
    """The fields of ``adapter_config.json`` that decide which base modules an adapter touches and how."""

    path: Path
    peft_type: str
    task_type: str | None
    base_model_name_or_path: str | None
    revision: str | None
    r: int
    lora_alpha: float
    target_modules: tuple[str, ...] | str | None
    exclude_modules: tuple[str, ...] | str | None
    modules_to_save: tuple[str, ...]
    fan_in_fan_out: bool
    bias: str
    use_rslora: bool
    use_dora: bool
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]
    layers_to_transform: tuple[int, ...] | None
    layers_pattern: tuple[str, ...] | None
    lora_bias: bool
    peft_version: str | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def legacy_fields(self) -> tuple[str, ...]:
        """The fields of old PEFT configs this config sets (non-null), in :data:`LEGACY_FIELDS` order."""
        return tuple(k for k in LEGACY_FIELDS if self.raw.get(k) is not None)

    def settings(self) -> dict[str, Any]:
        """The PEFT settings a lock records (canonical: sets sorted, ``None`` left out)."""
        out: dict[str, Any] = {
            "peft_type": self.peft_type,
            "task_type": self.task_type,
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "target_modules": list(self.target_modules)
            if isinstance(self.target_modules, tuple)
            else self.target_modules,
            "exclude_modules": list(self.exclude_modules)
            if isinstance(self.exclude_modules, tuple)
            else self.exclude_modules,
            "modules_to_save": list(self.modules_to_save),
            "fan_in_fan_out": self.fan_in_fan_out,
            "bias": self.bias,
            "use_rslora": self.use_rslora,
            "use_dora": self.use_dora,
            "lora_bias": self.lora_bias,
            "rank_pattern": dict(sorted(self.rank_pattern.items())),
            "alpha_pattern": dict(sorted(self.alpha_pattern.items())),
            "layers_to_transform": list(self.layers_to_transform) if self.layers_to_transform is not None else None,
            "layers_pattern": list(self.layers_pattern) if self.layers_pattern is not None else None,
        }
        return {k: v for k, v in out.items() if v is not None and v != {}}


class _Reader:
    """Typed field access that names the file, the field, the expected and the found type."""

    def __init__(self, path: Path, doc: Mapping[str, Any]) -> None:
        self.path = path
        self.doc = doc

    def fail(self, key: str, expected: str) -> InputError:
        value = self.doc.get(key)
        return InputError(f"{self.path}: field `{key}` must be {expected}, found {type(value).__name__} {brief(value)}")

    def opt_str(self, key: str) -> str | None:
        value = self.doc.get(key)
        if value is None or isinstance(value, str):
            return value
        raise self.fail(key, "a string or null")

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.doc.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        raise self.fail(key, "true or false")

    def number(self, key: str, default: float | None = None) -> float:
        value = self.doc.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**53:
            return value  # beyond 2**53 an int is no longer exactly a float (and a lock holds 64-bit integers)
        if isinstance(value, float) and math.isfinite(value):
            return value
        raise self.fail(key, "a number")

    def names(self, key: str, allow_regex: bool) -> tuple[str, ...] | str | None:
        value = self.doc.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            if allow_regex:
                return value
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(sorted(set(value)))
        raise self.fail(key, "a list of module names" + (" or a regex string" if allow_regex else ""))

    def name_list(self, key: str) -> tuple[str, ...] | None:
        """A field of module or layer names where a string is one name, not a regex."""
        value = self.names(key, allow_regex=False)
        assert not isinstance(value, str)
        return value

    def int_list(self, key: str) -> tuple[int, ...] | None:
        value = self.doc.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise self.fail(key, "an integer or a list of integers")

    def pattern(self, key: str, kind: type) -> dict[str, Any]:
        value = self.doc.get(key) or {}
        if not isinstance(value, dict):
            raise self.fail(key, "an object mapping module patterns to numbers")
        out: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue  # AdaLoRA stores per-module masks here; they are not a rank override
            if abs(v) > 2**31 if isinstance(v, int) else not math.isfinite(v) or abs(v) > 2**31:
                raise InputError(
                    f"{self.path}: field `{key}.{k}` must be a finite number of sane size, found {brief(v)}"
                )
            userregex.compile_user(rf"(.*\.)?({k})$", f"{self.path}: field `{key}`")
            out[str(k)] = kind(v)
        return out


def read_adapter_config(path: Path) -> AdapterConfig:
    """Read and type-check ``adapter_config.json``."""
    doc = read_json(path, "adapter-config")
    rd = _Reader(path, doc)
    peft_type = _peft_type(path, doc)
    r_value = _rank(rd, peft_type)
    modules_to_save = rd.name_list("modules_to_save")
    layers_pattern = rd.name_list("layers_pattern")
    bias = doc.get("bias", "none")
    if bias not in ("none", "all", "lora_only"):
        raise rd.fail("bias", "one of 'none', 'all', 'lora_only'")
    target_modules = rd.names("target_modules", allow_regex=True)
    if isinstance(target_modules, str) and target_modules.lower() == "all-linear":
        target_modules = "all-linear"  # PEFT compares the shorthand case-insensitively
    exclude_modules = rd.names("exclude_modules", allow_regex=True)
    _compile_patterns(path, target_modules, exclude_modules, layers_pattern)
    return AdapterConfig(
        path=path,
        peft_type=peft_type,
        task_type=rd.opt_str("task_type"),
        base_model_name_or_path=rd.opt_str("base_model_name_or_path"),
        revision=rd.opt_str("revision"),
        r=r_value,
        lora_alpha=rd.number("lora_alpha", 8),
        target_modules=target_modules,
        exclude_modules=exclude_modules,
        modules_to_save=modules_to_save or (),
        fan_in_fan_out=rd.flag("fan_in_fan_out"),
        bias=bias,
        use_rslora=rd.flag("use_rslora"),
        use_dora=rd.flag("use_dora"),
        rank_pattern=rd.pattern("rank_pattern", int),
        alpha_pattern=rd.pattern("alpha_pattern", float),
        layers_to_transform=rd.int_list("layers_to_transform"),
        layers_pattern=layers_pattern,
        lora_bias=rd.flag("lora_bias"),
        peft_version=rd.opt_str("peft_version"),
        raw=doc,
    )


def _peft_type(path: Path, doc: Mapping[str, Any]) -> str:
    """The config's ``peft_type``, upper-cased, refused unless lora-lock can map its tensors onto a base."""
    peft_type = doc.get("peft_type")
    if not isinstance(peft_type, str):
        raise InputError(
            f"{path}: field `peft_type` is missing or not a string; this does not look like a PEFT adapter config",
            hint="MLX, JAX and hand-written adapter configs share the file name but not the format",
        )
    peft_type = peft_type.upper()
    if peft_type == "NONE":
        raise InputError(
            f"{path}: peft_type 'none' is not a PEFT adapter type: the file describes no adapter PEFT can load",
            hint="point at an adapter saved with PeftModel.save_pretrained() (peft_type LORA or ADALORA)",
        )
    if peft_type not in SUPPORTED_PEFT_TYPES:
        raise InputError(
            f"{path}: peft_type {peft_type!r} is not supported; lora-lock supports {', '.join(SUPPORTED_PEFT_TYPES)}"
            " (LoRA with DoRA / rsLoRA variants, AdaLoRA)",
        )
    return peft_type


def _rank(rd: _Reader, peft_type: str) -> int:
    """The rank the adapter's tensors were created with: AdaLoRA's ``init_r`` (it prunes down from it), else ``r``."""
    r_value = rd.doc.get("r", 8)
    if peft_type == "ADALORA" and isinstance(rd.doc.get("init_r"), int):
        r_value = rd.doc["init_r"]
    if not isinstance(r_value, int) or isinstance(r_value, bool) or r_value <= 0:
        raise rd.fail("r", "a positive integer")
    return r_value


def _compile_patterns(
    path: Path,
    target_modules: tuple[str, ...] | str | None,
    exclude_modules: tuple[str, ...] | str | None,
    layers_pattern: tuple[str, ...] | None,
) -> None:
    """Compile every user regex of the config once, so a hostile pattern is refused here, by name and field."""
    for field_name, value in (("target_modules", target_modules), ("exclude_modules", exclude_modules)):
        if isinstance(value, str):
            userregex.compile_user(value, f"{path}: field `{field_name}`")
    for pattern in layers_pattern or ():
        userregex.compile_user(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", f"{path}: field `layers_pattern`")


@dataclass(frozen=True)
class Adapter:
    """An adapter directory: its config and the header of its weights (no tensor data read)."""

    root: Path
    config: AdapterConfig
    weights: Header | None  # None: a config-only adapter (no weights file at all)


def read_adapter(root: Path, *, require_weights: bool = True, remote: Remote | None = None) -> Adapter:
    """Read an adapter directory, refusing pickle-only adapters (lora-lock never unpickles)."""
    if not root.is_dir():
        raise InputError(f"{root}: adapter directory not found")
    config_path = root / CONFIG_NAME
    if not config_path.is_file():
        raise InputError(
            f"{root}: not a PEFT adapter directory: it has no {CONFIG_NAME}",
            hint="point at the folder written by PeftModel.save_pretrained()",
        )
    config = read_adapter_config(config_path)
    weights_path = root / WEIGHTS_NAME
    if not weights_path.is_file() and remote is not None and WEIGHTS_NAME in remote.names:
        return Adapter(root=root, config=config, weights=remote.header(WEIGHTS_NAME))
    if not weights_path.is_file():
        if (root / PICKLE_WEIGHTS_NAME).is_file():
            raise InputError(
                f"{root}: the adapter has only pickle weights ({PICKLE_WEIGHTS_NAME}); lora-lock never unpickles files",
                hint="convert it once in a trusted environment: PeftModel.from_pretrained(base, path)"
                ".save_pretrained(path, safe_serialization=True)",
            )
        if require_weights:
            raise InputError(
                f"{root}: no {WEIGHTS_NAME} found next to {CONFIG_NAME}",
                hint="save the adapter with PeftModel.save_pretrained(); it writes both files",
            )
        return Adapter(root=root, config=config, weights=None)
    return Adapter(root=root, config=config, weights=read_header(weights_path, WEIGHTS_NAME))
