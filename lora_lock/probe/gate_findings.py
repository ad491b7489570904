"""The lock rows and findings that the gates of :mod:`.distribution_gate` and :mod:`.embed_gate` share.

Both probes gate the same quantities (an effect adapted against base, a drift of the adapted and of the base side
from the lock, confident flips) and differ in the measure: KL of distributions, or distance of embeddings. A
:class:`Measure` carries what differs (the lock fields, the thresholds, the words of the findings) so that the lock
row, the steps of a verify run and their findings are written once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Severity
from lora_lock.lock.model import ProbeRow
from lora_lock.probe import gates
from lora_lock.probe.effect import rounded


@dataclass(frozen=True)
class Measure:
    """What one probe measures: its lock fields, its thresholds and the words its findings use."""

    key: str  # the sidecar fingerprint's fields effect_<key> and noise_<key>
    #: The lock row of (adapter name, mean effect, recorded noise floor, drift tolerance).
    record: Callable[[str, float, float, float], ProbeRow]
    #: A lock row's effect, noise floor and tolerance, by lock key, for :func:`locked_figures`.
    figures: Callable[[ProbeRow], dict[str, float | None]]
    unit: str  # the measure's name before a figure ("KL 0.01")
    tolerance: Callable[[float], float]  # the drift tolerance for a recorded noise floor
    none: float  # an effect at or below this is no effect
    min_gated: float  # a locked effect below this is too small for a meaningful ratio
    band: tuple[float, float]  # the live/locked effect ratios allowed
    probed: str  # what the lock-time effect is measured on
    outputs: str  # what drifts, in the drift and no-effect findings
    base: str  # the base side, in the drift findings
    base_unchanged: str  # the cause named when the base side did not move
    effect: str  # the effect, in the drift finding
    changed: str  # the effect, in the effect-changed finding
    drift: str  # the drift, in the drift findings
    ok: str  # the effect, in the all-clear finding
    flips: str  # the flip finding's text: a template of the count {n} and its plural {s}
    tokens_hint: str | None  # the hint of the re-tokenized prompts' finding
    drift_ratio: bool  # whether the drift finding adds the ratio of the effects


@dataclass(frozen=True)
class Live:
    """One adapter's verify-time measurements: the mean effect, the largest drift of the adapted and of the base
    side from the lock, the confident flips, the prompts the tokenizer now encodes otherwise out of all, and
    whether adapted and base were bitwise equal on every prompt."""

    effect: float
    drift: float
    base_drift: float
    flips: int
    retokenized: int
    prompts: int
    equal: bool


@dataclass(frozen=True)
class Locked:
    """What the lock row recorded, checked to be finite numbers: the effect, the noise floor and the drift
    tolerance."""

    effect: float
    noise: float
    tolerance: float


@dataclass
class LockTally:
    """One adapter's lock-time measurements, prompt by prompt: the sidecar fingerprints, the effects, the noise
    floors and whether adapted and base were bitwise equal on every prompt so far."""

    measure: Measure
    prints: list[dict[str, Any]] = field(default_factory=list)
    effects: list[float] = field(default_factory=list)
    noises: list[float] = field(default_factory=list)
    equal: bool = True

    def add(self, ids: list[int], effect: float, noise: float, bitwise: bool, **fields: Any) -> None:
        """Record one prompt: its fingerprint holds its ``ids``, then ``fields``, then its effect and noise."""
        key = self.measure.key
        self.effects.append(effect)
        self.noises.append(noise)
        self.equal = self.equal and bitwise
        self.prints.append(
            {"prompt_ids": ids, **fields, f"effect_{key}": rounded(effect), f"noise_{key}": gates.recorded_noise(noise)}
        )

    def row(self, name: str) -> tuple[ProbeRow, float]:
        """The lock row of adapter ``name`` (the mean effect, the recorded noise floor and the tolerance it
        gives) and the mean effect."""
        effect = sum(self.effects) / len(self.effects)
        noise = gates.recorded_noise(max(self.noises))
        row = self.measure.record(name, rounded(effect), rounded(noise), rounded(self.measure.tolerance(noise)))
        return row, effect


def none_at_lock(name: str, measure: Measure, effect: float) -> Finding:
    """The lock-time warning for an adapter with no measurable effect."""
    return Finding(
        "EFFECT-NONE",
        Category.EFFECT,
        Severity.WARNING,
        f"adapter {name} has no effect on {measure.probed} at lock time ({measure.unit} {effect:.3g})",
        subject=name,
        hint="is the adapter trained (lora_B all zeros?) and loaded on the right modules?",
    )


def retokenized(session: Any, prompts: Sequence[str], locked_ids: Sequence[Sequence[int]]) -> int:
    """How many prompts the tokenizer of ``session`` now encodes otherwise than the locked ids."""
    return sum(1 for prompt, ids in zip(prompts, locked_ids, strict=True) if session.encode(prompt) != ids)


def locked_figures(name: str, row: ProbeRow, measure: Measure, hint: str | None = None) -> Locked:
    """The lock row's effect, noise floor and tolerance, refused with ``hint`` when one is absent or not a finite
    number: NaN passes no comparison, so it would pass every gate."""
    figures = measure.figures(row)
    for key, value in figures.items():
        if value is None or isinstance(value, bool) or not math.isfinite(value):
            raise InputError(f"the lock's probe value {key} = {value} for adapter {name} is not a number", hint=hint)
    effect, noise, tolerance = (float(v) for v in figures.values() if v is not None)
    return Locked(effect, noise, tolerance)


def verify_findings(
    name: str, locked: Locked, live: Live, measure: Measure, extra: Sequence[Finding] = ()
) -> list[Finding]:
    """The verify-time findings of adapter ``name``: re-tokenized prompts, the effect gate, the drift gates, then
    ``extra`` (the probe's own findings) and, when none of them is an error, the all-clear."""
    out = _retokenized(name, live, measure)
    out += _effect_gate(name, live, locked, measure)
    out += _drift_gates(name, live, locked, measure)
    out += extra
    if all(f.severity is not Severity.ERROR for f in out):
        out.append(
            Finding(
                "EFFECT-OK",
                Category.EFFECT,
                Severity.INFO,
                f"adapter {name}: {measure.ok} {live.effect:.4g} (locked {locked.effect:.4g}), drift "
                f"{live.drift:.2g} ≤ {locked.tolerance:.2g}",
                subject=name,
            )
        )
    return out


def _retokenized(name: str, live: Live, measure: Measure) -> list[Finding]:
    """A warning when the tokenizer encodes probe prompts otherwise: the probe ran on the locked ids regardless."""
    if not live.retokenized:
        return []
    return [
        Finding(
            "EFFECT-TOKENS",
            Category.EFFECT,
            Severity.WARNING,
            f"the tokenizer now encodes {live.retokenized} of {live.prompts} probe prompts differently; the probe "
            "used the locked token ids",
            subject=name,
            hint=measure.tokens_hint,
        )
    ]


def _effect_gate(name: str, live: Live, locked: Locked, measure: Measure) -> list[Finding]:
    """No effect now (a warning when there was none at lock time either), or an effect changed beyond the band."""
    effect, unit = live.effect, measure.unit
    if live.equal or effect <= measure.none:
        # An adapter that already did nothing at lock time was warned about then: unchanged, it is no new failure.
        before = locked.effect <= measure.none
        within = "bitwise identical" if live.equal else "identical within " + format(measure.none, "g")
        return [
            Finding(
                "EFFECT-NONE",
                Category.EFFECT,
                Severity.WARNING if before else Severity.ERROR,
                f"adapter {name} has no effect{' (as at lock time)' if before else ' now'}: adapted and base "
                f"{measure.outputs} are {within} (locked effect {unit} {locked.effect:.4g})",
                subject=name,
                expected=f"{unit} {locked.effect:.4g}",
                actual=f"{unit} {effect:.3g}",
                hint="likely causes: the adapter's modules no longer match the base (see compat), the adapter is "
                "disabled or not loaded, or lora_B is zero",
            )
        ]
    if locked.effect < measure.min_gated:
        return []
    ratio = effect / locked.effect
    low, high = measure.band
    if low <= ratio <= high:
        return []
    return [
        Finding(
            "EFFECT-CHANGED",
            Category.EFFECT,
            Severity.ERROR,
            f"adapter {name}'s effect is {'reduced' if ratio < low else 'amplified'}: {measure.changed} "
            f"{locked.effect:.4g} → {effect:.4g} (ratio {ratio:.3g}, allowed {low:.3g}–{high:.3g})",
            subject=name,
            expected=f"{locked.effect:.4g}",
            actual=f"{effect:.4g}",
            hint="a scaling change (lora_alpha, rsLoRA, PEFT's scaling rules) or a partly matched adapter",
        )
    ]


def _drift_gates(name: str, live: Live, locked: Locked, measure: Measure) -> list[Finding]:
    """The adapted side drifted (with its likely cause), the base side drifted, and confident flips."""
    tol = locked.tolerance
    out: list[Finding] = []
    if live.drift > tol:
        out.append(_drift(name, live, locked, measure))
    if live.base_drift > tol:
        out.append(
            Finding(
                "EFFECT-BASE-DRIFT",
                Category.EFFECT,
                Severity.WARNING,
                f"{measure.base} drifted for adapter {name}: {measure.drift} {live.base_drift:.3g} > {tol:.3g} "
                "(the base weights, dtype, kernels or library versions changed)",
                subject=name,
                expected=f"≤ {tol:.3g}",
                actual=f"{live.base_drift:.3g}",
            )
        )
    if live.flips:
        out.append(
            Finding(
                "EFFECT-FLIP",
                Category.EFFECT,
                Severity.ERROR,
                f"adapter {name}: " + measure.flips.format(n=live.flips, s="s" if live.flips != 1 else ""),
                subject=name,
                expected="0",
                actual=str(live.flips),
            )
        )
    return out


def _drift(name: str, live: Live, locked: Locked, measure: Measure) -> Finding:
    """The adapted side drifted beyond the tolerance: the base side moving too points at the stack, else at the
    adapter."""
    tol = locked.tolerance
    # The cause uses the looser noise test, not the tolerance: a base that moved at all is worth naming.
    cause = (
        f"the base or the stack moved too ({measure.base} drifted)"
        if gates.moved(live.base_drift, locked.noise)
        else measure.base_unchanged
    )
    ratio = f" (ratio {live.effect / locked.effect:.3g})" if measure.drift_ratio and locked.effect > 0 else ""
    return Finding(
        "EFFECT-DRIFT",
        Category.EFFECT,
        Severity.ERROR,
        f"adapter {name}'s {measure.outputs} drifted: {measure.drift} {live.drift:.3g} > tolerance {tol:.3g}; "
        f"{cause}; its effect now: {measure.effect} {locked.effect:.4g} → {live.effect:.4g}{ratio}",
        subject=name,
        expected=f"≤ {tol:.3g}",
        actual=f"{live.drift:.3g}",
        hint="if the change is intended, run `lora-lock generate --from-lock` and review the behaviour",
    )
