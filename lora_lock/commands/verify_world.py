"""The file-based categories of ``verify`` (base, tokenizer, adapter, compat, quantization): the locked sources
opened behind the fence, the world observed as lock-shaped data, and each section compared with the lock."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lora_lock.commands.verify_partial import intact_categories
from lora_lock.commands.verify_sections import NO_FILES, adapter_findings, base_findings, tokenizer_findings
from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Severity, input_finding
from lora_lock.hashing import FileDigest, Progress, hash_files
from lora_lock.lock.drift import compare_files
from lora_lock.lock.model import Adapter, Lock, Sourced
from lora_lock.lock.snapshot import Observed, observe, tokenizer_record
from lora_lock.lock.tokenizer_drift import facts_unreadable
from lora_lock.lock.values import FileSet
from lora_lock.runtime import lock_stack
from lora_lock.runtime.applied import CODE_RULES, facts_config, stack_findings
from lora_lock.sources.resolve import Resolved, SourceOptions, locked_source

#: The categories verify checks from the files of the locked sources.
FILE_CATEGORIES = frozenset(
    {Category.BASE, Category.TOKENIZER, Category.ADAPTER, Category.COMPAT, Category.QUANTIZATION}
)


@dataclass(frozen=True)
class Fences:
    """What the user allowed beyond the fence: symlinks out of a locked directory, sources outside the repo."""

    allow_symlinks: bool = False
    allow_outside: bool = False

    def source(
        self, section: Sourced, lock_dir: Path, what: str, *, deep: bool = False, also: Iterable[str] = ()
    ) -> Resolved:
        """The locked source ``section`` names, resolved under this run's symlink and outside-the-repo rules
        (``deep`` as :class:`~lora_lock.sources.resolve.SourceOptions` has it; a Hub snapshot must hold the
        section's locked files and ``also``)."""
        options = SourceOptions(
            deep=deep,
            also=(*section.files.paths(), *also),
            allow_symlinks=self.allow_symlinks,
            allow_outside=self.allow_outside,
        )
        return locked_source(section, lock_dir, what, options)


@dataclass(frozen=True)
class LeftOut:
    """Why an adapter is left out of the behaviour checks; ``unusable``: input kept it out (state ``error``),
    not drift that the report already shows (state ``skipped``)."""

    why: str
    hint: str
    unusable: bool


#: Compat errors with which ``PeftModel.from_pretrained`` raises: the behaviour checks cannot load the model.
LOAD_BLOCKING = frozenset(
    {"COMPAT-SHAPE", "COMPAT-NO-TARGET", "COMPAT-KIND", "COMPAT-RANK", "COMPAT-SAVED-SHAPE", "COMPAT-PEFT-REFUSES"}
)


@dataclass(frozen=True)
class WorldCheck:
    """What the file-based checks are asked to do: the lock (read from ``lock_path``), the adapters chosen, the
    categories that run, the fence, and how deep to look (``deep``: re-list Hub snapshots; ``hash_weights``:
    off compares the base's weights by size)."""

    lock: Lock
    lock_path: Path
    locked_adapters: list[Adapter]
    ran: Collection[Category]
    fences: Fences
    progress: Progress | None = None
    deep: bool = False
    hash_weights: bool = True

    @property
    def lock_dir(self) -> Path:
        """The lock's directory: every relative source in the lock resolves against it."""
        return self.lock_path.parent


@dataclass(frozen=True)
class _Opened:
    """The locked sources as opened behind the fence: the base, the tokenizer, each adapter that could be read."""

    base: Resolved
    tok: Resolved
    sources: list[tuple[str, Resolved]]


@dataclass
class _Tally:
    """What the file-based checks found so far: findings, categories unusable input blocked, adapters left out of
    the behaviour checks."""

    findings: list[Finding] = field(default_factory=list)
    blocked: set[Category] = field(default_factory=set)
    unloadable: dict[str, LeftOut] = field(default_factory=dict)


def world_findings(check: WorldCheck) -> tuple[list[Finding], set[Category], dict[str, LeftOut]]:
    """Findings of the file-based categories, the categories unusable input kept from being checked, and the
    adapters that cannot be loaded onto the base as it is now (name → why it is left out of the behaviour checks)."""
    lock, ran = check.lock, check.ran
    everything = {c for c in ran if c in FILE_CATEGORIES}
    same = _tokenizer_is_base(lock)
    try:
        # A tokenizer from the base's own commit: the cached snapshot must hold its files too, or it is fetched.
        also = lock.tokenizer.files.paths() if same else ()
        base = check.fences.source(lock.base, check.lock_dir, "base", deep=check.deep, also=also)
    except InputError as exc:
        return [input_finding(exc)], everything, {}
    tally = _Tally()
    tok = base if same else _tokenizer_source(check, tally, base)
    sources = _adapter_sources(check, tally)
    try:
        observed = _observe(check, base, tok, sources)
    except InputError as exc:
        # Something could not be read; still compare every locked file we can, so drift is never hidden by it.
        complete: set[tuple[Category, str]] = set()
        fallback = _file_findings(lock, _Opened(base, tok, sources), check.locked_adapters, ran, complete)
        checkable = set(ran) - tally.blocked
        fallback, intact = intact_categories(lock, fallback, complete, tok, check.locked_adapters, checkable)
        return [*tally.findings, *fallback, input_finding(exc)], everything - intact, tally.unloadable
    if observed.unreadable:
        _unreadable_adapters(check, tally, observed, _Opened(base, tok, sources))
    tally.findings += _observed_findings(check, observed, tally.blocked)
    _unloadable_adapters(check, tally, observed)
    if facts_unreadable(lock.tokenizer, tokenizer_record(observed, check.lock_dir, NO_FILES)):
        # The probe would load another tokenizer file, or fail to load one, and report that instead.
        name = lock.tokenizer.fingerprint_file or "tokenizer.json"
        for locked in check.locked_adapters:
            tally.unloadable.setdefault(
                locked.name,
                LeftOut(
                    f"the tokenizer's {name} is missing", "see the tokenizer findings", Category.TOKENIZER not in ran
                ),
            )
    return tally.findings, tally.blocked & set(ran), tally.unloadable


def _tokenizer_is_base(lock: Lock) -> bool:
    """Whether the lock's tokenizer comes from the base's own source and revision."""
    tok, base = lock.tokenizer, lock.base
    return (tok.source, tok.repo, tok.revision) == (base.source, base.repo, base.revision)


def _tokenizer_source(check: WorldCheck, tally: _Tally, base: Resolved) -> Resolved:
    """The tokenizer's own source; the base's when it cannot be read (the tokenizer category is then blocked)."""
    try:
        return check.fences.source(check.lock.tokenizer, check.lock_dir, "tokenizer", deep=check.deep)
    except InputError as exc:
        tally.findings.append(input_finding(exc))
        tally.blocked.add(Category.TOKENIZER)
        return base


def _adapter_sources(check: WorldCheck, tally: _Tally) -> list[tuple[str, Resolved]]:
    """The locked adapters' sources that can be opened; each one that cannot blocks adapter and compat."""
    sources: list[tuple[str, Resolved]] = []
    for locked in check.locked_adapters:
        try:
            sources.append((locked.name, check.fences.source(locked, check.lock_dir, "adapter", deep=check.deep)))
        except InputError as exc:
            tally.findings.append(input_finding(exc).for_adapter(locked.name))
            tally.blocked |= {Category.ADAPTER, Category.COMPAT}
            tally.unloadable[locked.name] = LeftOut("its source could not be read", "see the input findings", True)
    return sources


def _observe(check: WorldCheck, base: Resolved, tok: Resolved, sources: list[tuple[str, Resolved]]) -> Observed:
    """The world now, as lock-shaped data, hashing only the files of the categories that run."""
    lock, ran = check.lock, check.ran
    sections = {"base": Category.BASE, "tokenizer": Category.TOKENIZER}

    def wanted(key: tuple[str, str]) -> bool:
        return sections.get(key[0], Category.ADAPTER) in ran

    return observe(
        base,
        sources,
        tokenizer_source=tok,
        allow_symlinks=check.fences.allow_symlinks,
        deep=check.deep,
        hash_selected=wanted,
        size_only=(lambda key: key[0] == "base" and key[1].endswith(".safetensors"))
        if not check.hash_weights
        else (lambda key: False),
        progress=check.progress,
        skip_unreadable=True,
        name_findings=len(lock.adapters) > 1,  # as in a lock of several, even with --adapter
        lock_path=check.lock_path,
        transformers_version=lock.environment.versions.get("transformers"),
        # Judged by the rules of the stack the lock was made on (a 4.x lock by 4.x rules).
        stack=lock_stack(lock.environment.versions),
    )


def _unreadable_adapters(
    check: WorldCheck,
    tally: _Tally,
    observed: Observed,
    opened: _Opened,
) -> None:
    """An adapter that cannot be read blocks its own categories only; its locked files are still compared."""
    for name, error in sorted(observed.unreadable.items()):
        tally.findings.append(input_finding(error).for_adapter(name))
        tally.unloadable[name] = LeftOut("its files could not be read", "see the input findings", True)
    tally.blocked |= {Category.ADAPTER, Category.COMPAT}
    broken = [a for a in check.locked_adapters if a.name in observed.unreadable]
    tally.findings += _file_findings(check.lock, opened, broken, {Category.ADAPTER} & set(check.ran))


def _observed_findings(check: WorldCheck, observed: Observed, blocked: set[Category]) -> list[Finding]:
    """Each section of the world now compared with the lock, in report order."""
    lock, ran, lock_dir = check.lock, check.ran, check.lock_dir
    findings = base_findings(lock, observed, lock_dir, ran)
    if Category.COMPAT in ran:  # once for the lock: the rules of the stack it records
        facts = observed.base.facts
        rules = stack_findings(
            lock_stack(lock.environment.versions), facts_config(facts.architecture, facts.model_type)
        )
        findings += [f for f in rules if f.code == CODE_RULES]
    if Category.TOKENIZER in ran and Category.TOKENIZER not in blocked:
        findings += tokenizer_findings(lock, observed, lock_dir)
    if Category.COMPAT in ran or Category.ADAPTER in ran or Category.QUANTIZATION in ran:
        # The lock itself pins identity, so the "cannot confirm the named base" warning of `check` is moot here.
        findings += [
            f
            for f in observed.findings
            if f.category in ran
            and f.category is not Category.BASE  # with the base's own findings
            and f.severity is not Severity.INFO
            and f.code != "COMPAT-IDENTITY"
        ]
    for locked in check.locked_adapters:
        findings += adapter_findings(locked, observed, lock_dir, ran)
    return findings


def _unloadable_adapters(check: WorldCheck, tally: _Tally, observed: Observed) -> None:
    """The adapters PEFT cannot load onto the base as it is now: left out of the behaviour checks."""
    ran = check.ran
    for one in observed.adapters:
        name = one.name
        codes = sorted({f.code for f in one.fit.findings if f.code in LOAD_BLOCKING and f.severity is Severity.ERROR})
        if not codes:
            continue
        why = f"PEFT cannot load it onto this base ({', '.join(codes)})"
        if Category.COMPAT in ran or not {Category.EFFECT, Category.GOLDEN} & set(ran):
            tally.unloadable[name] = LeftOut(why, "see the compat findings", False)
            continue
        # The compat category that would say why was not asked for: without a word, `--skip compat` would
        # pass a run whose behaviour checks could not run at all.
        tally.findings.append(
            input_finding(
                InputError(
                    f"{why}, so its behaviour cannot be checked",
                    hint="verify the compat category too, or run `lora-lock check ADAPTER --base BASE`",
                )
            ).for_adapter(name)
        )
        tally.unloadable[name] = LeftOut(why, "see the input findings", True)


def _file_findings(
    lock: Lock,
    opened: _Opened,
    locked_adapters: list[Adapter],
    ran: Collection[Category],
    complete: set[tuple[Category, str]] | None = None,
) -> list[Finding]:
    """Digest comparison of every locked file that can still be read (the fallback when a source is unusable).
    ``complete`` receives (category, adapter name or "") of each section whose every file could be compared."""
    plan: list[tuple[Category, str, FileSet, Resolved, str]] = [
        (Category.BASE, "BASE", lock.base.files, opened.base, ""),
        (Category.TOKENIZER, "TOKENIZER", lock.tokenizer.files, opened.tok, ""),
    ]
    by_name = dict(opened.sources)
    plan += [
        (Category.ADAPTER, "ADAPTER", a.files, by_name[a.name], a.name) for a in locked_adapters if a.name in by_name
    ]
    out: list[Finding] = []
    for category, prefix, locked, source, adapter in plan:
        if category not in ran:
            continue
        current: dict[str, FileDigest] = {}
        # Only files the fence admitted when the source's file set was listed.
        listed = set(source.files)
        readable = [n for n in locked.paths() if n in listed and n not in source.known and (source.path / n).is_file()]
        try:
            digests = hash_files([source.path / n for n in readable])
        except InputError:
            continue
        if complete is not None:
            complete.add((category, adapter))
        for name in readable:
            current[name] = digests[source.path / name]
        for name, known in source.known.items():
            if name in locked:
                current[name] = known
        found = compare_files(category, prefix, locked, source.path, current, current.keys())
        out += [f.for_adapter(adapter) for f in found] if adapter else found
    return out
