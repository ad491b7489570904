"""The effect probe of models of token or class distributions (causal LMs, encoder-decoders, classifiers):
lock-time fingerprints and verify-time findings, with the gates of :mod:`.gates`.

At lock time each prompt keeps the adapter's greedy continuation, the top-k of the adapted and base passes, the
effect (KL adapted ‖ base) and the noise floor (KL batch-1 pass ‖ batched incremental decoding). At verify time the
teacher-forced passes run again over the locked ids and the gates compare the live distributions with them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Severity
from lora_lock.probe import gates
from lora_lock.probe.effect import ProbeSession, gather, kl, rounded, top_k
from lora_lock.probe.progress import Ticks


def lock_distributions(
    session: ProbeSession, name: str, encoded: list[list[int]], positions: int, k: int, ticks: Ticks
) -> tuple[dict[str, Any], list[dict[str, Any]], list[Finding]]:
    """The lock row, the sidecar fingerprints and the lock-time findings of adapter ``name``: its greedy
    continuation of ``positions`` tokens per prompt and the top-``k`` of both passes over it."""
    prints: list[dict[str, Any]] = []
    effects, noises, equal = [], [], True
    greedy = session.greedy(name, encoded, positions)
    ticks.add(len(encoded))
    items = [(ids, cont) for ids, (cont, _) in zip(encoded, greedy, strict=True)]
    scored = session.passes(name, items, ticks.tick)
    for ids, (cont, incremental), (adapted, base, bitwise) in zip(encoded, greedy, scored, strict=True):
        a_ids, a_lps = top_k(adapted, k)
        b_ids, b_lps = top_k(base, k)
        effect, noise = kl(adapted, base), kl(adapted, incremental)
        effects.append(effect)
        noises.append(noise)
        equal = equal and bitwise
        prints.append(
            {
                "prompt_ids": ids,
                "continuation": cont,
                "adapted": {"ids": a_ids, "logps": a_lps},
                "base": {"ids": b_ids, "logps": b_lps},
                "effect_kl": rounded(effect),
                "noise_kl": gates.recorded_noise(noise),
            }
        )
    effect = sum(effects) / len(effects)
    noise = gates.recorded_noise(max(noises))
    row = {
        "name": name,
        "effect-kl": rounded(effect),
        "noise-kl": rounded(noise),
        "tolerance": rounded(gates.tolerance(noise)),
    }
    if not equal and effect > gates.NONE_KL:
        return row, prints, []
    none = Finding(
        "EFFECT-NONE",
        Category.EFFECT,
        Severity.WARNING,
        f"adapter {name} has no effect on the probe prompts at lock time (KL {effect:.3g})",
        subject=name,
        hint="is the adapter trained (lora_B all zeros?) and loaded on the right modules?",
    )
    return row, prints, [none]


@dataclass(frozen=True)
class _Measured:
    """One adapter's verify-time measurements against its lock row: the effect now and at lock time, the drift of
    the adapted and base passes from the locked top-k, the drift tolerance, confident top-1 flips, the first
    changed greedy token of each prompt that diverged, the prompts the tokenizer now encodes otherwise, and whether
    adapted and base logits were bitwise equal everywhere."""

    effect: float
    locked_effect: float
    drift: float
    base_drift: float
    tolerance: float
    flips: int
    diverged: list[int]
    retokenized: int
    prompts: int
    equal: bool


def verify_distributions(
    session: ProbeSession,
    name: str,
    row: Mapping[str, Any],
    prompts: list[str],
    prints: list[Mapping[str, Any]],
    ticks: Ticks,
) -> list[Finding]:
    """Re-run the teacher-forced passes of adapter ``name`` over its locked ids and apply the gates."""
    _check_row(name, row)
    m = _measure(session, name, row, prompts, prints, ticks)
    out: list[Finding] = []
    if m.retokenized:
        out.append(
            Finding(
                "EFFECT-TOKENS",
                Category.EFFECT,
                Severity.WARNING,
                f"the tokenizer now encodes {m.retokenized} of {m.prompts} "
                "probe prompts differently; the probe used the locked token ids",
                subject=name,
                hint="see the tokenizer findings: the adapter now sees other ids for the same text",
            )
        )
    out += _effect_gate(name, m)
    out += _drift_gates(name, m, float(row["noise-kl"]))
    if not out or all(f.severity is not Severity.ERROR for f in out):
        out.append(
            Finding(
                "EFFECT-OK",
                Category.EFFECT,
                Severity.INFO,
                f"adapter {name}: effect KL {m.effect:.4g} (locked {m.locked_effect:.4g}), drift {m.drift:.2g} ≤ "
                f"{m.tolerance:.2g}",
                subject=name,
            )
        )
    return out


def _check_row(name: str, row: Mapping[str, Any]) -> None:
    """Refuse a lock row whose values are not numbers: NaN passes no comparison, so it would pass every gate."""
    for key in ("effect-kl", "noise-kl", "tolerance"):
        if not math.isfinite(float(row[key])):
            raise InputError(
                f"the lock's probe value {key} = {row[key]} for adapter {name} is not a number",
                hint="regenerate the lock (in bfloat16 or float32) to record a usable probe",
            )


def _measure(
    session: ProbeSession,
    name: str,
    row: Mapping[str, Any],
    prompts: list[str],
    prints: list[Mapping[str, Any]],
    ticks: Ticks,
) -> _Measured:
    """Score the locked prompt ids and continuations with adapter ``name`` and compare with its fingerprints."""
    effects, drifts, base_drifts, flips, diverged = [], [], [], 0, []
    equal = True
    items = [(list(fp["prompt_ids"]), list(fp["continuation"])) for fp in prints]
    retokenized = sum(1 for prompt, (ids, _) in zip(prompts, items, strict=True) if session.encode(prompt) != ids)
    scored = session.passes(name, items, ticks.tick)
    for fp, (_, cont), (adapted, base, bitwise) in zip(prints, items, scored, strict=True):
        equal = equal and bitwise
        effects.append(kl(adapted, base))
        live_a, argmax = gather(adapted, fp["adapted"]["ids"])
        # Greedy decoding follows the frozen tokens until the first position whose argmax differs, and the
        # teacher-forced pass sees exactly those prefixes: no decoding loop is needed to find the divergence. It
        # is compared with the lock's own teacher-forced top-1, so a near-tie that the batched, cached decoding
        # at lock time resolved the other way is not reported as a change.
        first = _first_difference(argmax, cont)
        then = _first_difference([ids[0] for ids in fp["adapted"]["ids"]], cont)
        if first != then:
            diverged.append(min(i for i in (first, then) if i is not None))
        live_b, _ = gather(base, fp["base"]["ids"])
        drifts.append(gates.coarse_kl(fp["adapted"]["logps"], live_a))
        base_drifts.append(gates.coarse_kl(fp["base"]["logps"], live_b))
        flips += gates.confident_flips(fp["adapted"]["ids"], fp["adapted"]["logps"], argmax)
    return _Measured(
        effect=sum(effects) / len(effects),
        locked_effect=float(row["effect-kl"]),
        drift=max(drifts),
        base_drift=max(base_drifts),
        tolerance=float(row["tolerance"]),
        flips=flips,
        diverged=diverged,
        retokenized=retokenized,
        prompts=len(prompts),
        equal=equal,
    )


def _effect_gate(name: str, m: _Measured) -> list[Finding]:
    """No effect now (a warning when there was none at lock time either), or an effect changed beyond the band."""
    effect, locked_effect, equal = m.effect, m.locked_effect, m.equal
    if equal or effect <= gates.NONE_KL:
        # An adapter that already did nothing at lock time was warned about then: unchanged, it is no new failure.
        before = locked_effect <= gates.NONE_KL
        return [
            Finding(
                "EFFECT-NONE",
                Category.EFFECT,
                Severity.WARNING if before else Severity.ERROR,
                f"adapter {name} has no effect{' (as at lock time)' if before else ' now'}: adapted and base outputs "
                f"are {'bitwise identical' if equal else 'identical within ' + format(gates.NONE_KL, 'g')} "
                f"(locked effect KL {locked_effect:.4g})",
                subject=name,
                expected=f"KL {locked_effect:.4g}",
                actual=f"KL {effect:.3g}",
                hint="likely causes: the adapter's modules no longer match the base (see compat), the adapter is "
                "disabled or not loaded, or lora_B is zero",
            )
        ]
    if locked_effect < gates.MIN_GATED_EFFECT:
        return []
    ratio = effect / locked_effect
    low, high = gates.RATIO_BAND
    if low <= ratio <= high:
        return []
    kind = "reduced" if ratio < low else "amplified"
    return [
        Finding(
            "EFFECT-CHANGED",
            Category.EFFECT,
            Severity.ERROR,
            f"adapter {name}'s effect is {kind}: KL(adapted ‖ base) {locked_effect:.4g} → {effect:.4g} "
            f"(ratio {ratio:.3g}, allowed {low}–{high})",
            subject=name,
            expected=f"{locked_effect:.4g}",
            actual=f"{effect:.4g}",
            hint="a scaling change (lora_alpha, rsLoRA, PEFT's scaling rules) or a partly matched adapter",
        )
    ]


def _drift_gates(name: str, m: _Measured, locked_noise: float) -> list[Finding]:
    """The adapted pass drifted (with its likely cause), the base pass drifted, confident top-1 flips, and the
    greedy continuations that now differ (reported, not gated)."""
    tol, effect, locked_effect = m.tolerance, m.effect, m.locked_effect
    out: list[Finding] = []
    if m.drift > tol:
        cause = (
            "the base or the stack moved too (the base pass drifted)"
            if gates.moved(m.base_drift, locked_noise)
            else "the base pass is unchanged, so the adapter itself changed"
        )
        out.append(
            Finding(
                "EFFECT-DRIFT",
                Category.EFFECT,
                Severity.ERROR,
                f"adapter {name}'s outputs drifted: KL(lock ‖ now) {m.drift:.3g} > tolerance {tol:.3g}; {cause}; "
                f"its effect now: KL(adapted ‖ base) {locked_effect:.4g} → {effect:.4g}"
                + (f" (ratio {effect / locked_effect:.3g})" if locked_effect > 0 else ""),
                subject=name,
                expected=f"≤ {tol:.3g}",
                actual=f"{m.drift:.3g}",
                hint="if the change is intended, run `lora-lock generate --from-lock` and review the behaviour",
            )
        )
    if m.base_drift > tol:
        out.append(
            Finding(
                "EFFECT-BASE-DRIFT",
                Category.EFFECT,
                Severity.WARNING,
                f"the base pass drifted for adapter {name}: KL(lock ‖ now) {m.base_drift:.3g} > {tol:.3g} (the base "
                "weights, dtype, kernels or library versions changed)",
                subject=name,
                expected=f"≤ {tol:.3g}",
                actual=f"{m.base_drift:.3g}",
            )
        )
    if m.flips:
        out.append(
            Finding(
                "EFFECT-FLIP",
                Category.EFFECT,
                Severity.ERROR,
                f"adapter {name}: {m.flips} confident top-1 prediction{'s' if m.flips != 1 else ''} changed (locked "
                f"margin ≥ {gates.CONFIDENT_MARGIN} nats)",
                subject=name,
                expected="0",
                actual=str(m.flips),
            )
        )
    if m.diverged:
        out.append(
            Finding(
                "EFFECT-GREEDY",
                Category.EFFECT,
                Severity.INFO,
                f"adapter {name}: the greedy continuation now differs on {len(m.diverged)} of {m.prompts} prompts "
                f"(first at token {min(m.diverged)}); reported, not gated",
                subject=name,
            )
        )
    return out


def _first_difference(argmax: Sequence[int], continuation: Sequence[int]) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(argmax, continuation, strict=True)) if a != b), None)
