"""The effect probe of models of token or class distributions (causal LMs, encoder-decoders, classifiers):
lock-time fingerprints and verify-time findings, with the gates of :mod:`.gates`.

At lock time each prompt keeps the adapter's greedy continuation, the top-k of the adapted and base passes, the
effect (KL adapted ‖ base) and the noise floor (KL batch-1 pass ‖ batched incremental decoding). At verify time the
teacher-forced passes run again over the locked ids and the gates compare the live distributions with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lora_lock.findings import Category, Finding, Severity
from lora_lock.lock.model import ProbeRow
from lora_lock.probe import gates
from lora_lock.probe.effect import ProbeSession, gather, kl, top_k
from lora_lock.probe.gate_findings import (
    Live,
    LockTally,
    Measure,
    locked_figures,
    none_at_lock,
    retokenized,
    verify_findings,
)
from lora_lock.probe.progress import Ticks


def _row(name: str, effect: float, noise: float, tolerance: float) -> ProbeRow:
    return ProbeRow(name=name, effect_kl=effect, noise_kl=noise, tolerance=tolerance)


def _figures(row: ProbeRow) -> dict[str, float | None]:
    return {"effect-kl": row.effect_kl, "noise-kl": row.noise_kl, "tolerance": row.tolerance}


#: The KL gates' measure: the lock fields ``effect-kl`` and ``noise-kl`` and the words of their findings.
MEASURE = Measure(
    key="kl",
    record=_row,
    figures=_figures,
    unit="KL",
    tolerance=gates.tolerance,
    none=gates.NONE_KL,
    min_gated=gates.MIN_GATED_EFFECT,
    band=gates.RATIO_BAND,
    probed="the probe prompts",
    outputs="outputs",
    base="the base pass",
    base_unchanged="the base pass is unchanged, so the adapter itself changed",
    effect="KL(adapted ‖ base)",
    changed="KL(adapted ‖ base)",
    drift="KL(lock ‖ now)",
    ok="effect KL",
    flips=f"{{n}} confident top-1 prediction{{s}} changed (locked margin ≥ {gates.CONFIDENT_MARGIN} nats)",
    tokens_hint="see the tokenizer findings: the adapter now sees other ids for the same text",
    drift_ratio=True,
)


def lock_distributions(
    session: ProbeSession, name: str, encoded: list[list[int]], positions: int, k: int, ticks: Ticks
) -> tuple[ProbeRow, list[dict[str, Any]], list[Finding]]:
    """The lock row, the sidecar fingerprints and the lock-time findings of adapter ``name``: its greedy
    continuation of ``positions`` tokens per prompt and the top-``k`` of both passes over it."""
    tally = LockTally(MEASURE)
    greedy = session.greedy(name, encoded, positions)
    ticks.add(len(encoded))
    items = [(ids, cont) for ids, (cont, _) in zip(encoded, greedy, strict=True)]
    scored = session.passes(name, items, ticks.tick)
    for ids, (cont, incremental), (adapted, base, bitwise) in zip(encoded, greedy, scored, strict=True):
        a_ids, a_lps = top_k(adapted, k)
        b_ids, b_lps = top_k(base, k)
        adapted_print, base_print = {"ids": a_ids, "logps": a_lps}, {"ids": b_ids, "logps": b_lps}
        effect, noise = kl(adapted, base), kl(adapted, incremental)
        tally.add(ids, effect, noise, bitwise, continuation=cont, adapted=adapted_print, base=base_print)
    row, effect = tally.row(name)
    # Written as the one case that passes: an effect that is NaN, compared false, counts as none.
    if not tally.equal and effect > gates.NONE_KL:
        return row, tally.prints, []
    return row, tally.prints, [none_at_lock(name, MEASURE, effect)]


def verify_distributions(
    session: ProbeSession,
    name: str,
    row: ProbeRow,
    prompts: list[str],
    prints: list[Mapping[str, Any]],
    ticks: Ticks,
) -> list[Finding]:
    """Re-run the teacher-forced passes of adapter ``name`` over its locked ids and apply the gates."""
    locked = locked_figures(
        name, row, MEASURE, hint="regenerate the lock (in bfloat16 or float32) to record a usable probe"
    )
    live, diverged = _measure(session, name, prompts, prints, ticks)
    return verify_findings(name, locked, live, MEASURE, _greedy(name, diverged, live.prompts))


def _measure(
    session: ProbeSession, name: str, prompts: list[str], prints: list[Mapping[str, Any]], ticks: Ticks
) -> tuple[Live, list[int]]:
    """Score the locked prompt ids and continuations with adapter ``name`` and compare with its fingerprints;
    with the first changed greedy token of each prompt that diverged."""
    effects, drifts, base_drifts, flips, diverged = [], [], [], 0, []
    equal = True
    items = [(list(fp["prompt_ids"]), list(fp["continuation"])) for fp in prints]
    changed = retokenized(session, prompts, [ids for ids, _ in items])
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
    live = Live(sum(effects) / len(effects), max(drifts), max(base_drifts), flips, changed, len(prompts), equal)
    return live, diverged


def _greedy(name: str, diverged: list[int], prompts: int) -> list[Finding]:
    """The greedy continuations that now differ: reported, not gated."""
    if not diverged:
        return []
    return [
        Finding(
            "EFFECT-GREEDY",
            Category.EFFECT,
            Severity.INFO,
            f"adapter {name}: the greedy continuation now differs on {len(diverged)} of {prompts} prompts "
            f"(first at token {min(diverged)}); reported, not gated",
            subject=name,
        )
    ]


def _first_difference(argmax: Sequence[int], continuation: Sequence[int]) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(argmax, continuation, strict=True)) if a != b), None)
