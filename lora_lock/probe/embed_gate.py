"""The effect probe of embedding models (PEFT ``FEATURE_EXTRACTION``): lock-time fingerprints and verify-time
findings, the gates of :mod:`.gates` carried over from distributions to vectors.

Each probe prompt gives one embedding (:mod:`.embed`). Distances are relative L2, ``‖x − ref‖ / ‖ref‖``: it bounds
the cosine change (``1 − cos ≤ d²/2``) and it also sees a change of norm, which dot-product retrieval sees.

- **no effect**: adapted and base hidden states bitwise equal on every prompt, or the mean distance between the
  adapted and the base embedding ≤ :data:`NONE_DISTANCE`.
- **effect changed**: live/locked effect ratio outside :data:`RATIO_BAND`. A distance moves linearly with a scale
  change where KL moves quadratically, so the band is the square root of the KL band: the same scale changes fail.
- **drift**: distance of the live adapted embedding to the locked one above ``tolerance(noise)``:
  ``NOISE_FACTOR`` × the noise measured at lock time (batch 1 against one padded batch), within [:data:`FLOOR`,
  :data:`CAP`]. The base embeddings drifting is reported apart (a warning), and tells the two causes apart.
- **confident flips**: prompts whose nearest other prompt (cosine, adapted embeddings) led the runner-up by
  ≥ :data:`CONFIDENT_MARGIN` at lock time and is another prompt now: the retrieval order the adapter gives
  changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Severity
from lora_lock.probe import gates
from lora_lock.probe.effect import rounded

NONE_DISTANCE = 1e-8
RATIO_BAND = (math.sqrt(gates.RATIO_BAND[0]), math.sqrt(gates.RATIO_BAND[1]))
FLOOR = 1e-3
CAP = 5e-2
CONFIDENT_MARGIN = 0.02
MIN_GATED_EFFECT = 1e-4  # below this the locked effect is too small for a meaningful ratio

Vector = Sequence[float]


def distance(x: Vector, ref: Vector) -> float:
    """Relative L2 distance ``‖x − ref‖ / ‖ref‖`` (in float64; the absolute distance when ``ref`` is zero)."""
    diff = math.sqrt(sum((a - b) ** 2 for a, b in zip(x, ref, strict=True)))
    norm = math.sqrt(sum(b * b for b in ref))
    return diff / norm if norm > 0 else diff


def tolerance(noise: float) -> float:
    """The drift tolerance for a recorded noise distance: ten times the noise, kept within [FLOOR, CAP] (an
    unmeasured, NaN noise counts as none)."""
    if math.isnan(noise):
        noise = 0.0
    return min(CAP, max(FLOOR, gates.NOISE_FACTOR * noise))


def neighbours(vectors: Sequence[Vector]) -> list[tuple[int, float]]:
    """Per vector: the index of its nearest other vector by cosine (ties to the lower index) and its lead over
    the runner-up (``inf`` when there is no runner-up). Empty for fewer than two vectors."""
    norms = [math.sqrt(sum(v * v for v in x)) or 1.0 for x in vectors]
    out: list[tuple[int, float]] = []
    for i, x in enumerate(vectors):
        sims = sorted(
            ((-sum(a * b for a, b in zip(x, y, strict=True)) / (norms[i] * norms[j]), j))
            for j, y in enumerate(vectors)
            if j != i
        )
        if not sims:
            return []
        lead = sims[1][0] - sims[0][0] if len(sims) > 1 else math.inf
        out.append((sims[0][1], lead))
    return out


def confident_flips(locked: Sequence[Vector], live: Sequence[Vector]) -> int:
    """How many prompts whose nearest other prompt led by ≥ :data:`CONFIDENT_MARGIN` at lock time have another
    nearest prompt now."""
    then, now = neighbours(locked), neighbours(live)
    return sum(1 for (j, lead), (k, _) in zip(then, now, strict=True) if lead >= CONFIDENT_MARGIN and j != k)


def lock_embedding(
    session: Any, name: str, encoded: list[list[int]], tick: Any
) -> tuple[dict[str, Any], list[dict[str, Any]], list[Finding]]:
    """The lock row, the sidecar fingerprints and the lock-time findings of one ``FEATURE_EXTRACTION`` adapter.
    ``session`` is an :class:`~lora_lock.probe.embed.EmbeddingSession`; ``tick`` the progress counter."""
    from lora_lock.probe.embed import POOLING

    batched = [[float(v) for v in e.tolist()] for e in session.batched(name, encoded)]
    tick.add(len(encoded))
    prints: list[dict[str, Any]] = []
    effects, noises, equal = [], [], True
    for ids, incremental, (adapted, base, bitwise) in zip(
        encoded, batched, session.embeddings(name, encoded, tick.tick), strict=True
    ):
        a, b = [float(v) for v in adapted.tolist()], [float(v) for v in base.tolist()]
        effect, noise = distance(a, b), distance(incremental, a)
        effects.append(effect)
        noises.append(noise)
        equal = equal and bitwise
        prints.append(
            {
                "prompt_ids": ids,
                "adapted": {"embedding": [rounded(v) for v in a]},
                "base": {"embedding": [rounded(v) for v in b]},
                "effect_distance": rounded(effect),
                "noise_distance": gates.recorded_noise(noise),
            }
        )
    effect = sum(effects) / len(effects)
    noise = gates.recorded_noise(max(noises))
    row = {
        "name": name,
        "embedding": POOLING,
        "effect-distance": rounded(effect),
        "noise-distance": rounded(noise),
        "tolerance": rounded(tolerance(noise)),
    }
    findings = []
    if equal or effect <= NONE_DISTANCE:
        findings.append(
            Finding(
                "EFFECT-NONE",
                Category.EFFECT,
                Severity.WARNING,
                f"adapter {name} has no effect on the probe prompts' embeddings at lock time (distance {effect:.3g})",
                subject=name,
                hint="is the adapter trained (lora_B all zeros?) and loaded on the right modules?",
            )
        )
    return row, prints, findings


def _check_row(name: str, row: Mapping[str, Any], prints: Sequence[Mapping[str, Any]]) -> None:
    """Refuse what no gate can compare: another pooling, a non-finite value, embeddings of unequal sizes."""
    from lora_lock.probe.embed import POOLING

    if row.get("embedding") != POOLING:
        raise InputError(
            f"the lock's probe of adapter {name} measured the embedding {row.get('embedding')!r}; this lora-lock "
            f"measures {POOLING!r}",
            hint="regenerate the lock with this lora-lock",
        )
    for key in ("effect-distance", "noise-distance", "tolerance"):
        value = row.get(key)
        # NaN passes no comparison, so it would pass every gate.
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise InputError(f"the lock's probe value {key} = {value} for adapter {name} is not a number")
    if not all("embedding" in fp["adapted"] and "embedding" in fp["base"] for fp in prints):
        raise InputError(
            f"the lock's probe fingerprints of adapter {name} are not embeddings, as its lock row says",
            hint="the file was not written by lora-lock generate; regenerate the lock",
        )
    sizes = {len(fp[side]["embedding"]) for fp in prints for side in ("adapted", "base")}
    values = (v for fp in prints for side in ("adapted", "base") for v in fp[side]["embedding"])
    if len(sizes) != 1 or not all(math.isfinite(float(v)) for v in values):
        raise InputError(
            f"the lock's probe fingerprints of adapter {name} hold embeddings of unequal sizes or values that are "
            "not numbers",
            hint="the file was not written by lora-lock generate; regenerate the lock",
        )


@dataclass(frozen=True)
class _Measured:
    """One adapter's verify-time distances against its lock row: the effect now and at lock time, the drift of the
    adapted and base embeddings from the locked ones, the drift tolerance, the confident nearest-prompt flips, the
    prompts the tokenizer now encodes otherwise, and whether adapted and base were bitwise equal everywhere."""

    effect: float
    locked_effect: float
    drift: float
    base_drift: float
    tolerance: float
    flips: int
    retokenized: int
    prompts: int
    equal: bool


def verify_embedding(
    session: Any,
    name: str,
    row: Mapping[str, Any],
    prompts: list[str],
    prints: Sequence[Mapping[str, Any]],
    tick: Any,
) -> list[Finding]:
    """Re-embed the locked prompt ids with adapter ``name`` and apply the gates above."""
    _check_row(name, row, prints)
    m = _measure(session, name, row, prompts, prints, tick)
    out: list[Finding] = []
    if m.retokenized:
        out.append(
            Finding(
                "EFFECT-TOKENS",
                Category.EFFECT,
                Severity.WARNING,
                f"the tokenizer now encodes {m.retokenized} of {m.prompts} probe prompts differently; the probe "
                "used the locked token ids",
                subject=name,
            )
        )
    out += _effect_gate(name, m)
    out += _drift_gates(name, m, float(row["noise-distance"]))
    if all(f.severity is not Severity.ERROR for f in out):
        out.append(
            Finding(
                "EFFECT-OK",
                Category.EFFECT,
                Severity.INFO,
                f"adapter {name}: embedding distance {m.effect:.4g} (locked {m.locked_effect:.4g}), drift "
                f"{m.drift:.2g} ≤ {m.tolerance:.2g}",
                subject=name,
            )
        )
    return out


def _measure(
    session: Any,
    name: str,
    row: Mapping[str, Any],
    prompts: list[str],
    prints: Sequence[Mapping[str, Any]],
    tick: Any,
) -> _Measured:
    """Embed the locked prompt ids with adapter ``name`` and compare with its locked embeddings."""
    items = [[int(i) for i in fp["prompt_ids"]] for fp in prints]
    width = len(prints[0]["adapted"]["embedding"])
    retokenized = sum(1 for prompt, ids in zip(prompts, items, strict=True) if session.encode(prompt) != ids)
    live = session.embeddings(name, items, tick.tick)
    if any(int(a.shape[-1]) != width for a, _, _ in live):
        raise InputError(
            f"the lock's embeddings of adapter {name} have {width} dimensions; the model's now have "
            f"{int(live[0][0].shape[-1])}",
            hint="the base changed since the lock (see the base findings)",
        )
    adapted = [[float(v) for v in a.tolist()] for a, _, _ in live]
    base = [[float(v) for v in b.tolist()] for _, b, _ in live]
    locked_a = [list(fp["adapted"]["embedding"]) for fp in prints]
    return _Measured(
        effect=sum(distance(a, b) for a, b in zip(adapted, base, strict=True)) / len(prints),
        locked_effect=float(row["effect-distance"]),
        drift=max(distance(now, then) for now, then in zip(adapted, locked_a, strict=True)),
        base_drift=max(distance(now, list(fp["base"]["embedding"])) for now, fp in zip(base, prints, strict=True)),
        tolerance=float(row["tolerance"]),
        flips=confident_flips(locked_a, adapted),
        retokenized=retokenized,
        prompts=len(prints),
        equal=all(bitwise for _, _, bitwise in live),
    )


def _effect_gate(name: str, m: _Measured) -> list[Finding]:
    """No effect now (a warning when there was none at lock time either), or an effect changed beyond the band."""
    effect, locked_effect, equal = m.effect, m.locked_effect, m.equal
    if equal or effect <= NONE_DISTANCE:
        before = locked_effect <= NONE_DISTANCE
        return [
            Finding(
                "EFFECT-NONE",
                Category.EFFECT,
                Severity.WARNING if before else Severity.ERROR,
                f"adapter {name} has no effect{' (as at lock time)' if before else ' now'}: adapted and base "
                f"embeddings are {'bitwise identical' if equal else 'identical within ' + format(NONE_DISTANCE, 'g')}"
                f" (locked effect distance {locked_effect:.4g})",
                subject=name,
                expected=f"distance {locked_effect:.4g}",
                actual=f"distance {effect:.3g}",
                hint="likely causes: the adapter's modules no longer match the base (see compat), the adapter is "
                "disabled or not loaded, or lora_B is zero",
            )
        ]
    if locked_effect < MIN_GATED_EFFECT:
        return []
    ratio = effect / locked_effect
    low, high = RATIO_BAND
    if low <= ratio <= high:
        return []
    return [
        Finding(
            "EFFECT-CHANGED",
            Category.EFFECT,
            Severity.ERROR,
            f"adapter {name}'s effect is {'reduced' if ratio < low else 'amplified'}: embedding distance "
            f"(adapted to base) {locked_effect:.4g} → {effect:.4g} (ratio {ratio:.3g}, allowed "
            f"{low:.3g}–{high:.3g})",
            subject=name,
            expected=f"{locked_effect:.4g}",
            actual=f"{effect:.4g}",
            hint="a scaling change (lora_alpha, rsLoRA, PEFT's scaling rules) or a partly matched adapter",
        )
    ]


def _drift_gates(name: str, m: _Measured, locked_noise: float) -> list[Finding]:
    """The adapted embeddings drifted (with the likely cause), the base embeddings drifted, and confident
    nearest-prompt flips."""
    tol = m.tolerance
    out: list[Finding] = []
    if m.drift > tol:
        cause = (
            "the base or the stack moved too (the base embeddings drifted)"
            if gates.moved(m.base_drift, locked_noise)
            else "the base embeddings are unchanged, so the adapter itself changed"
        )
        out.append(
            Finding(
                "EFFECT-DRIFT",
                Category.EFFECT,
                Severity.ERROR,
                f"adapter {name}'s embeddings drifted: distance (lock to now) {m.drift:.3g} > tolerance {tol:.3g}; "
                f"{cause}; its effect now: distance (adapted to base) {m.locked_effect:.4g} → {m.effect:.4g}",
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
                f"the base embeddings drifted for adapter {name}: distance (lock to now) {m.base_drift:.3g} > "
                f"{tol:.3g} (the base weights, dtype, kernels or library versions changed)",
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
                f"adapter {name}: the nearest other prompt of {m.flips} prompt{'s' if m.flips != 1 else ''} changed "
                f"(locked cosine lead ≥ {CONFIDENT_MARGIN})",
                subject=name,
                expected="0",
                actual=str(m.flips),
            )
        )
    return out
