"""What ``generate`` and ``verify`` call: one model load per group of adapters for the effect probe and the golden
set (their lock-time records and verify-time findings are in :mod:`.effect_gate` and :mod:`.golden_gate`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding
from lora_lock.lock.model import Golden, Lock, Probe
from lora_lock.probe.classify import open_session
from lora_lock.probe.effect import ProbeSession
from lora_lock.probe.effect_gate import ProbeLock, lock_probe, verify_probe
from lora_lock.probe.golden import GoldenItem
from lora_lock.probe.golden_gate import lock_golden, verify_golden
from lora_lock.probe.loaded import loaded_findings
from lora_lock.probe.sidecar import Step
from lora_lock.probe.tasks import LOADS_ALONE, split_by_task, task_of
from lora_lock.sources.fence import named_by_lock

__all__ = [
    "Behaviour",
    "ProbeLock",
    "load_groups",
    "lock_behaviour",
    "lock_golden",
    "lock_probe",
    "verify_behaviour",
    "verify_golden",
    "verify_probe",
]


# --- one model load for both -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    """What ``generate`` records of the adapters' behaviour: the probe's lock section, the golden-set results,
    and the findings of loading them with PEFT."""

    probe: ProbeLock | None
    golden: Golden | None
    findings: list[Finding]


def lock_behaviour(  # noqa: PLR0913  the keyword interface generate calls: one keyword per behaviour option
    base_dir: Path,
    tokenizer_dir: Path,
    adapters: Sequence[tuple[str, Path]],
    *,
    probe: bool,
    prompts_file: str | Path | None,
    golden: str | Path | None,
    lock_dir: Path,
    device: str,
    dtype: str,
    step: Step | None = None,
) -> Behaviour:
    """Run the probe and the golden set over every adapter (one model load per group of compatible adapters)
    and return what the lock records, with the findings. The golden file is checked before any model loads."""
    from lora_lock.probe.prompts import DEFAULT_PROMPTS, read_prompts

    prompts = read_prompts(Path(prompts_file)) if prompts_file is not None else DEFAULT_PROMPTS
    golden_path = Path(golden) if golden is not None else None
    if golden_path is not None:
        from lora_lock.probe.golden import read_golden

        read_golden(golden_path)  # fail on a bad file before loading the model
    adapters, skipped = split_by_task(adapters)
    if not adapters:
        return Behaviour(probe=None, golden=None, findings=skipped)
    probes: list[ProbeLock] = []
    goldens: list[Golden] = []
    loaded: list[Finding] = []
    for group in load_groups(adapters):
        session = open_session(base_dir, tokenizer_dir, group, device=device, dtype=dtype)
        if probe:
            probes.append(lock_probe(session, group, prompts, step=step))
        if golden_path and not session.scores_golden:
            skipped += [_golden_task(name) for name, _ in group]
        elif golden_path:
            goldens.append(lock_golden(session, group, golden_path, lock_dir, step=step))
        loaded += loaded_findings(session, group, base_dir)  # PEFT's own load result vs the static check
        del session  # one model in memory at a time
    order = {name: index for index, (name, _) in enumerate(adapters)}
    probed = _merge_probes(probes, order) if probes else None
    golden_section = _merge_goldens(goldens, order) if goldens else None
    return Behaviour(
        probe=probed, golden=golden_section, findings=skipped + (probed.findings if probed else []) + loaded
    )


def load_groups(adapters: Sequence[tuple[str, Path]]) -> list[list[tuple[str, Path]]]:
    """The adapters that can share one model load, and each adapter that needs one of its own.

    An adapter that writes into the base's own weights (trained biases, full tensors ``modules_to_save`` does
    not list, or an ``init_lora_weights`` method such as PiSSA or OLoRA, which PEFT runs again at load and which
    replaces each targeted base weight by its residual) would change what every other adapter on that model is
    measured on, and ``disable_adapter()`` does not undo it: it gets a fresh base. The grouping depends on each
    adapter alone, so ``verify --adapter NAME`` measures an adapter on the same model as the lock of all of them
    did. Init methods the probe refuses raise here, before any model loads."""
    from lora_lock.compat import writes_into_base
    from lora_lock.inspect.adapter import read_adapter
    from lora_lock.probe.preflight import rewrites_base

    shared: list[tuple[str, Path]] = []
    alone: list[list[tuple[str, Path]]] = []
    for name, path in adapters:
        adapter = read_adapter(path)
        tensors = adapter.weights.tensors.values() if adapter.weights else ()
        # A classifier loads with its own head class: it never shares a load with a language model.
        if rewrites_base(name, path) or writes_into_base(adapter.config, tensors) or task_of(path) in LOADS_ALONE:
            alone.append([(name, path)])
        else:
            shared.append((name, path))
    return ([shared] if shared else []) + alone


def _merge_goldens(sections: list[Golden], order: Mapping[str, int]) -> Golden:
    """One ``[golden]`` from the sections of several model loads: their per-adapter rows, in adapter order."""
    rows = sorted((row for section in sections for row in section.adapters), key=lambda row: order[row.name])
    return replace(sections[0], adapters=tuple(rows))


def _merge_probes(probes: list[ProbeLock], order: Mapping[str, int]) -> ProbeLock:
    """One probe result from those of several model loads: rows and fingerprints in adapter order."""
    sidecar = dict(probes[0].sidecar)
    prints = {name: p for probe in probes for name, p in probe.sidecar["adapters"].items()}
    sidecar["adapters"] = {name: prints[name] for name in sorted(prints, key=lambda n: order[n])}
    rows = sorted((row for probe in probes for row in probe.rows), key=lambda row: order[row.name])
    return replace(
        probes[0], rows=tuple(rows), sidecar=sidecar, findings=[f for probe in probes for f in probe.findings]
    )


@dataclass(frozen=True)
class _Locked:
    """What verify measures against, read before any model loads: the probe's lock section with its sidecar and
    the golden section with its items (``None``: that category does not run), and the dtype the lock records."""

    probe: tuple[Probe, dict[str, Any]] | None
    golden: tuple[Golden, tuple[list[GoldenItem], str]] | None
    dtype: str

    def categories(self) -> list[Category]:
        """The categories that run."""
        return [c for c, part in ((Category.EFFECT, self.probe), (Category.GOLDEN, self.golden)) if part is not None]


def verify_behaviour(  # noqa: PLR0913  the keyword interface verify calls: one keyword per behaviour option
    lock: Lock,
    lock_dir: Path,
    base_dir: Path,
    tokenizer_dir: Path,
    adapters: Sequence[tuple[str, Path]],
    *,
    effect: bool,
    golden: bool,
    device: str,
    max_nfr: float,
    step: Step | None = None,
    dtype: str | None = None,
) -> tuple[list[Finding], dict[Category, InputError]]:
    """Findings, and the categories that could not run with the reason. ``dtype``: score in another dtype than
    the lock records (``None``: the lock's; the probe's gates then compare across numerics, and the golden set
    exempts its unstable items). Each category's own input (the sidecar,
    the golden file) is read before the model loads, and an error in one never discards the other's findings;
    an error loading the model (raised) stops both."""
    locked, failures = _read_locked(lock, lock_dir, effect=effect, golden=golden)
    if not locked.categories():
        return [], failures
    adapters, skipped = split_by_task(adapters)
    findings: list[Finding] = list(skipped)
    groups = load_groups(adapters)
    for group in groups:
        try:
            session = open_session(
                base_dir, tokenizer_dir, group, device=device, dtype=dtype or locked.dtype, command="verify"
            )
        except InputError as exc:
            if len(groups) == 1:
                raise  # nothing was measured: the caller reports it for both categories
            # A later load failing keeps what the earlier loads found (drift still wins over unusable input).
            for category in locked.categories():
                failures.setdefault(category, exc)
            continue
        findings += _verify_group(session, group, locked, failures, max_nfr=max_nfr, step=step)
        if effect:  # PEFT's load result is an effect finding: not reported when effect was skipped
            findings += loaded_findings(session, group, base_dir)
        del session
    # A device warning is said once, however many model loads there were.
    return list(dict.fromkeys(findings)), failures


def _read_locked(
    lock: Lock, lock_dir: Path, *, effect: bool, golden: bool
) -> tuple[_Locked, dict[Category, InputError]]:
    """Each category's lock section with its own input, and the categories whose input is unusable (that
    category then does not run; the other still does). Each gate checks its rows again, since a number the
    schema admits can still be one no gate can use (NaN)."""
    from lora_lock.probe.golden import read_golden
    from lora_lock.probe.sidecar import read_sidecar

    failures: dict[Category, InputError] = {}
    section = lock.probe if effect else None
    golden_section = lock.golden if golden else None
    probe: tuple[Probe, dict[str, Any]] | None = None
    dataset: tuple[Golden, tuple[list[GoldenItem], str]] | None = None
    if section is not None:
        try:
            probe = section, read_sidecar(lock_dir / section.sidecar, str(section.sidecar_digest))
        except InputError as exc:
            failures[Category.EFFECT] = exc
    if golden_section is not None:
        try:
            items = read_golden(named_by_lock(lock_dir, golden_section.dataset, "golden dataset"))
            dataset = golden_section, items
        except InputError as exc:
            failures[Category.GOLDEN] = exc
            golden_section = None
    # A probe section whose sidecar is unusable still says the dtype the lock was made in.
    dtype = section.dtype if section is not None else golden_section.dtype if golden_section is not None else None
    return _Locked(probe=probe, golden=dataset, dtype=dtype or "auto"), failures


def _verify_group(
    session: ProbeSession,
    group: Sequence[tuple[str, Path]],
    locked: _Locked,
    failures: dict[Category, InputError],
    *,
    max_nfr: float,
    step: Step | None,
) -> list[Finding]:
    """The effect and golden findings of one model load; a category that cannot run on it is recorded in
    ``failures`` (the first reason wins) and the other still runs."""
    findings: list[Finding] = []
    if locked.probe is not None:
        section, sidecar = locked.probe
        try:
            findings += verify_probe(session, section, sidecar, group, step=step)
        except InputError as exc:
            failures.setdefault(Category.EFFECT, exc)
    if locked.golden is not None and not session.scores_golden:
        findings += [_golden_task(name) for name, _ in group]
    elif locked.golden is not None:
        golden_section, dataset = locked.golden
        try:
            findings += verify_golden(session, golden_section, dataset, group, max_nfr=max_nfr, step=step)
        except InputError as exc:
            failures.setdefault(Category.GOLDEN, exc)
    return findings


def _golden_task(name: str) -> Finding:
    """The golden set scores a causal LM's text: a classifier or encoder-decoder adapter is named, not scored."""
    from lora_lock.findings import Severity

    return Finding(
        "GOLDEN-TASK",
        Category.GOLDEN,
        Severity.WARNING,
        f"adapter {name} is not a causal language model: the golden set (generation and multiple-choice items) "
        "was not scored for it; its outputs are checked by the effect probe",
        subject=name,
    )
