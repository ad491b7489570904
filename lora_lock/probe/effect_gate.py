"""The effect probe's lock-time fingerprints and verify-time findings (the gates are in :mod:`.gates`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Severity
from lora_lock.probe import gates
from lora_lock.probe.effect import ProbeSession, gather, kl, rounded, top_k
from lora_lock.probe.embed import EmbeddingSession
from lora_lock.probe.embed_gate import lock_embedding, verify_embedding
from lora_lock.probe.prompts import prompts_digest
from lora_lock.probe.sidecar import SIDECAR_FORMAT, Step

DEFAULT_POSITIONS = 16
DEFAULT_TOP_K = 8


@dataclass(frozen=True)
class ProbeLock:
    """The probe's result at lock time: the lock's ``[probe]`` table, the sidecar of fingerprints, findings."""

    section: dict[str, Any]  # the lock's [probe] table, without the sidecar reference (the caller adds it)
    sidecar: dict[str, Any]
    findings: list[Finding]


def lock_probe(
    session: ProbeSession,
    adapters: Sequence[tuple[str, Path]],
    prompts: tuple[str, ...],
    *,
    positions: int = DEFAULT_POSITIONS,
    k: int = DEFAULT_TOP_K,
    step: Step | None = None,
) -> ProbeLock:
    """Fingerprint each adapter on ``prompts``: its greedy continuation, top-``k`` of the adapted and base passes,
    the effect (mean KL adapted ‖ base) and the noise floor; a finding for an adapter with no measurable effect."""
    runtime = session.runtime()
    encoded = [session.encode(p) for p in prompts]
    per_adapter: dict[str, list[dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    findings: list[Finding] = []
    # Progress in forwards' worth: the batched decoding costs about as much as the P adapted passes.
    ticks = _Ticks(step, len(adapters) * 3 * len(prompts))
    for name, _ in adapters:
        if isinstance(session, EmbeddingSession):  # vectors, not distributions: gates of their own
            row, per_adapter[name], found = lock_embedding(session, name, encoded, ticks)
            rows.append(row)
            findings += found
            continue
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
        per_adapter[name] = prints
        effect = sum(effects) / len(effects)
        noise = gates.recorded_noise(max(noises))
        rows.append(
            {
                "name": name,
                "effect-kl": rounded(effect),
                "noise-kl": rounded(noise),
                "tolerance": rounded(gates.tolerance(noise)),
            }
        )
        if equal or effect <= gates.NONE_KL:
            findings.append(
                Finding(
                    "EFFECT-NONE",
                    Category.EFFECT,
                    Severity.WARNING,
                    f"adapter {name} has no effect on the probe prompts at lock time (KL {effect:.3g})",
                    subject=name,
                    hint="is the adapter trained (lora_B all zeros?) and loaded on the right modules?",
                )
            )
    section: dict[str, Any] = {
        "prompts": len(prompts),
        "prompts-digest": prompts_digest(prompts),
        "positions": positions,
        "top-k": k,
        "device": runtime.device,
        "dtype": runtime.dtype,
        "attn-implementation": runtime.attn_implementation,
        "torch": runtime.torch,
        "adapter": rows,
    }
    if runtime.cuda:
        section["cuda"] = runtime.cuda
    if runtime.gpu:
        section["gpu"] = runtime.gpu
    sidecar = {"format": SIDECAR_FORMAT, "prompts": list(prompts), "adapters": per_adapter}
    return ProbeLock(section=section, sidecar=sidecar, findings=findings)


def _finding(
    code: str,
    severity: Severity,
    message: str,
    subject: str,
    *,
    expected: str | None = None,
    actual: str | None = None,
    hint: str | None = None,
) -> Finding:
    return Finding(
        code, Category.EFFECT, severity, message, subject=subject, expected=expected, actual=actual, hint=hint
    )


def verify_probe(
    session: ProbeSession,
    section: Mapping[str, Any],
    sidecar: Mapping[str, Any],
    adapters: Sequence[tuple[str, Path]],
    *,
    step: Step | None = None,
) -> list[Finding]:
    """Re-run the probe on today's stack and apply the gates (see :mod:`lora_lock.probe.gates`)."""
    runtime = session.runtime()
    findings: list[Finding] = []
    if runtime.device != section["device"]:
        findings.append(
            _finding(
                "EFFECT-DEVICE",
                Severity.WARNING,
                f"the probe was locked on {section['device']} and runs on "
                f"{runtime.device} now: numerics differ, the tolerances were measured on {section['device']}",
                "device",
                expected=str(section["device"]),
                actual=runtime.device,
                hint="verify on the same kind of device the lock was generated on",
            )
        )
    attn = section.get("attn-implementation")
    if attn is not None and attn != runtime.attn_implementation:
        findings.append(
            _finding(
                "EFFECT-ATTN",
                Severity.WARNING,
                f"the probe was locked with the {attn} attention kernel and runs with "
                f"{runtime.attn_implementation} now: numerics differ, the tolerances were measured with {attn}",
                "attn-implementation",
                expected=str(attn),
                actual=runtime.attn_implementation,
                hint="the transformers default kernel changed (or the model config sets another); pin the "
                "transformers version the lock records, or regenerate the lock",
            )
        )
    prompts: list[str] = list(sidecar["prompts"])
    rows = {r["name"]: r for r in section["adapter"]}
    ticks = _Ticks(step, len(adapters) * 2 * len(prompts))
    for name, _ in adapters:
        row = rows.get(name)
        prints = sidecar["adapters"].get(name)
        if row is None or prints is None:
            findings.append(
                _finding(
                    "EFFECT-NOT-LOCKED",
                    Severity.WARNING,
                    f"adapter {name} has no probe fingerprint in the lock",
                    name,
                    hint="regenerate the lock with the probe on",
                )
            )
            ticks.add(2 * len(prompts))
            continue
        embedded = "embedding" in row or "effect-distance" in row
        if not embedded and any("embedding" in fp["adapted"] for fp in prints):
            raise InputError(
                f"the lock's probe fingerprints of adapter {name} are embeddings, its lock row is not",
                hint="the file was not written by lora-lock generate; regenerate the lock",
            )
        if embedded != isinstance(session, EmbeddingSession):
            kind = "an embedding model" if embedded else "a model of token or class distributions"
            raise InputError(
                f"adapter {name} was probed as {kind} at lock time and is not one now (its task_type changed)",
                hint="regenerate the lock for the adapter as it is now",
            )
        with session.fits(f"the probe of adapter {name}"):  # a value no check foresaw is unusable input too
            if embedded:
                findings += verify_embedding(session, name, row, prompts, prints, ticks)
            else:
                findings += _verify_adapter(session, name, row, prompts, prints, ticks)
    return findings


class _Ticks:
    """Progress for a :data:`Step` callback, counted in units of work."""

    def __init__(self, step: Step | None, total: int) -> None:
        self.step, self.total, self.done = step, total, 0

    def add(self, n: int) -> None:
        self.done += n
        if self.step is not None:
            self.step(self.done, self.total)

    def tick(self) -> None:
        self.add(1)


def _verify_adapter(
    session: ProbeSession,
    name: str,
    row: Mapping[str, Any],
    prompts: list[str],
    prints: list[Mapping[str, Any]],
    ticks: _Ticks,
) -> list[Finding]:
    out: list[Finding] = []
    for key in ("effect-kl", "noise-kl", "tolerance"):
        if not math.isfinite(float(row[key])):  # NaN passes no comparison, so it would pass every gate
            raise InputError(
                f"the lock's probe value {key} = {row[key]} for adapter {name} is not a number",
                hint="regenerate the lock (in bfloat16 or float32) to record a usable probe",
            )
    tol = float(row["tolerance"])
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
    locked_effect = float(row["effect-kl"])
    effect = sum(effects) / len(effects)
    drift, base_drift = max(drifts), max(base_drifts)
    n = len(prompts)
    if retokenized:
        out.append(
            _finding(
                "EFFECT-TOKENS",
                Severity.WARNING,
                f"the tokenizer now encodes {retokenized} of {n} "
                "probe prompts differently; the probe used the locked token ids",
                name,
                hint="see the tokenizer findings: the adapter now sees other ids for the same text",
            )
        )
    if equal or effect <= gates.NONE_KL:
        # An adapter that already did nothing at lock time was warned about then: unchanged, it is no new failure.
        before = locked_effect <= gates.NONE_KL
        out.append(
            _finding(
                "EFFECT-NONE",
                Severity.WARNING if before else Severity.ERROR,
                f"adapter {name} has no effect{' (as at lock time)' if before else ' now'}: adapted and base outputs "
                f"are {'bitwise identical' if equal else 'identical within ' + format(gates.NONE_KL, 'g')} "
                f"(locked effect KL {locked_effect:.4g})",
                name,
                expected=f"KL {locked_effect:.4g}",
                actual=f"KL {effect:.3g}",
                hint="likely causes: the adapter's modules no longer match the base (see compat), the adapter is "
                "disabled or not loaded, or lora_B is zero",
            )
        )
    elif locked_effect >= gates.MIN_GATED_EFFECT:
        ratio = effect / locked_effect
        low, high = gates.RATIO_BAND
        if not low <= ratio <= high:
            kind = "reduced" if ratio < low else "amplified"
            out.append(
                _finding(
                    "EFFECT-CHANGED",
                    Severity.ERROR,
                    f"adapter {name}'s effect is {kind}: KL(adapted ‖ base) {locked_effect:.4g} → {effect:.4g} "
                    f"(ratio {ratio:.3g}, allowed {low}–{high})",
                    name,
                    expected=f"{locked_effect:.4g}",
                    actual=f"{effect:.4g}",
                    hint="a scaling change (lora_alpha, rsLoRA, PEFT's scaling rules) or a partly matched adapter",
                )
            )
    if drift > tol:
        cause = (
            "the base or the stack moved too (the base pass drifted)"
            if gates.moved(base_drift, float(row["noise-kl"]))
            else "the base pass is unchanged, so the adapter itself changed"
        )
        out.append(
            _finding(
                "EFFECT-DRIFT",
                Severity.ERROR,
                f"adapter {name}'s outputs drifted: KL(lock ‖ now) {drift:.3g} > tolerance {tol:.3g}; {cause}; "
                f"its effect now: KL(adapted ‖ base) {locked_effect:.4g} → {effect:.4g}"
                + (f" (ratio {effect / locked_effect:.3g})" if locked_effect > 0 else ""),
                name,
                expected=f"≤ {tol:.3g}",
                actual=f"{drift:.3g}",
                hint="if the change is intended, run `lora-lock generate --from-lock` and review the behaviour",
            )
        )
    if base_drift > tol:
        out.append(
            _finding(
                "EFFECT-BASE-DRIFT",
                Severity.WARNING,
                f"the base pass drifted for adapter {name}: KL(lock ‖ now) {base_drift:.3g} > {tol:.3g} (the base "
                "weights, dtype, kernels or library versions changed)",
                name,
                expected=f"≤ {tol:.3g}",
                actual=f"{base_drift:.3g}",
            )
        )
    if flips:
        out.append(
            _finding(
                "EFFECT-FLIP",
                Severity.ERROR,
                f"adapter {name}: {flips} confident top-1 prediction{'s' if flips != 1 else ''} changed (locked "
                f"margin ≥ {gates.CONFIDENT_MARGIN} nats)",
                name,
                expected="0",
                actual=str(flips),
            )
        )
    if diverged:
        out.append(
            _finding(
                "EFFECT-GREEDY",
                Severity.INFO,
                f"adapter {name}: the greedy continuation now differs on {len(diverged)} of {n} prompts (first at "
                f"token {min(diverged)}); reported, not gated",
                name,
            )
        )
    if not out or all(f.severity is not Severity.ERROR for f in out):
        out.append(
            _finding(
                "EFFECT-OK",
                Severity.INFO,
                f"adapter {name}: effect KL {effect:.4g} (locked {locked_effect:.4g}), drift {drift:.2g} ≤ {tol:.2g}",
                name,
            )
        )
    return out


def _first_difference(argmax: Sequence[int], continuation: Sequence[int]) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(argmax, continuation, strict=True)) if a != b), None)
