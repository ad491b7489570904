"""``verify``: the lock + the world as it is now → findings, per category."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.commands.verify_partial import intact_categories, lock_path, no_probe_recorded, nothing_checked
from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Report, Severity, input_finding
from lora_lock.hashing import Progress, hash_files
from lora_lock.lock.drift import REGENERATE, compare_files, compare_values, environment_findings
from lora_lock.lock.io import read
from lora_lock.lock.module_table import aligned
from lora_lock.lock.rows import row_text, rows_by_pattern
from lora_lock.lock.snapshot import Observed, adapter_section, base_section, observe, tokenizer_section
from lora_lock.lock.tokenizer_drift import fact_findings, facts_unreadable
from lora_lock.probe.sidecar import Step
from lora_lock.runtime import lock_stack
from lora_lock.runtime.applied import CODE_RULES, facts_config, stack_findings
from lora_lock.sources.resolve import Resolved, locked_source
from lora_lock.userregex import per_run

STATIC_CATEGORIES = (
    Category.BASE,
    Category.TOKENIZER,
    Category.ADAPTER,
    Category.COMPAT,
    Category.QUANTIZATION,
    Category.ENVIRONMENT,
)


def _base_findings(
    lock: Mapping[str, Any], observed: Observed, lock_dir: Path, cats: Collection[Category]
) -> list[Finding]:
    locked, now = lock["base"], base_section(observed, lock_dir)
    out: list[Finding] = []
    if Category.BASE in cats:
        out += compare_files(
            Category.BASE, "BASE", locked["files"], observed.base.source.path, now["files"], observed.present["base"]
        )
        out += [f for f in observed.findings if f.category is Category.BASE]
        out += compare_values(
            "BASE-CONFIG",
            Category.BASE,
            "base config",
            locked["config"],
            now["config"],
            hint="the base model is not the one the adapter was locked to; " + REGENERATE,
        )
    if Category.QUANTIZATION in cats:
        out += compare_values(
            "QUANT-DTYPE", Category.QUANTIZATION, "config", {"dtype": locked.get("dtype")}, {"dtype": now.get("dtype")}
        )
        if locked["weights-dtypes"] != now["weights-dtypes"]:
            then, today = _dtype_counts(locked["weights-dtypes"]), _dtype_counts(now["weights-dtypes"])
            out.append(
                Finding(
                    "QUANT-DTYPE",
                    Category.QUANTIZATION,
                    Severity.ERROR,
                    f"the base's stored tensor dtypes changed: {then} → {today}",
                    subject="weights-dtypes",
                    expected=then,
                    actual=today,
                    hint="the weights were converted or re-quantized; " + REGENERATE,
                )
            )
        out += compare_values(
            "QUANT-FORMAT",
            Category.QUANTIZATION,
            "quantization",
            locked["quantization"],
            now["quantization"],
            hint="a base quantized differently changes the adapter's numerics; " + REGENERATE,
        )
    return out


def _dtype_counts(counts: Mapping[str, int]) -> str:
    """``{"F32": 21}`` → ``"F32 ×21 tensors"``."""
    return ", ".join(f"{dtype} ×{n}" for dtype, n in sorted(counts.items())) + " tensors" if counts else "no tensors"


def _tokenizer_findings(lock: Mapping[str, Any], observed: Observed, lock_dir: Path) -> list[Finding]:
    locked, now = lock["tokenizer"], tokenizer_section(observed, lock_dir)
    files = compare_files(
        Category.TOKENIZER,
        "TOKENIZER",
        locked["files"],
        observed.tokenizer_source.path,
        now["files"],
        observed.present["tokenizer"],
    )
    return fact_findings(locked, now, files)


def _adapter_findings(
    locked: Mapping[str, Any], observed: Observed, lock_dir: Path, cats: Collection[Category]
) -> list[Finding]:
    name = locked["name"]
    match = next(((s, a, r) for n, s, a, r in observed.adapters if n == name), None)
    if match is None:
        return []
    source, adapter, result = match
    now = adapter_section(observed, name, source, adapter, result, lock_dir)
    out: list[Finding] = []
    if Category.ADAPTER in cats:
        out += [
            f.for_adapter(name)
            for f in compare_files(
                Category.ADAPTER,
                "ADAPTER",
                locked["files"],
                adapter.root,
                now["files"],
                observed.present.get(f"adapter:{name}", ()),
            )
        ]
        out += [
            f.for_adapter(name)
            for f in compare_values(
                "ADAPTER-SETTINGS", Category.ADAPTER, "adapter setting", locked["settings"], now["settings"]
            )
        ]
    if Category.COMPAT in cats:
        # Several rows share a pattern when its layers differ (rank_pattern): compare each pattern's rows, in
        # runtime names, or in checkpoint names for a lock written before it recorded runtime names.
        locked_rows, now_rows = aligned(locked, now)
        old, new = rows_by_pattern(locked_rows), rows_by_pattern(now_rows)
        for pattern in sorted(set(old) | set(new)):
            if old.get(pattern, []) != new.get(pattern, []):  # whole rows: `quantized` counts too
                then, today = _rows(old.get(pattern, [])), _rows(new.get(pattern, []))
                out.append(
                    Finding(
                        "COMPAT-MODULES",
                        Category.COMPAT,
                        Severity.ERROR,
                        f"{pattern}: the resolved module changed: {then} → {today}",
                        subject=pattern,
                        expected=then,
                        actual=today,
                        hint=REGENERATE,
                    ).for_adapter(name)
                )
    return out


def _rows(rows: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(row_text(row) for row in rows) if rows else "absent"


@per_run
def verify(
    lockfile: str | Path = "lora.lock",
    *,
    only: Collection[Category] | None = None,
    skip: Collection[Category] = (),
    adapters: Collection[str] | None = None,
    allow_symlinks: bool = False,
    allow_outside_sources: bool = False,
    deep: bool = False,
    hash_weights: bool = True,
    device: str = "auto",
    max_nfr: float | None = None,
    progress: Progress | None = None,
    probe_step: Step | None = None,
) -> Report:
    """Re-check everything the lock pins. Unusable input becomes ``input`` findings (exit 2 unless drift found).

    Nothing outside the lock's repository is opened (a source there is unusable input) unless
    ``allow_outside_sources``; symlinks leading out of a locked directory are refused unless ``allow_symlinks``.

    ``effect`` and ``golden`` run when the lock has a ``[probe]`` / ``[golden]`` section and the probe stack
    (torch, transformers, peft) is installed; otherwise they are reported as not run, never silently skipped.
    """
    path = lock_path(lockfile)
    if max_nfr is not None and not 0.0 <= max_nfr <= 1.0:  # also refuses NaN
        err = InputError(f"--max-nfr {max_nfr}: expected a rate from 0 to 1 (0.05 means 5 %)")
        return Report.build([input_finding(err)], ran=(), title="lora-lock verify")
    wanted = set(only) if only else set(Category) - {Category.INPUT}
    cats = [c for c in Category if c in wanted and c not in skip and c is not Category.INPUT]
    try:
        lock = read(path)
    except InputError as exc:
        return Report.build([input_finding(exc)], ran=(), title="lora-lock verify")
    title = f"lora-lock verify {path.name}"
    findings: list[Finding] = []
    sections = {Category.EFFECT: "probe", Category.GOLDEN: "golden"}
    unsupported = [c for c in cats if c in sections and sections[c] not in lock]
    ran = [c for c in cats if c not in unsupported]
    if Category.EFFECT in unsupported and only is None:
        findings.append(no_probe_recorded())
    blocked: set[Category] = set()
    if not cats:
        chosen = f"--only {','.join(c.value for c in Category if c in wanted)} with " if only else ""
        err = InputError(
            f"{chosen}--skip {','.join(c.value for c in Category if c in skip)} leaves no category to check"
        )
        return Report.build([input_finding(err)], ran=(), title=f"lora-lock verify {path.name}")
    if not ran:
        asked = ", ".join(c.value for c in cats)
        err = InputError(
            f"{path}: nothing to verify: the categories asked for ({asked}) are not recorded in this lock",
            hint="the effect and golden checks need a lock generated with the probe / --golden; drop --only",
        )
        return Report.build([input_finding(err)], ran=(), title=f"lora-lock verify {path.name}")
    locked_adapters = list(lock["adapter"])
    if adapters is not None:
        names = {a["name"] for a in locked_adapters}
        unknown = sorted(set(adapters) - names)
        if unknown:
            err = InputError(
                f"{path}: no adapter named {', '.join(unknown)} in the lock",
                hint=f"the lock has {', '.join(sorted(names))}",
            )
            return Report.build([input_finding(err)], ran=(), title=title)
        locked_adapters = [a for a in locked_adapters if a["name"] in adapters]

    if Category.ENVIRONMENT in ran:
        findings += environment_findings(lock["environment"])
    file_cats = {Category.BASE, Category.TOKENIZER, Category.ADAPTER, Category.COMPAT, Category.QUANTIZATION}
    unloadable: dict[str, LeftOut] = {}
    if file_cats & set(ran):
        world, blocked, unloadable = _world_findings(
            lock,
            path,
            locked_adapters,
            ran,
            Fences(allow_symlinks, allow_outside_sources),
            progress,
            deep,
            hash_weights,
        )
        findings += world
        if not hash_weights and Category.BASE in ran:
            findings.append(
                Finding(
                    "BASE-SIZE-ONLY",
                    Category.BASE,
                    Severity.INFO,
                    "base weight files were compared by size (and headers, via the compat check), not re-hashed",
                    hint="run a full `lora-lock verify` (in CI) to prove the weight bytes",
                )
            )
    behaviour = [c for c in ran if c in (Category.EFFECT, Category.GOLDEN)]
    if behaviour:
        # An adapter that cannot be loaded onto this base keeps only itself out of the behaviour checks.
        loadable = [a for a in locked_adapters if a["name"] not in unloadable]
        for name, left_out in sorted(unloadable.items()):
            findings += [
                _not_run(c, f"were not run for adapter {name}: {left_out.why}", left_out.hint) for c in behaviour
            ]
            if left_out.unusable:
                blocked |= set(behaviour)
        if loadable:
            more, not_run, broken = _behaviour_findings(
                lock,
                path.parent,
                loadable,
                behaviour,
                device,
                max_nfr,
                probe_step,
                Fences(allow_symlinks, allow_outside_sources),
            )
            findings += more
            ran = [c for c in ran if c not in not_run]
            blocked |= broken
        else:  # nothing ran: skipped (drift elsewhere says why), or error where unusable input kept it from running
            ran = [c for c in ran if c not in behaviour or c in blocked]
    if not ran:
        findings.append(input_finding(nothing_checked(cats)))
    return Report.build(
        dict.fromkeys(findings),  # one line per finding: a source two categories failed to read is named once
        ran=ran,
        skipped=[c for c in Category if c not in ran and c is not Category.INPUT],
        title=title,
        blocked=blocked,
    )


@dataclass(frozen=True)
class Fences:
    """What the user allowed beyond the fence: symlinks out of a locked directory, sources outside the repo."""

    allow_symlinks: bool = False
    allow_outside: bool = False

    def source(self, fields: Mapping[str, Any], lock_dir: Path, what: str, **options: Any) -> Resolved:
        return locked_source(
            fields, lock_dir, what, allow_symlinks=self.allow_symlinks, allow_outside=self.allow_outside, **options
        )


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


def _behaviour_findings(
    lock: Mapping[str, Any],
    lock_dir: Path,
    locked_adapters: list[Mapping[str, Any]],
    cats: Sequence[Category],
    device: str,
    max_nfr: float | None,
    step: Step | None,
    fences: Fences,
) -> tuple[list[Finding], Sequence[Category], set[Category]]:
    """The effect probe and the golden set, with one model load (the probe layer imports torch, not us).

    Also the categories not run because the probe stack is not installed (``skipped``), and those that unusable
    input kept from running (``error``)."""
    from lora_lock.errors import ProbeUnavailableError

    try:
        from lora_lock.probe.effect import require_probe_stack

        require_probe_stack(without="--skip effect,golden")
        base = fences.source(lock["base"], lock_dir, "base")
        tok = (
            fences.source(lock["tokenizer"], lock_dir, "tokenizer")
            if "source" in lock["tokenizer"] or "repo" in lock["tokenizer"]
            else base
        )
        adapters = [(str(a["name"]), fences.source(a, lock_dir, "adapter").path) for a in locked_adapters]
        from lora_lock.probe.api import verify_behaviour
        from lora_lock.probe.golden import DEFAULT_MAX_NFR

        found, failures = verify_behaviour(
            lock,
            lock_dir,
            base.path,
            tok.path,
            adapters,
            effect=Category.EFFECT in cats,
            golden=Category.GOLDEN in cats,
            device=device,
            max_nfr=DEFAULT_MAX_NFR if max_nfr is None else max_nfr,
            step=step,
        )
    except ProbeUnavailableError as exc:
        return [_not_run(c, f"were not run: {exc.message}", exc.hint) for c in cats], cats, set()
    except InputError as exc:
        return _could_not_run(cats, exc), [], set(cats)
    for cat, error in failures.items():
        found += [_not_run(cat, f"could not run: {error.message}", error.hint), input_finding(error)]
    return found, [], set(failures)


def _could_not_run(cats: Sequence[Category], error: InputError) -> list[Finding]:
    return [_not_run(c, f"could not run: {error.message}", error.hint) for c in cats] + [input_finding(error)]


def _not_run(cat: Category, why: str, hint: str | None) -> Finding:
    return Finding(f"{cat.value.upper()}-NOT-RUN", cat, Severity.WARNING, f"the {cat.value} checks {why}", hint=hint)


def _world_findings(
    lock: Mapping[str, Any],
    lock_path: Path,
    locked_adapters: list[Mapping[str, Any]],
    ran: Collection[Category],
    fences: Fences,
    progress: Progress | None,
    deep: bool = False,
    hash_weights: bool = True,
) -> tuple[list[Finding], set[Category], dict[str, LeftOut]]:
    """Findings of the file-based categories, the categories unusable input kept from being checked, and the
    adapters that cannot be loaded onto the base as it is now (name → why it is left out of the behaviour checks)."""
    lock_dir = lock_path.parent
    file_cats = {Category.BASE, Category.TOKENIZER, Category.ADAPTER, Category.COMPAT, Category.QUANTIZATION}
    everything = file_cats & set(ran)
    tok_fields = lock["tokenizer"]
    same = {k: tok_fields.get(k) for k in ("source", "repo", "revision")} == {
        k: lock["base"].get(k) for k in ("source", "repo", "revision")
    }
    try:
        # A tokenizer from the base's own commit: the cached snapshot must hold its files too, or it is fetched.
        also = tok_fields.get("files", {}) if same else ()
        base = fences.source(lock["base"], lock_dir, "base", deep=deep, also=also)
    except InputError as exc:
        return [input_finding(exc)], everything, {}
    findings: list[Finding] = []
    blocked: set[Category] = set()
    unloadable: dict[str, LeftOut] = {}
    tok = base
    if not same:
        try:
            tok = fences.source(tok_fields, lock_dir, "tokenizer", deep=deep)
        except InputError as exc:
            findings.append(input_finding(exc))
            blocked.add(Category.TOKENIZER)
    sources: list[tuple[str, Resolved]] = []
    for locked in locked_adapters:
        try:
            sources.append((str(locked["name"]), fences.source(locked, lock_dir, "adapter", deep=deep)))
        except InputError as exc:
            findings.append(input_finding(exc).for_adapter(str(locked["name"])))
            blocked |= {Category.ADAPTER, Category.COMPAT}
            unloadable[str(locked["name"])] = LeftOut("its source could not be read", "see the input findings", True)
    sections = {"base": Category.BASE, "tokenizer": Category.TOKENIZER}

    def wanted(key: tuple[str, str]) -> bool:
        return sections.get(key[0], Category.ADAPTER) in ran

    try:
        observed = observe(
            base,
            sources,
            tokenizer_source=tok,
            allow_symlinks=fences.allow_symlinks,
            deep=deep,
            hash_selected=wanted,
            size_only=(lambda key: key[0] == "base" and key[1].endswith(".safetensors"))
            if not hash_weights
            else (lambda key: False),
            progress=progress,
            skip_unreadable=True,
            name_findings=len(lock["adapter"]) > 1,  # as in a lock of several, even with --adapter
            lock_path=lock_path,
            transformers_version=lock["environment"]["versions"].get("transformers"),
            # Judged by the rules of the stack the lock was made on (a 4.x lock by 4.x rules).
            stack=lock_stack(lock["environment"]),
        )
    except InputError as exc:
        # Something could not be read; still compare every locked file we can, so drift is never hidden by it.
        complete: set[tuple[Category, str]] = set()
        fallback = _file_findings(lock, base, tok, sources, locked_adapters, ran, complete)
        fallback, intact = intact_categories(lock, fallback, complete, tok, locked_adapters, blocked, ran)
        return [*findings, *fallback, input_finding(exc)], everything - intact, unloadable
    if observed.unreadable:
        # An adapter that cannot be read blocks its own categories only; its locked files are still compared.
        for name, error in sorted(observed.unreadable.items()):
            findings.append(input_finding(error).for_adapter(name))
            unloadable[name] = LeftOut("its files could not be read", "see the input findings", True)
        blocked |= {Category.ADAPTER, Category.COMPAT}
        broken = [a for a in locked_adapters if a["name"] in observed.unreadable]
        findings += _file_findings(lock, base, tok, sources, broken, {Category.ADAPTER} & set(ran))
    findings += _base_findings(lock, observed, lock_dir, ran)
    if Category.COMPAT in ran:  # once for the lock: the rules of the stack it records
        facts = observed.base.facts
        rules = stack_findings(lock_stack(lock["environment"]), facts_config(facts.architecture, facts.model_type))
        findings += [f for f in rules if f.code == CODE_RULES]
    if Category.TOKENIZER in ran and Category.TOKENIZER not in blocked:
        findings += _tokenizer_findings(lock, observed, lock_dir)
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
    for locked in locked_adapters:
        findings += _adapter_findings(locked, observed, lock_dir, ran)
    for name, _, _, fitted in observed.adapters:
        codes = sorted({f.code for f in fitted.findings if f.code in LOAD_BLOCKING and f.severity is Severity.ERROR})
        if not codes:
            continue
        why = f"PEFT cannot load it onto this base ({', '.join(codes)})"
        if Category.COMPAT in ran or not {Category.EFFECT, Category.GOLDEN} & set(ran):
            unloadable[name] = LeftOut(why, "see the compat findings", False)
        else:
            # The compat category that would say why was not asked for: without a word, `--skip compat` would
            # pass a run whose behaviour checks could not run at all.
            findings.append(
                input_finding(
                    InputError(
                        f"{why}, so its behaviour cannot be checked",
                        hint="verify the compat category too, or run `lora-lock check ADAPTER --base BASE`",
                    )
                ).for_adapter(name)
            )
            unloadable[name] = LeftOut(why, "see the input findings", True)
    if facts_unreadable(lock["tokenizer"], tokenizer_section(observed, lock_dir)):
        # The probe would load another tokenizer file, or fail to load one, and report that instead.
        name = str(lock["tokenizer"].get("fingerprint-file", "tokenizer.json"))
        for locked in locked_adapters:
            unloadable.setdefault(
                str(locked["name"]),
                LeftOut(
                    f"the tokenizer's {name} is missing", "see the tokenizer findings", Category.TOKENIZER not in ran
                ),
            )
    return findings, blocked & set(ran), unloadable


def _file_findings(
    lock: Mapping[str, Any],
    base: Resolved,
    tok: Resolved,
    sources: list[tuple[str, Resolved]],
    locked_adapters: list[Mapping[str, Any]],
    ran: Collection[Category],
    complete: set[tuple[Category, str]] | None = None,
) -> list[Finding]:
    """Digest comparison of every locked file that can still be read (the fallback when a source is unusable).
    ``complete`` receives (category, adapter name or "") of each section whose every file could be compared."""
    plan: list[tuple[Category, str, Mapping[str, Any], Resolved, str]] = [
        (Category.BASE, "BASE", lock["base"]["files"], base, ""),
        (Category.TOKENIZER, "TOKENIZER", lock["tokenizer"]["files"], tok, ""),
    ]
    by_name = dict(sources)
    plan += [
        (Category.ADAPTER, "ADAPTER", a["files"], by_name[a["name"]], str(a["name"]))
        for a in locked_adapters
        if a["name"] in by_name
    ]
    out: list[Finding] = []
    for category, prefix, locked, source, adapter in plan:
        if category not in ran:
            continue
        current: dict[str, dict[str, Any]] = {}
        # Only files the fence admitted when the source's file set was listed.
        listed = set(source.files)
        readable = [n for n in locked if n in listed and n not in source.known and (source.path / n).is_file()]
        try:
            digests = hash_files([source.path / n for n in readable])
        except InputError:
            continue
        if complete is not None:
            complete.add((category, adapter))
        for name in readable:
            current[name] = {"digest": digests[source.path / name].digest, "size": digests[source.path / name].size}
        for name, known in source.known.items():
            if name in locked:
                current[name] = {"digest": known.digest, "size": known.size}
        found = compare_files(category, prefix, locked, source.path, current, current.keys())
        out += [f.for_adapter(adapter) for f in found] if adapter else found
    return out
