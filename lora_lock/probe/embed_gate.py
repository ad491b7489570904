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
from typing import Any

from lora_lock.errors import InputError
from lora_lock.findings import Finding
from lora_lock.lock.model import ProbeRow
from lora_lock.probe import gates
from lora_lock.probe.effect import rounded
from lora_lock.probe.embed import POOLING
from lora_lock.probe.gate_findings import (
    Live,
    Locked,
    LockTally,
    Measure,
    locked_figures,
    none_at_lock,
    retokenized,
    verify_findings,
)

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
    return gates.tolerance(noise, floor=FLOOR, cap=CAP)


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


def _row(name: str, effect: float, noise: float, tolerance: float) -> ProbeRow:
    return ProbeRow(name=name, embedding=POOLING, effect_distance=effect, noise_distance=noise, tolerance=tolerance)


def _figures(row: ProbeRow) -> dict[str, float | None]:
    return {"effect-distance": row.effect_distance, "noise-distance": row.noise_distance, "tolerance": row.tolerance}


#: The distance gates' measure: the lock fields ``effect-distance`` and ``noise-distance`` and the words of their
#: findings.
MEASURE = Measure(
    key="distance",
    record=_row,
    figures=_figures,
    unit="distance",
    tolerance=tolerance,
    none=NONE_DISTANCE,
    min_gated=MIN_GATED_EFFECT,
    band=RATIO_BAND,
    probed="the probe prompts' embeddings",
    outputs="embeddings",
    base="the base embeddings",
    base_unchanged="the base embeddings are unchanged, so the adapter itself changed",
    effect="distance (adapted to base)",
    changed="embedding distance (adapted to base)",
    drift="distance (lock to now)",
    ok="embedding distance",
    flips=f"the nearest other prompt of {{n}} prompt{{s}} changed (locked cosine lead ≥ {CONFIDENT_MARGIN})",
    tokens_hint=None,
    drift_ratio=False,
)


def lock_embedding(
    session: Any, name: str, encoded: list[list[int]], tick: Any
) -> tuple[ProbeRow, list[dict[str, Any]], list[Finding]]:
    """The lock row, the sidecar fingerprints and the lock-time findings of one ``FEATURE_EXTRACTION`` adapter.
    ``session`` is an :class:`~lora_lock.probe.embed.EmbeddingSession`; ``tick`` the progress counter."""
    batched = [[float(v) for v in e.tolist()] for e in session.batched(name, encoded)]
    tick.add(len(encoded))
    tally = LockTally(MEASURE)
    for ids, incremental, (adapted, base, bitwise) in zip(
        encoded, batched, session.embeddings(name, encoded, tick.tick), strict=True
    ):
        a, b = [float(v) for v in adapted.tolist()], [float(v) for v in base.tolist()]
        sides = {"adapted": {"embedding": [rounded(v) for v in a]}, "base": {"embedding": [rounded(v) for v in b]}}
        tally.add(ids, distance(a, b), distance(incremental, a), bitwise, **sides)
    row, effect = tally.row(name)
    none = tally.equal or effect <= NONE_DISTANCE
    return row, tally.prints, [none_at_lock(name, MEASURE, effect)] if none else []


def _check_row(name: str, row: ProbeRow, prints: Sequence[Mapping[str, Any]]) -> Locked:
    """The row's figures; refused when no gate can compare them: another pooling, a non-finite value,
    embeddings of unequal sizes."""
    if row.embedding != POOLING:
        raise InputError(
            f"the lock's probe of adapter {name} measured the embedding {row.embedding!r}; this lora-lock "
            f"measures {POOLING!r}",
            hint="regenerate the lock with this lora-lock",
        )
    locked = locked_figures(name, row, MEASURE)
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
    return locked


def verify_embedding(
    session: Any,
    name: str,
    row: ProbeRow,
    prompts: list[str],
    prints: Sequence[Mapping[str, Any]],
    tick: Any,
) -> list[Finding]:
    """Re-embed the locked prompt ids with adapter ``name`` and apply the gates above."""
    locked = _check_row(name, row, prints)
    return verify_findings(name, locked, _measure(session, name, prompts, prints, tick), MEASURE)


def _measure(session: Any, name: str, prompts: list[str], prints: Sequence[Mapping[str, Any]], tick: Any) -> Live:
    """Embed the locked prompt ids with adapter ``name`` and compare with its locked embeddings."""
    items = [[int(i) for i in fp["prompt_ids"]] for fp in prints]
    width = len(prints[0]["adapted"]["embedding"])
    changed = retokenized(session, prompts, items)
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
    return Live(
        effect=sum(distance(a, b) for a, b in zip(adapted, base, strict=True)) / len(prints),
        drift=max(distance(now, then) for now, then in zip(adapted, locked_a, strict=True)),
        base_drift=max(distance(now, list(fp["base"]["embedding"])) for now, fp in zip(base, prints, strict=True)),
        flips=confident_flips(locked_a, adapted),
        retokenized=changed,
        prompts=len(prints),
        equal=all(bitwise for _, _, bitwise in live),
    )
