"""The probe's gates: pure arithmetic on stored fingerprints (no torch), with the defaults the README justifies.

- **no effect**: adapted and base logits bitwise equal on every prompt, or KL(adapted ‖ base) ≤ ``NONE_KL``.
- **effect changed**: live/locked effect ratio outside ``RATIO_BAND`` (a scaling or alpha change moves KL
  quadratically: an adapter scaled by 0.5 gives a ratio near 0.25).
- **adapted drift**: KL(lock ‖ now) of the adapted distributions (over the locked top-k plus an "other" bucket)
  above ``tolerance(noise)``: ``NOISE_FACTOR`` × the noise measured at lock time, within [``FLOOR``, ``CAP``].
- **confident top-1 flips**: positions whose locked top-1 led by ≥ ``CONFIDENT_MARGIN`` nats and whose live
  argmax is another token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NONE_KL = 1e-10
RATIO_BAND = (0.8, 1.25)
NOISE_FACTOR = 10.0
FLOOR = 5e-4
CAP = 5e-2
CONFIDENT_MARGIN = 1.0
MIN_GATED_EFFECT = 1e-6  # below this the locked effect is too small for a meaningful ratio


#: The lock-time noise floor is recorded rounded up to one significant digit, and never below this: fp32 rounding
#: noise (~1e-7 nats on CPU) changes with the thread count and the kernels' work split, and a regenerated lock must
#: not differ in it; 1e-6 is 500× below the tolerance floor's level, so no gate depends on the digits dropped.
NOISE_QUANTUM = 1e-6


def recorded_noise(noise: float) -> float:
    """The noise floor as the lock records it: ``max(NOISE_QUANTUM, noise)`` rounded up to one significant digit."""
    if math.isnan(noise) or noise <= NOISE_QUANTUM:
        return NOISE_QUANTUM
    exponent = math.floor(math.log10(noise))
    digit = math.ceil(round(noise / 10**exponent, 9))
    return float(f"{digit}e{exponent}") if digit < 10 else float(f"1e{exponent + 1}")


def tolerance(noise: float, *, floor: float = FLOOR, cap: float = CAP) -> float:
    """The drift a verify run may show before it fails: ``NOISE_FACTOR`` × the recorded noise floor, kept
    between ``floor`` and ``cap`` (by default the KL gates' ``FLOOR`` and ``CAP``; a NaN floor counts as 0)."""
    if math.isnan(noise):
        noise = 0.0
    return min(cap, max(floor, NOISE_FACTOR * noise))


def moved(drift: float, noise: float) -> bool:
    """Did a pass move beyond numerical noise? (Attribution only: the gates use :func:`tolerance`.)"""
    if math.isnan(noise):
        noise = 0.0
    return drift > max(NOISE_FACTOR * noise, 1e-9)


def coarse_kl(locked: Sequence[Sequence[float]], live: Sequence[Sequence[float]]) -> float:
    """Mean over positions of KL(lock ‖ now) on the locked top-k tokens plus one bucket for the rest."""
    total = 0.0
    for lp_lock, lp_now in zip(locked, live, strict=True):
        p = [math.exp(v) for v in lp_lock]
        q = [math.exp(v) for v in lp_now]
        kl = sum(pi * (a - b) for pi, a, b in zip(p, lp_lock, lp_now, strict=True))
        tail_p = max(0.0, 1.0 - sum(p))
        tail_q = max(1e-12, 1.0 - sum(q))
        if tail_p > 1e-12:
            kl += tail_p * (math.log(tail_p) - math.log(tail_q))
        total += max(0.0, kl)
    return total / max(1, len(locked))


def confident_flips(
    locked_ids: Sequence[Sequence[int]], locked_logps: Sequence[Sequence[float]], live_argmax: Sequence[int]
) -> int:
    """How many positions whose locked top token led by at least ``CONFIDENT_MARGIN`` nats now pick another token."""
    flips = 0
    for ids, lps, now in zip(locked_ids, locked_logps, live_argmax, strict=True):
        margin = lps[0] - lps[1] if len(lps) > 1 else math.inf
        if margin >= CONFIDENT_MARGIN and now != ids[0]:
            flips += 1
    return flips
