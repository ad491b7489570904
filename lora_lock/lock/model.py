"""``lora.lock`` as frozen, typed records: the lock, each of its sections and their rows.

The schema stays the gate for untrusted input: ``Lock.from_toml`` and ``Lock.from_dict`` validate with the lock
schema first (the same ``LockfileError`` as ``lockfile.read``), then build the records, which cannot fail on a
schema-valid document. The records round-trip exactly: ``Lock.from_toml(t).to_toml() == t`` for every canonical
lock ``lockfile.dumps`` writes, and ``Lock.from_toml(m.to_toml()) == m``. To keep that promise:

- an optional field is ``None`` when its key is absent, and an empty table or array stays empty;
- fields the schema leaves open (``[hashing]``, ``[probe]``, ``[golden]`` and their rows, an adapter's
  ``settings``) keep their unknown keys in ``extra``, as read;
- values are kept as parsed: JSON Schema counts an integral float as an integer, so a hand-edited
  ``size = 714.0`` stays the float it is (compare numbers with ``==``).

Each field names its TOML key in its metadata; ``Record`` reads and writes every section through them.
"""

# ruff: noqa: RUF009  (each field's default is the dataclasses.field() spelling its TOML key, made once per class)

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, cast

from lora_lock.hashing import Digest
from lora_lock.lock import io as lockfile
from lora_lock.lock.values import FileSet, FrozenMap, Value, freeze, frozen_map, thaw

R = TypeVar("R", bound="Record")


@dataclass(frozen=True, slots=True)
class _Key:
    """How one field is spelled in the lock and converted on the way in and out."""

    name: str
    load: Callable[[Any], Any]
    dump: Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _key(
    name: str, load: Callable[[Any], Any] = _same, dump: Callable[[Any], Any] = _same, *, required: bool = False
) -> Any:
    meta = {"toml": _Key(name, load, dump)}
    return field(metadata=meta) if required else field(default=None, metadata=meta)


def _need(name: str, load: Callable[[Any], Any] = _same, dump: Callable[[Any], Any] = _same) -> Any:
    return _key(name, load, dump, required=True)


def _extra() -> Any:
    """The keys of a table the schema leaves open, kept as read."""
    return field(default=FrozenMap(), metadata={"extra": True})


def _rows(cls: type[R]) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    return (lambda rows: tuple(cls._from_table(row) for row in rows)), (lambda rows: [row.to_dict() for row in rows])


def _table(cls: type[R]) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    return cls._from_table, (lambda record: record.to_dict())


_DIGEST = (Digest.from_str, str)
_FILES = (FileSet.from_dict, FileSet.to_dict)
_MAP = (frozen_map, dict)
_VALUE = (freeze, thaw)


class Record:
    """A lock table as a record: ``from_dict`` / ``to_dict`` through each field's key (no schema check here)."""

    __slots__ = ()

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record of a schema-valid table (``ValueError`` for a key the schema does not allow here)."""
        return cls._from_table(data)

    @classmethod
    def _from_table(cls: type[R], data: Mapping[str, Any]) -> R:
        kwargs: dict[str, Any] = {}
        known: set[str] = set()
        open_field = None
        for f in fields(cast(Any, cls)):
            spec: _Key | None = f.metadata.get("toml")
            if spec is None:
                open_field = f.name
                continue
            known.add(spec.name)
            if spec.name in data:
                kwargs[f.name] = spec.load(data[spec.name])
        rest = {key: value for key, value in data.items() if key not in known}
        if open_field is not None:
            kwargs[open_field] = freeze(rest)
        elif rest:
            raise ValueError(f"{cls.__name__}: unexpected keys {sorted(rest)}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The table as ``tomllib`` reads it: absent fields left out, open keys merged back."""
        out: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for f in fields(cast(Any, self)):
            value = getattr(self, f.name)
            spec: _Key | None = f.metadata.get("toml")
            if spec is None:
                rest = thaw(value)
            elif value is not None:
                out[spec.name] = spec.dump(value)
        # Only a record built by hand can hold a known key in ``extra``: it would silently replace the field.
        known = {spec.name for f in fields(cast(Any, self)) if (spec := f.metadata.get("toml"))}
        if known & rest.keys():
            raise ValueError(f"{type(self).__name__}: `extra` repeats the field(s) {sorted(known & rest.keys())}")
        return {**out, **rest}


# --- where a section comes from ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HubPin:
    """A section locked from the Hub: its ``repo``, the commit ``revision`` it is pinned to and the ``ref`` (branch
    or tag) that commit was resolved from, when it was resolved from one."""

    repo: str
    revision: str
    ref: str | None


class Sourced:
    """A section locked from a source (``[base]``, ``[tokenizer]``, each ``[[adapter]]``): a local ``source``
    directory, or a Hub ``repo`` at the commit ``revision``."""

    __slots__ = ()

    source: str | None
    repo: str | None
    revision: str | None
    ref: str | None

    def hub(self) -> HubPin | None:
        """The Hub pin of a section that names a ``repo``, or None (a local source).

        The schema asks for ``revision`` next to ``repo`` unless the section also names a local ``source``; such
        a section, hand-edited, has no pin to report and is refused as unusable input."""
        if self.repo is None:
            return None
        if self.revision is None:
            from lora_lock.errors import InputError

            raise InputError(
                f"lora.lock: the section locked from the Hub repo {self.repo!r} has no 'revision'; expected the "
                "commit the repo is pinned to, found none",
                hint="regenerate the lock with `lora-lock generate`, or add the 40-hex commit as 'revision'",
            )
        return HubPin(self.repo, self.revision, self.ref)


# --- identity and base -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Hashing(Record):
    """``[hashing]``: how every digest of the lock was computed."""

    algorithm: str = _need("algorithm")
    files: str = _need("files")
    tokenizer_fingerprint: str = _need("tokenizer-fingerprint")
    extra: FrozenMap[Value] = _extra()


@dataclass(frozen=True, slots=True, kw_only=True)
class BaseConfig(Record):
    """``[base.config]``: the identity facts of config.json (each absent when config.json does not say)."""

    architecture: str | None = _key("architecture")
    model_type: str | None = _key("model_type")
    hidden_size: int | None = _key("hidden_size")
    intermediate_size: int | None = _key("intermediate_size")
    num_hidden_layers: int | None = _key("num_hidden_layers")
    num_attention_heads: int | None = _key("num_attention_heads")
    num_key_value_heads: int | None = _key("num_key_value_heads")
    head_dim: int | None = _key("head_dim")
    vocab_size: int | None = _key("vocab_size")
    tie_word_embeddings: bool | None = _key("tie_word_embeddings")


@dataclass(frozen=True, slots=True, kw_only=True)
class Quantization(Record):
    """``[base.quantization]``: the method (``none`` for full-precision weights) and its parameters."""

    method: str = _need("method")
    params: FrozenMap[Value] | None = _key("params", *_VALUE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Base(Record, Sourced):
    """``[base]``: where the base comes from (``source``, or Hub ``repo`` at ``revision``) and what it is."""

    source: str | None = _key("source")
    repo: str | None = _key("repo")
    revision: str | None = _key("revision")
    ref: str | None = _key("ref")
    dtype: str | None = _key("dtype")
    config: BaseConfig = _need("config", *_table(BaseConfig))
    weights_dtypes: FrozenMap[int] = _need("weights-dtypes", *_MAP)
    quantization: Quantization = _need("quantization", *_table(Quantization))
    #: Absent in locks written before runtime names (no ``module-names``).
    runtime_rules: str | None = _key("runtime-rules")
    files: FileSet = _need("files", *_FILES)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tokenizer(Record, Sourced):
    """``[tokenizer]``: its files, and the facts and behavioural fingerprint read from them."""

    source: str | None = _key("source")
    repo: str | None = _key("repo")
    revision: str | None = _key("revision")
    ref: str | None = _key("ref")
    files: FileSet = _need("files", *_FILES)
    vocab_size: int | None = _key("vocab-size")
    special_tokens: FrozenMap[int] | None = _key("special-tokens", *_MAP)
    chat_template: Digest | None = _key("chat-template", *_DIGEST)
    fingerprint: Digest | None = _key("fingerprint", *_DIGEST)
    fingerprint_tokens: int | None = _key("fingerprint-tokens")
    fingerprint_file: str | None = _key("fingerprint-file")


# --- adapters ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings(Record):
    """``[adapter.settings]``: the PEFT settings the lock records (the schema admits more keys: ``extra``)."""

    peft_type: str = _need("peft_type")
    task_type: str | None = _key("task_type")
    r: int = _need("r")
    lora_alpha: float = _need("lora_alpha")
    #: A list (of names, as PEFT writes them) or one regular expression.
    target_modules: str | tuple[Value, ...] | None = _key("target_modules", *_VALUE)
    exclude_modules: str | tuple[Value, ...] | None = _key("exclude_modules", *_VALUE)
    modules_to_save: tuple[str, ...] | None = _key("modules_to_save", *_VALUE)
    fan_in_fan_out: bool | None = _key("fan_in_fan_out")
    bias: str | None = _key("bias")
    use_rslora: bool | None = _key("use_rslora")
    use_dora: bool | None = _key("use_dora")
    lora_bias: bool | None = _key("lora_bias")
    rank_pattern: FrozenMap[Value] | None = _key("rank_pattern", *_VALUE)
    alpha_pattern: FrozenMap[Value] | None = _key("alpha_pattern", *_VALUE)
    layers_to_transform: tuple[int, ...] | None = _key("layers_to_transform", *_VALUE)
    layers_pattern: tuple[str, ...] | None = _key("layers_pattern", *_VALUE)
    extra: FrozenMap[Value] = _extra()


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleRow(Record):
    """One row of an adapter's module table: the base modules of one pattern and their shapes (``AxB`` text)."""

    pattern: str = _need("pattern")
    count: int = _need("count")
    layers: str = _need("layers")
    kind: str = _need("kind")
    base_shape: str = _need("base-shape")
    rank: int = _need("rank")
    lora_a: str = _need("lora-a")
    lora_b: str = _need("lora-b")
    quantized: str | None = _key("quantized")
    #: The checkpoint's name of the module, when transformers renames it at load.
    checkpoint: str | None = _key("checkpoint")


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedModule(Record):
    """A full module the adapter saves (``modules_to_save``, resized embeddings) and its shape."""

    name: str = _need("name")
    shape: str = _need("shape")


@dataclass(frozen=True, slots=True, kw_only=True)
class Adapter(Record, Sourced):
    """One ``[[adapter]]``: its source, settings, files and resolved module table."""

    name: str = _need("name")
    source: str | None = _key("source")
    repo: str | None = _key("repo")
    revision: str | None = _key("revision")
    ref: str | None = _key("ref")
    base_named: str | None = _key("base-named")
    settings: Settings = _need("settings", *_table(Settings))
    files: FileSet = _need("files", *_FILES)
    #: ``runtime`` (rows named as PEFT matches them); absent in earlier locks, whose rows carry checkpoint names.
    module_names: str | None = _key("module-names")
    modules: tuple[ModuleRow, ...] = _need("modules", *_rows(ModuleRow))
    saved: tuple[SavedModule, ...] | None = _key("saved", *_rows(SavedModule))


# --- environment, probe, golden ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Environment(Record):
    """``[environment]``: the package versions, the match policy per package, the GPU."""

    versions: FrozenMap[str] = _need("versions", *_MAP)
    policy: FrozenMap[str] = _need("policy", *_MAP)
    #: In the lock's own order, not sorted: findings quote the table as it is written.
    gpu: FrozenMap[str] | None = _key("gpu", FrozenMap, dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeRow(Record):
    """An adapter's effect figures at lock time: mean KL to the base, the noise, the drift tolerance."""

    name: str = _need("name")
    effect_kl: float = _need("effect-kl")
    noise_kl: float = _need("noise-kl")
    tolerance: float = _need("tolerance")
    extra: FrozenMap[Value] = _extra()


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe(Record):
    """``[probe]``: the effect probe's settings, its figures per adapter and the sidecar holding fingerprints."""

    adapters: tuple[ProbeRow, ...] = _need("adapter", *_rows(ProbeRow))
    device: str = _need("device")
    dtype: str = _need("dtype")
    positions: int = _need("positions")
    prompts: int = _need("prompts")
    prompts_digest: Digest = _need("prompts-digest", *_DIGEST)
    sidecar: str = _need("sidecar")
    sidecar_digest: Digest = _need("sidecar-digest", *_DIGEST)
    top_k: int = _need("top-k")
    attn_implementation: str | None = _key("attn-implementation")
    torch: str | None = _key("torch")
    cuda: str | None = _key("cuda")
    gpu: str | None = _key("gpu")
    extra: FrozenMap[Value] = _extra()


@dataclass(frozen=True, slots=True, kw_only=True)
class GoldenRow(Record):
    """An adapter's golden-set baseline: accuracy, and which items it got right (hex bits)."""

    name: str = _need("name")
    accuracy: float = _need("accuracy")
    acc_norm: float | None = _key("acc-norm")
    correct: str = _need("correct")
    extra: FrozenMap[Value] = _extra()


@dataclass(frozen=True, slots=True, kw_only=True)
class Golden(Record):
    """``[golden]``: the golden dataset (path and digest) and each adapter's baseline on it."""

    adapters: tuple[GoldenRow, ...] = _need("adapter", *_rows(GoldenRow))
    dataset: str = _need("dataset")
    dataset_digest: Digest = _need("dataset-digest", *_DIGEST)
    items: int = _need("items")
    kinds: FrozenMap[int] | None = _key("kinds", *_MAP)
    device: str | None = _key("device")
    dtype: str | None = _key("dtype")
    extra: FrozenMap[Value] = _extra()


# --- the lock ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Lock(Record):
    """A whole ``lora.lock``. Build it with ``from_toml`` / ``from_dict`` (schema-checked) or ``read_lock``."""

    lock_version: int = _need("lock-version")
    generated_by: str = _need("generated-by")
    hashing: Hashing = _need("hashing", *_table(Hashing))
    base: Base = _need("base", *_table(Base))
    tokenizer: Tokenizer = _need("tokenizer", *_table(Tokenizer))
    adapters: tuple[Adapter, ...] = _need("adapter", *_rows(Adapter))
    environment: Environment = _need("environment", *_table(Environment))
    probe: Probe | None = _key("probe", *_table(Probe))
    golden: Golden | None = _key("golden", *_table(Golden))

    @classmethod
    def from_toml(cls, text: str, path: Path | None = None) -> Lock:
        """Lock text → a ``Lock``, refused as ``lockfile.read`` refuses it (``path`` names it in the errors)."""
        return cls._from_table(lockfile.loads(text, path or Path(lockfile.DEFAULT_NAME)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> Lock:
        """A lock document (as ``tomllib`` reads it) → a ``Lock``, after the lock schema accepts it."""
        lockfile.validate(data, path or Path(lockfile.DEFAULT_NAME))
        return cls._from_table(data)

    def to_toml(self) -> str:
        """The canonical text ``lockfile.dumps`` writes for this lock."""
        return lockfile.dumps(self.to_dict())

    def adapter(self, name: str) -> Adapter | None:
        """The adapter of that name (names are unique in a valid lock), or None."""
        return next((a for a in self.adapters if a.name == name), None)

    def adapter_names(self) -> tuple[str, ...]:
        """The adapters' names, in lock order."""
        return tuple(a.name for a in self.adapters)


def read_lock(path: Path) -> Lock:
    """The lock file at ``path`` as a ``Lock``: read, bounded and validated as ``lockfile.read`` does it."""
    return Lock._from_table(lockfile.read(path))
