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

Each field names its TOML key (:mod:`lora_lock.lock.record`); ``Record`` reads and writes every section through
them.
"""

# ruff: noqa: RUF009  (each field's default is the dataclasses.field() spelling its TOML key, made once per class)

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.hashing import Digest
from lora_lock.lock import io as lockfile
from lora_lock.lock.record import DIGEST, FILES, MAP, VALUE, Record, extra, key, need, rows, table
from lora_lock.lock.values import FileSet, FrozenMap, Value

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
    files: FileSet

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

    algorithm: str = need("algorithm")
    files: str = need("files")
    tokenizer_fingerprint: str = need("tokenizer-fingerprint")
    extra: FrozenMap[Value] = extra()


@dataclass(frozen=True, slots=True, kw_only=True)
class BaseConfig(Record):
    """``[base.config]``: the identity facts of config.json (each absent when config.json does not say)."""

    architecture: str | None = key("architecture")
    model_type: str | None = key("model_type")
    hidden_size: int | None = key("hidden_size")
    intermediate_size: int | None = key("intermediate_size")
    num_hidden_layers: int | None = key("num_hidden_layers")
    num_attention_heads: int | None = key("num_attention_heads")
    num_key_value_heads: int | None = key("num_key_value_heads")
    head_dim: int | None = key("head_dim")
    vocab_size: int | None = key("vocab_size")
    tie_word_embeddings: bool | None = key("tie_word_embeddings")


@dataclass(frozen=True, slots=True, kw_only=True)
class Quantization(Record):
    """``[base.quantization]``: the method (``none`` for full-precision weights) and its parameters."""

    method: str = need("method")
    params: FrozenMap[Value] | None = key("params", *VALUE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Base(Record, Sourced):
    """``[base]``: where the base comes from (``source``, or Hub ``repo`` at ``revision``) and what it is."""

    source: str | None = key("source")
    repo: str | None = key("repo")
    revision: str | None = key("revision")
    ref: str | None = key("ref")
    dtype: str | None = key("dtype")
    config: BaseConfig = need("config", *table(BaseConfig))
    weights_dtypes: FrozenMap[int] = need("weights-dtypes", *MAP)
    quantization: Quantization = need("quantization", *table(Quantization))
    #: Absent in locks written before runtime names (no ``module-names``).
    runtime_rules: str | None = key("runtime-rules")
    files: FileSet = need("files", *FILES)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tokenizer(Record, Sourced):
    """``[tokenizer]``: its files, and the facts and behavioural fingerprint read from them."""

    source: str | None = key("source")
    repo: str | None = key("repo")
    revision: str | None = key("revision")
    ref: str | None = key("ref")
    files: FileSet = need("files", *FILES)
    vocab_size: int | None = key("vocab-size")
    special_tokens: FrozenMap[int] | None = key("special-tokens", *MAP)
    chat_template: Digest | None = key("chat-template", *DIGEST)
    fingerprint: Digest | None = key("fingerprint", *DIGEST)
    fingerprint_tokens: int | None = key("fingerprint-tokens")
    fingerprint_file: str | None = key("fingerprint-file")


# --- adapters ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings(Record):
    """``[adapter.settings]``: the PEFT settings the lock records (the schema admits more keys: ``extra``)."""

    peft_type: str = need("peft_type")
    task_type: str | None = key("task_type")
    r: int = need("r")
    lora_alpha: float = need("lora_alpha")
    #: A list (of names, as PEFT writes them) or one regular expression.
    target_modules: str | tuple[Value, ...] | None = key("target_modules", *VALUE)
    exclude_modules: str | tuple[Value, ...] | None = key("exclude_modules", *VALUE)
    modules_to_save: tuple[str, ...] | None = key("modules_to_save", *VALUE)
    fan_in_fan_out: bool | None = key("fan_in_fan_out")
    bias: str | None = key("bias")
    use_rslora: bool | None = key("use_rslora")
    use_dora: bool | None = key("use_dora")
    lora_bias: bool | None = key("lora_bias")
    rank_pattern: FrozenMap[Value] | None = key("rank_pattern", *VALUE)
    alpha_pattern: FrozenMap[Value] | None = key("alpha_pattern", *VALUE)
    layers_to_transform: tuple[int, ...] | None = key("layers_to_transform", *VALUE)
    layers_pattern: tuple[str, ...] | None = key("layers_pattern", *VALUE)
    extra: FrozenMap[Value] = extra()


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleRow(Record):
    """One row of an adapter's module table: the base modules of one pattern and their shapes (``AxB`` text)."""

    pattern: str = need("pattern")
    count: int = need("count")
    layers: str = need("layers")
    kind: str = need("kind")
    base_shape: str = need("base-shape")
    rank: int = need("rank")
    lora_a: str = need("lora-a")
    lora_b: str = need("lora-b")
    quantized: str | None = key("quantized")
    #: The checkpoint's name of the module, when transformers renames it at load.
    checkpoint: str | None = key("checkpoint")


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedModule(Record):
    """A full module the adapter saves (``modules_to_save``, resized embeddings) and its shape."""

    name: str = need("name")
    shape: str = need("shape")


@dataclass(frozen=True, slots=True, kw_only=True)
class Adapter(Record, Sourced):
    """One ``[[adapter]]``: its source, settings, files and resolved module table."""

    name: str = need("name")
    source: str | None = key("source")
    repo: str | None = key("repo")
    revision: str | None = key("revision")
    ref: str | None = key("ref")
    base_named: str | None = key("base-named")
    settings: Settings = need("settings", *table(Settings))
    files: FileSet = need("files", *FILES)
    #: ``runtime`` (rows named as PEFT matches them); absent in earlier locks, whose rows carry checkpoint names.
    module_names: str | None = key("module-names")
    modules: tuple[ModuleRow, ...] = need("modules", *rows(ModuleRow))
    saved: tuple[SavedModule, ...] | None = key("saved", *rows(SavedModule))


# --- environment, probe, golden ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Environment(Record):
    """``[environment]``: the package versions, the match policy per package, the GPU."""

    versions: FrozenMap[str] = need("versions", *MAP)
    policy: FrozenMap[str] = need("policy", *MAP)
    #: In the lock's own order, not sorted: findings quote the table as it is written.
    gpu: FrozenMap[str] | None = key("gpu", FrozenMap, dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeRow(Record):
    """An adapter's effect figures at lock time and the drift tolerance: mean KL to the base and its noise for a
    model with token or class distributions, relative L2 distances of embeddings for a feature extractor."""

    name: str = need("name")
    effect_kl: float | None = key("effect-kl")
    noise_kl: float | None = key("noise-kl")
    #: What a feature extractor's probe compares (``mean-last-hidden-state``), with its two distances.
    embedding: str | None = key("embedding")
    effect_distance: float | None = key("effect-distance")
    noise_distance: float | None = key("noise-distance")
    tolerance: float = need("tolerance")
    extra: FrozenMap[Value] = extra()


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe(Record):
    """``[probe]``: the effect probe's settings, its figures per adapter and the sidecar holding fingerprints."""

    adapters: tuple[ProbeRow, ...] = need("adapter", *rows(ProbeRow))
    device: str = need("device")
    dtype: str = need("dtype")
    positions: int = need("positions")
    prompts: int = need("prompts")
    prompts_digest: Digest = need("prompts-digest", *DIGEST)
    sidecar: str = need("sidecar")
    sidecar_digest: Digest = need("sidecar-digest", *DIGEST)
    top_k: int = need("top-k")
    attn_implementation: str | None = key("attn-implementation")
    torch: str | None = key("torch")
    cuda: str | None = key("cuda")
    gpu: str | None = key("gpu")
    extra: FrozenMap[Value] = extra()


@dataclass(frozen=True, slots=True, kw_only=True)
class GoldenRow(Record):
    """An adapter's golden-set baseline: accuracy, which items it got right (hex bits) and which were unstable."""

    name: str = need("name")
    accuracy: float = need("accuracy")
    acc_norm: float | None = key("acc-norm")
    correct: str = need("correct")
    #: The items inside the numerical noise at lock time (hex bits as ``correct``) and the noise's size.
    unstable: str | None = key("unstable")
    noise_ll: float | None = key("noise-ll")
    extra: FrozenMap[Value] = extra()


@dataclass(frozen=True, slots=True, kw_only=True)
class Golden(Record):
    """``[golden]``: the golden dataset (path and digest) and each adapter's baseline on it."""

    adapters: tuple[GoldenRow, ...] = need("adapter", *rows(GoldenRow))
    dataset: str = need("dataset")
    dataset_digest: Digest = need("dataset-digest", *DIGEST)
    items: int = need("items")
    kinds: FrozenMap[int] | None = key("kinds", *MAP)
    #: The scoring convention of the baseline (absent: the convention before lm-eval parity).
    convention: str | None = key("convention")
    device: str | None = key("device")
    dtype: str | None = key("dtype")
    attn_implementation: str | None = key("attn-implementation")
    torch: str | None = key("torch")
    #: The other numerics the ``unstable`` items were measured with (``autocast-bfloat16``).
    noise_numerics: str | None = key("noise-numerics")
    extra: FrozenMap[Value] = extra()


# --- the lock ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Lock(Record):
    """A whole ``lora.lock``. Build it with ``from_toml`` / ``from_dict`` (schema-checked) or ``read_lock``."""

    lock_version: int = need("lock-version")
    generated_by: str = need("generated-by")
    hashing: Hashing = need("hashing", *table(Hashing))
    base: Base = need("base", *table(Base))
    tokenizer: Tokenizer = need("tokenizer", *table(Tokenizer))
    adapters: tuple[Adapter, ...] = need("adapter", *rows(Adapter))
    environment: Environment = need("environment", *table(Environment))
    probe: Probe | None = key("probe", *table(Probe))
    golden: Golden | None = key("golden", *table(Golden))

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
