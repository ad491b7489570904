"""The world as lock-shaped data: what ``generate`` writes and what ``verify`` compares against the lock.

Both commands go through the same functions, so a fresh lock always verifies and any difference verify reports
is a real change of the inputs, never a difference of code paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from lora_lock._version import __version__
from lora_lock.compat import Fit
from lora_lock.compat.base import BaseView, base_file_findings, read_base
from lora_lock.compat.static import static_findings
from lora_lock.errors import InputError
from lora_lock.findings import Finding
from lora_lock.hashing import ALGORITHM, Digest, FileDigest, Progress, hash_files
from lora_lock.inspect.adapter import Adapter, read_adapter
from lora_lock.inspect.environment import DEFAULT_POLICY, Environment, current_environment
from lora_lock.inspect.tokenizer import (
    FINGERPRINT_SCHEME,
    FULL_TOKENIZER_FILE,
    TokenizerFacts,
    read_tokenizer_facts,
    tokenizer_files,
)
from lora_lock.lock import model
from lora_lock.lock.io import LOCK_VERSION
from lora_lock.lock.module_table import RUNTIME, ModuleNames, module_names, runtime_rows
from lora_lock.lock.values import FileRef, FileSet, FrozenMap, Value, freeze, frozen_map
from lora_lock.runtime import Stack, installed_stack
from lora_lock.sources.fence import admit, resolve_fence
from lora_lock.sources.fileset import excluding_lock, planted_adapter
from lora_lock.sources.resolve import Resolved
from lora_lock.text import shape_token

HASHING = model.Hashing(
    algorithm=ALGORITHM,
    files=f"{ALGORITHM} of each file's full bytes, streamed",
    tokenizer_fingerprint=FINGERPRINT_SCHEME,
)
#: The digest of a file compared by size only (``verify(hash_weights=False)``, the serving guard's fast path).
UNHASHED = ""
BASE_EXTRA_FILES = ("config.json", "generation_config.json")


def checked_file(source: Resolved, name: str, *, allow_symlinks: bool) -> Path:
    """The local file ``name`` of ``source``, through the fence: every component checked (symlinks leading
    outside the source refused unless allowed), a regular file only.

    A Hub cache snapshot links into its repo's ``blobs/``: that is inside ``source.contain``, so it is fine.
    """
    root = source.path
    path = root / name
    if not os.path.lexists(path):
        where = (
            f" (Hub {source.label}: fetch it with `hf download {source.repo_id} --revision {source.revision}`)"
            if source.repo_id
            else ""
        )
        raise InputError(f"{path}: file not found{where}")
    admit(root, name, fence=resolve_fence(root, source.contain), allow_symlinks=allow_symlinks)
    return path


def adapter_key(name: str) -> str:
    """The section key of the adapter ``name`` in :attr:`Observed.digests` and :attr:`Observed.present` (the base's
    is ``base``, the tokenizer's ``tokenizer``)."""
    return f"adapter:{name}"


@dataclass(frozen=True)
class ObservedAdapter:
    """One adapter as read now: its name in the lock, its source, its files and config, and its fit to the base."""

    name: str
    source: Resolved
    adapter: Adapter
    fit: Fit


@dataclass
class Observed:
    """Everything read from the sources for one lock: facts, fits and file digests."""

    base: BaseView
    tokenizer_source: Resolved
    tokenizer: TokenizerFacts | None
    adapters: list[ObservedAdapter]
    findings: list[Finding]
    #: (section key, file name) → digest; the section key is ``base``, ``tokenizer`` or :func:`adapter_key`.
    digests: dict[tuple[str, str], FileDigest]
    unreadable: dict[str, InputError] = field(default_factory=dict)  # adapters left out (``skip_unreadable``)
    #: Each section's file set as it is now (section as in ``digests``): every file, deny by default.
    present: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The runtime model's module names (None for a base transformers does not build, e.g. GGUF files).
    names: ModuleNames | None = None


def same_source(a: Resolved, b: Resolved) -> bool:
    """Whether two sources are one directory (or one Hub commit)."""
    if a is b:
        return True
    if a.repo_id or b.repo_id:
        return (a.repo_id, a.revision) == (b.repo_id, b.revision)
    try:
        return a.path.resolve() == b.path.resolve()
    except (OSError, RuntimeError):
        return False


def source_names(source: Resolved, lock_path: Path | None) -> tuple[str, ...]:
    """The file set of a source, without the lock and its sidecars when the lock lives inside it."""
    return excluding_lock(source.files, source.path, lock_path)


def section_names(
    base: BaseView, base_names: tuple[str, ...], tok_same: bool, tok_names: tuple[str, ...]
) -> tuple[str, ...]:
    """The base section's files: every file of the base directory, except the tokenizer's (its own section,
    when the tokenizer is the base's; generation_config.json is in both) and a planted adapter (its own error)."""
    names = set(base.checkpoint.files) | set(base_names)
    if tok_same:
        names -= set(tokenizer_files(tok_names)) - set(BASE_EXTRA_FILES)
    names -= set(planted_adapter(base_names))
    return tuple(sorted(names))


def observe(  # noqa: PLR0913  one keyword per caller need; generate and verify share this path
    base_source: Resolved,
    adapters: Iterable[tuple[str, Resolved]],
    *,
    tokenizer_source: Resolved | None = None,
    allow_symlinks: bool = False,
    deep: bool = False,
    hash_selected: Callable[[tuple[str, str]], bool] = lambda _: True,
    size_only: Callable[[tuple[str, str]], bool] = lambda _: False,
    progress: Progress | None = None,
    skip_unreadable: bool = False,
    name_findings: bool | None = None,
    lock_path: Path | None = None,
    transformers_version: str | None = None,
    stack: Stack | None = None,
) -> Observed:
    """Read every source. Digests proven without reading (``source.known``) are used unless ``deep``.

    Every file of every source is recorded (deny by default); ``lock_path``: the lock and its sidecars are not
    part of a source they live in. ``transformers_version``: the release whose tokenizer loading rules decide
    which tokenizer file is fingerprinted (default: the modelled one).
    ``skip_unreadable``: an adapter whose config or weights cannot be read is left out and its error kept in
    ``Observed.unreadable`` (``verify`` still checks the base and the other adapters); otherwise it raises.
    ``name_findings``: start each adapter's findings with its name (default: when there are several adapters).
    ``stack``: whose load rules name the modules and judge the fit (default: the installed versions)."""
    stack = stack or installed_stack()
    base = read_base(base_source)
    names = runtime_names(base, stack)
    tok_source = tokenizer_source or base_source
    tok_same = same_source(tok_source, base_source)
    base_listing = source_names(base_source, lock_path)
    tok_listing = base_listing if tok_same else source_names(tok_source, lock_path)
    present: dict[str, tuple[str, ...]] = {
        "base": section_names(base, base_listing, tok_same, tok_listing),
        "tokenizer": tokenizer_files(tok_listing) if tok_same else tok_listing,
    }
    findings: list[Finding] = base_file_findings(base, base_listing)
    wanted: list[tuple[tuple[str, str], Resolved]] = []
    wanted += [(("base", n), base_source) for n in present["base"]]
    wanted += [(("tokenizer", n), tok_source) for n in present["tokenizer"]]
    fitted: list[ObservedAdapter] = []
    pairs = list(adapters)
    named = len(pairs) > 1 if name_findings is None else name_findings
    unreadable: dict[str, InputError] = {}
    for name, source in pairs:
        try:
            adapter = read_adapter(source.path, remote=source.remote)
            result, more = static_findings(adapter, base, stack=stack)
        except InputError as exc:
            if not skip_unreadable:
                raise
            unreadable[name] = exc
            continue
        fitted.append(ObservedAdapter(name, source, adapter, result))
        findings += [f.for_adapter(name) for f in more] if named else more
        present[adapter_key(name)] = source_names(source, lock_path)
        wanted += [((adapter_key(name), f), source) for f in present[adapter_key(name)]]

    digests: dict[tuple[str, str], FileDigest] = {}
    to_hash: dict[tuple[str, str], Path] = {}
    for key, source in wanted:
        if not hash_selected(key):
            continue
        known = None if deep else source.known.get(key[1])
        if known is not None:
            digests[key] = known
        elif size_only(key):
            path = checked_file(source, key[1], allow_symlinks=allow_symlinks)
            digests[key] = FileDigest(UNHASHED, path.stat().st_size)
        else:
            to_hash[key] = checked_file(source, key[1], allow_symlinks=allow_symlinks)
    by_path = hash_files(sorted(set(to_hash.values())), progress=progress)
    digests.update({k: by_path[p] for k, p in to_hash.items()})
    return Observed(
        base=base,
        tokenizer_source=tok_source,
        tokenizer=read_tokenizer_facts(tok_source.path, tok_listing, transformers_version),
        adapters=fitted,
        findings=findings,
        digests=dict(sorted(digests.items())),
        unreadable=unreadable,
        present=present,
        names=names,
    )


def runtime_names(base: BaseView, stack: Stack) -> ModuleNames | None:
    """The module names the model transformers builds from this base has under ``stack``'s rules."""
    if base.gguf is not None:
        return None  # PEFT cannot apply an adapter to these files as they are: no runtime model to name
    from lora_lock.inspect.jsonfile import read_json_object

    config = getattr(base, "model_config", None) or read_json_object(base.source.path / "config.json")
    return module_names(config, base.checkpoint.tensors, stack)


def section_digests(observed: Observed, section: str) -> dict[str, FileDigest]:
    """The digests of one section's files now (``base``, ``tokenizer``, :func:`adapter_key`), by file name."""
    return {name: d for (sec, name), d in observed.digests.items() if sec == section}


def file_set(observed: Observed, section: str) -> FileSet:
    """The lock's ``files`` of one section (``base``, ``tokenizer``, :func:`adapter_key`): every file hashed.

    Only ``generate`` writes files: ``verify`` compares them from :func:`section_digests`, where a weight file may
    have been measured by size alone (:data:`UNHASHED`), which no lock records."""
    return FileSet(
        tuple(
            FileRef(path=name, digest=Digest.from_str(d.digest), size=d.size)
            for name, d in section_digests(observed, section).items()
        )
    )


def _table(values: Mapping[str, Any]) -> FrozenMap[Value]:
    """A table of TOML values read from a source, frozen as the lock model holds it."""
    return FrozenMap((key, freeze(values[key])) for key in sorted(values))


def base_record(observed: Observed, lock_dir: Path, files: FileSet) -> model.Base:
    """The lock's ``[base]`` as observed now: source, identity config, weight dtypes, quantization, the dtype
    when the config names one, the runtime rules naming its modules, and ``files`` (:func:`file_set`)."""
    facts, origin = observed.base.facts, observed.base.source.origin(lock_dir)
    quant = facts.quantization
    return model.Base(
        source=origin.source,
        repo=origin.repo,
        revision=origin.revision,
        ref=origin.ref,
        dtype=facts.dtype or None,
        config=model.BaseConfig(
            architecture=facts.architecture,
            model_type=facts.model_type,
            hidden_size=facts.hidden_size,
            intermediate_size=facts.intermediate_size,
            num_hidden_layers=facts.num_hidden_layers,
            num_attention_heads=facts.num_attention_heads,
            num_key_value_heads=facts.num_key_value_heads,
            head_dim=facts.head_dim,
            vocab_size=facts.vocab_size,
            tie_word_embeddings=facts.tie_word_embeddings,
        ),
        weights_dtypes=frozen_map(observed.base.checkpoint.dtypes),
        quantization=model.Quantization(method=quant.method, params=_table(quant.params) if quant.params else None)
        if quant
        else model.Quantization(method="none"),
        runtime_rules=observed.names.rules if observed.names is not None else None,
        files=files,
    )


def tokenizer_record(observed: Observed, lock_dir: Path, files: FileSet) -> model.Tokenizer:
    """The lock's ``[tokenizer]`` as observed now: source and ``files`` (:func:`file_set`), and when the tokenizer
    could be read, its vocabulary size, special tokens, chat-template digest and fingerprint."""
    origin = observed.tokenizer_source.origin(lock_dir)
    files_only = model.Tokenizer(
        source=origin.source, repo=origin.repo, revision=origin.revision, ref=origin.ref, files=files
    )
    return with_tokenizer_facts(files_only, observed.tokenizer)


def with_tokenizer_facts(section: model.Tokenizer, tok: TokenizerFacts | None) -> model.Tokenizer:
    """``section`` with the facts read from the tokenizer's files (unchanged when they could not be read)."""
    if tok is None:
        return section
    fingerprint = Digest.from_str(tok.fingerprint) if tok.fingerprint else None
    return replace(
        section,
        vocab_size=tok.vocab_size,
        special_tokens=frozen_map(tok.special_tokens) if tok.special_tokens else None,
        chat_template=Digest.from_str(tok.chat_template) if tok.chat_template else None,
        fingerprint=fingerprint,
        fingerprint_tokens=tok.fingerprint_tokens if fingerprint else None,
        # The file is named only when it is not the one transformers loads by default.
        fingerprint_file=tok.fingerprint_file if fingerprint and tok.fingerprint_file != FULL_TOKENIZER_FILE else None,
    )


def module_rows(result: Fit, names: ModuleNames | None) -> tuple[model.ModuleRow, ...]:
    """The fit's module groups as lock rows in runtime names (shapes written as ``4096x16`` tokens)."""
    rows = [
        model.ModuleRow(
            pattern=g.pattern,
            count=g.count,
            layers=g.layers,
            kind=g.kind,
            base_shape=shape_token(g.base_shape),
            rank=g.rank,
            lora_a=shape_token(g.lora_a),
            lora_b=shape_token(g.lora_b),
            quantized=g.quantized or None,
        )
        for g in result.modules
    ]
    return runtime_rows(rows, names)


def adapter_record(observed: Observed, one: ObservedAdapter, lock_dir: Path, files: FileSet) -> model.Adapter:
    """One ``[[adapter]]`` as observed now: name, source, PEFT settings, ``files`` (:func:`file_set`), module
    table in runtime names, and the base the adapter's config names when it is a Hub id."""
    adapter, result, origin = one.adapter, one.fit, one.source.origin(lock_dir)
    return model.Adapter(
        name=one.name,
        source=origin.source,
        repo=origin.repo,
        revision=origin.revision,
        ref=origin.ref,
        base_named=_portable(adapter.config.base_model_name_or_path),
        settings=model.Settings.from_dict(adapter.config.settings()),
        files=files,
        module_names=RUNTIME,
        modules=module_rows(result, observed.names),
        saved=tuple(model.SavedModule(name=n, shape=shape_token(s)) for n, s in result.saved) if result.saved else None,
    )


def _portable(named: str | None) -> str | None:
    """The base an adapter's config names, when it is a Hub id or a relative path: a local absolute path (what
    PEFT writes for local bases) would tie the lock to one machine."""
    if not named or PurePosixPath(named).is_absolute() or named.startswith(("~", "\\")) or ":" in named[:3]:
        return None
    return named


def environment_record(env: Environment) -> model.Environment:
    """The lock's ``[environment]``: versions, the default match policy of each recorded package, GPU facts."""
    return model.Environment(
        versions=frozen_map(env.versions),
        policy=frozen_map({k: v for k, v in DEFAULT_POLICY.items() if k in env.versions}),
        gpu=FrozenMap(env.gpu) if env.gpu else None,
    )


def build_lock(observed: Observed, lock_dir: Path, env: Environment | None = None) -> model.Lock:
    """The whole lock as observed, without the behaviour sections: adapters sorted by name, the environment now
    unless ``env`` is given."""
    adapters = sorted(
        (
            adapter_record(observed, one, lock_dir, file_set(observed, adapter_key(one.name)))
            for one in observed.adapters
        ),
        key=lambda a: a.name,
    )
    return model.Lock(
        lock_version=LOCK_VERSION,
        generated_by=f"lora-lock {__version__}",
        hashing=HASHING,
        base=base_record(observed, lock_dir, file_set(observed, "base")),
        tokenizer=tokenizer_record(observed, lock_dir, file_set(observed, "tokenizer")),
        adapters=tuple(adapters),
        environment=environment_record(env or current_environment()),
    )
