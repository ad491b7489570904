"""``verify``: the lock + the world as it is now → findings, per category.

This module orchestrates: which categories run, the file-based checks (:mod:`lora_lock.commands.verify_world`),
then the behaviour checks (effect probe, golden set) on the adapters that can still be loaded.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lora_lock.commands.verify_partial import no_probe_recorded, nothing_checked
from lora_lock.commands.verify_world import FILE_CATEGORIES, Fences, LeftOut, WorldCheck, world_findings
from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Report, Severity, input_finding
from lora_lock.hashing import Progress
from lora_lock.lock.drift import environment_findings
from lora_lock.lock.io import lock_path
from lora_lock.lock.model import Adapter, Lock, read_lock
from lora_lock.probe.sidecar import Step
from lora_lock.userregex import per_run

STATIC_CATEGORIES = (
    Category.BASE,
    Category.TOKENIZER,
    Category.ADAPTER,
    Category.COMPAT,
    Category.QUANTIZATION,
    Category.ENVIRONMENT,
)


@per_run
def verify(  # noqa: PLR0913  the documented keyword options of the public API
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
    try:
        lock = read_lock(path)
    except InputError as exc:
        return Report.build([input_finding(exc)], ran=(), title="lora-lock verify")
    title = f"lora-lock verify {path.name}"
    plan = _plan(lock, path, only, skip, adapters)
    if isinstance(plan, InputError):
        return Report.build([input_finding(plan)], ran=(), title=title)
    fences = Fences(allow_symlinks, allow_outside_sources)
    findings = list(plan.notes)
    ran = list(plan.ran)
    if Category.ENVIRONMENT in ran:
        findings += environment_findings(lock.environment)
    blocked: set[Category] = set()
    unloadable: dict[str, LeftOut] = {}
    if FILE_CATEGORIES & set(ran):
        world, blocked, unloadable = world_findings(
            WorldCheck(lock, path, plan.locked_adapters, ran, fences, progress, deep, hash_weights)
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
    if any(c in (Category.EFFECT, Category.GOLDEN) for c in ran):
        probe = _Probe(lock, path.parent, device, max_nfr, probe_step, fences)
        ran, more = _behaviour_step(probe, plan.locked_adapters, unloadable, ran, blocked)
        findings += more
    if not ran:
        findings.append(input_finding(nothing_checked(plan.cats)))
    return Report.build(
        dict.fromkeys(findings),  # one line per finding: a source two categories failed to read is named once
        ran=ran,
        skipped=[c for c in Category if c not in ran and c is not Category.INPUT],
        title=title,
        blocked=blocked,
    )


@dataclass(frozen=True)
class _Plan:
    """What a verify run checks: the categories asked for (``cats``), those the lock records (``ran``), the
    adapters chosen, and the notes the report opens with."""

    cats: list[Category]
    ran: list[Category]
    locked_adapters: list[Adapter]
    notes: list[Finding]


def _plan(
    lock: Lock,
    path: Path,
    only: Collection[Category] | None,
    skip: Collection[Category],
    adapters: Collection[str] | None,
) -> _Plan | InputError:
    """The categories and adapters to check, or why the options leave nothing to check."""
    wanted = set(only) if only else set(Category) - {Category.INPUT}
    cats: list[Category] = [c for c in Category if c in wanted and c not in skip and c is not Category.INPUT]
    recorded = {Category.EFFECT: lock.probe is not None, Category.GOLDEN: lock.golden is not None}
    unsupported = [c for c in cats if not recorded.get(c, True)]
    ran: list[Category] = [c for c in cats if c not in unsupported]
    notes = [no_probe_recorded()] if Category.EFFECT in unsupported and only is None else []
    if not cats:
        chosen = f"--only {','.join(c.value for c in Category if c in wanted)} with " if only else ""
        return InputError(
            f"{chosen}--skip {','.join(c.value for c in Category if c in skip)} leaves no category to check"
        )
    if not ran:
        asked = ", ".join(c.value for c in cats)
        return InputError(
            f"{path}: nothing to verify: the categories asked for ({asked}) are not recorded in this lock",
            hint="the effect and golden checks need a lock generated with the probe / --golden; drop --only",
        )
    locked_adapters = list(lock.adapters)
    if adapters is not None:
        names = set(lock.adapter_names())
        unknown = sorted(set(adapters) - names)
        if unknown:
            return InputError(
                f"{path}: no adapter named {', '.join(unknown)} in the lock",
                hint=f"the lock has {', '.join(sorted(names))}",
            )
        locked_adapters = [a for a in locked_adapters if a.name in adapters]
    return _Plan(cats, ran, locked_adapters, notes)


@dataclass(frozen=True)
class _Probe:
    """How the behaviour checks run: the lock and its directory, the device, the golden set's bound on the rate
    of newly failing items, the progress step, and the fence."""

    lock: Lock
    lock_dir: Path
    device: str
    max_nfr: float | None
    step: Step | None
    fences: Fences


def _behaviour_step(
    probe: _Probe,
    locked_adapters: list[Adapter],
    unloadable: Mapping[str, LeftOut],
    ran: list[Category],
    blocked: set[Category],
) -> tuple[list[Category], list[Finding]]:
    """The behaviour checks on the adapters that can be loaded; the categories that ran after them, and their
    findings. ``blocked`` receives the categories unusable input kept from running."""
    behaviour = [c for c in ran if c in (Category.EFFECT, Category.GOLDEN)]
    findings: list[Finding] = []
    # An adapter that cannot be loaded onto this base keeps only itself out of the behaviour checks.
    loadable = [a for a in locked_adapters if a.name not in unloadable]
    for name, left_out in sorted(unloadable.items()):
        findings += [_not_run(c, f"were not run for adapter {name}: {left_out.why}", left_out.hint) for c in behaviour]
        if left_out.unusable:
            blocked |= set(behaviour)
    if (
        not loadable
    ):  # nothing ran: skipped (drift elsewhere says why), or error where unusable input kept it from running
        return [c for c in ran if c not in behaviour or c in blocked], findings
    more, not_run, broken = _behaviour_findings(probe, loadable, behaviour)
    blocked |= broken
    return [c for c in ran if c not in not_run], findings + more


def _behaviour_findings(
    probe: _Probe, locked_adapters: list[Adapter], cats: Sequence[Category]
) -> tuple[list[Finding], Sequence[Category], set[Category]]:
    """The effect probe and the golden set, with one model load (the probe layer imports torch, not us).

    Also the categories not run because the probe stack is not installed (``skipped``), and those that unusable
    input kept from running (``error``)."""
    from lora_lock.errors import ProbeUnavailableError

    lock, lock_dir, fences = probe.lock, probe.lock_dir, probe.fences
    try:
        from lora_lock.probe.effect import require_probe_stack

        require_probe_stack(without="--skip effect,golden")
        base = fences.source(lock.base, lock_dir, "base")
        tok = (
            fences.source(lock.tokenizer, lock_dir, "tokenizer")
            if lock.tokenizer.source is not None or lock.tokenizer.repo is not None
            else base
        )
        adapters = [(a.name, fences.source(a, lock_dir, "adapter").path) for a in locked_adapters]
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
            device=probe.device,
            max_nfr=DEFAULT_MAX_NFR if probe.max_nfr is None else probe.max_nfr,
            step=probe.step,
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
