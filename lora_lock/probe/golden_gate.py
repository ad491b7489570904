"""The golden set's lock-time baseline and verify-time negative flips (scoring is in :mod:`.golden`).

Noise-aware flip counting: at lock time every item is scored a second time under other numerics (the forwards
under ``torch.autocast`` in bfloat16, or in float16 for a bfloat16 lock), as the probe's noise floor scores the
same distributions two ways. A multiple-choice item whose decision margin (best minus runner-up log-likelihood)
is within ``UNSTABLE_FACTOR`` × the largest log-likelihood shift that change caused anywhere in the set, or whose
answer the change already moved, is *unstable*; so is a generation item whose output the change altered. The lock
keeps those items as a bitset. At verify time, when the numerics differ from the lock's (device, dtype,
attention kernel or torch version), a negative flip of an unstable item is reported apart and not counted in the
NFR gate; on the lock's own numerics every flip counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lora_lock.findings import Category, Finding, Severity
from lora_lock.hashing import Digest
from lora_lock.lock.model import Golden, GoldenRow
from lora_lock.lock.values import frozen_map
from lora_lock.probe.effect import ProbeSession, rounded
from lora_lock.probe.golden import CONVENTION, LEGACY, GoldenItem, GoldenRunner, choice_correct
from lora_lock.probe.sidecar import Step

#: An item is unstable when its margin is at most this many times the set's largest log-likelihood shift under
#: the other numerics: the two sides of a decision can move in opposite directions (2×), and verify-time numerics
#: (true bf16 weights and activations on another device) move more than autocast did (measured in bench/).
UNSTABLE_FACTOR = 4.0


def _progress(step: Step | None, offset: int, total: int) -> Callable[[int], None] | None:
    if step is None:
        return None
    return lambda done: step(offset + done, total)


def other_numerics(session: ProbeSession) -> str | None:
    """The autocast dtype of the noise measurement for the session's dtype (``None``: none available)."""
    return {"float32": "bfloat16", "float16": "bfloat16", "bfloat16": "float16"}.get(session.dtype_name)


def _margin(lls: list[float]) -> float:
    top = sorted(lls, reverse=True)
    return top[0] - top[1]


def measure_unstable(
    runner: GoldenRunner, name: str, items: list[GoldenItem], lls: Mapping[int, list[float]], outputs: Mapping[int, str]
) -> tuple[list[bool], float] | None:
    """Which items sit inside the numerical noise, and that noise (max |Δ log-likelihood| over every choice);
    ``None`` when no other numerics can run here (the lock then records no unstable items)."""
    alt = other_numerics(runner.session)
    if alt is None:
        return None
    runner.autocast = getattr(runner.torch, alt)
    try:
        alt_lls = {i: runner.choice_lls(items[i]) for i in lls}
        gen = [i for i in range(len(items)) if items[i].kind == "generation"]
        alt_out: dict[int, str] = {}
        for start in range(0, len(gen), runner.BATCH):
            chunk = gen[start : start + runner.BATCH]
            alt_out.update(zip(chunk, runner.outputs(name, [items[i] for i in chunk]), strict=True))
    except Exception:  # noqa: BLE001 - an autocast kernel this device lacks: no measurement, nothing unstable
        return None
    finally:
        runner.autocast = None
    noise = max((abs(a - b) for i in lls for a, b in zip(lls[i], alt_lls[i], strict=True)), default=0.0)
    unstable = []
    for i, item in enumerate(items):
        if i in lls:
            moved = choice_correct(item, lls[i])[0] != choice_correct(item, alt_lls[i])[0]
            unstable.append(moved or _margin(lls[i]) <= UNSTABLE_FACTOR * noise)
        else:
            unstable.append(outputs[i] != alt_out[i])
    return unstable, noise


def lock_golden(
    session: ProbeSession, adapters: Sequence[tuple[str, Path]], path: Path, lock_dir: Path, *, step: Step | None = None
) -> Golden:
    """The ``[golden]`` section: per adapter its correctness bits, accuracy, and the items inside the noise."""
    from lora_lock.probe.golden import pack_bits, read_golden, score_generation
    from lora_lock.sources.resolve import posix_relative

    items, digest = read_golden(path)
    runner = GoldenRunner(session)
    rows = []
    n = len(items)
    for index, (name, _) in enumerate(adapters):
        progress = _progress(step, index * n, len(adapters) * n)
        session.use(name)
        lls = {i: runner.choice_lls(item) for i, item in enumerate(items) if item.kind == "choice"}
        gen = [i for i in range(n) if items[i].kind == "generation"]
        outputs: dict[int, str] = {}
        for start in range(0, len(gen), runner.BATCH):
            chunk = gen[start : start + runner.BATCH]
            outputs.update(zip(chunk, runner.outputs(name, [items[i] for i in chunk]), strict=True))
            if progress is not None:
                progress(len(outputs))
        results = [
            choice_correct(item, lls[i]) if i in lls else (score_generation(item, outputs[i]), None)
            for i, item in enumerate(items)
        ]
        if progress is not None:
            progress(n)
        correct = [r[0] for r in results]
        norms = [r[1] for r in results if r[1] is not None]
        measured = measure_unstable(runner, name, items, lls, outputs)
        rows.append(
            GoldenRow(
                name=name,
                accuracy=rounded(sum(correct) / n),
                acc_norm=rounded(sum(norms) / len(norms)) if norms else None,
                correct=pack_bits(correct),
                unstable=pack_bits(measured[0]) if measured is not None else None,
                # One digit: a stable record of an order of magnitude.
                noise_ll=float(f"{measured[1]:.1e}") if measured is not None else None,
            )
        )
    kinds = {
        "generation": sum(1 for i in items if i.kind == "generation"),
        "choice": sum(1 for i in items if i.kind == "choice"),
    }
    runtime = session.runtime()
    alt = other_numerics(session)
    return Golden(
        adapters=tuple(rows),
        dataset=posix_relative(path, lock_dir),
        dataset_digest=Digest.from_str(digest),
        items=n,
        kinds=frozen_map({k: v for k, v in kinds.items() if v}),
        convention=CONVENTION,
        device=runtime.device,  # verify scores in the same dtype; another device is a warning
        dtype=runtime.dtype,
        attn_implementation=runtime.attn_implementation,
        torch=runtime.torch,
        noise_numerics=f"autocast-{alt}" if alt is not None and any(r.unstable is not None for r in rows) else None,
    )


def _lines(lines: list[int]) -> str:
    return ", ".join(str(x) for x in lines[:10]) + (" …" if len(lines) > 10 else "")


def _numerics_changed(session: ProbeSession, section: Golden) -> list[str]:
    """Each numerics setting the lock's ``[golden]`` records that differs now, as ``key locked → now``: unstable
    items are exempt from the NFR only then."""
    runtime = session.runtime()
    pairs = {
        "device": (section.device, runtime.device),
        "dtype": (section.dtype, runtime.dtype),
        "attn-implementation": (section.attn_implementation, runtime.attn_implementation),
        "torch": (section.torch, runtime.torch),
    }
    return [f"{key} {then} → {now}" for key, (then, now) in pairs.items() if then is not None and then != now]


@dataclass(frozen=True)
class _Scoring:
    """What the golden check of every adapter shares: the runner under the lock's convention, the items, the
    numerics changed since the lock (unstable items are exempt only then), and the NFR gate."""

    runner: GoldenRunner
    items: list[GoldenItem]
    changed: list[str]
    max_nfr: float


def verify_golden(
    session: ProbeSession,
    section: Golden,
    dataset: tuple[list[GoldenItem], str],
    adapters: Sequence[tuple[str, Path]],
    *,
    max_nfr: float,
    step: Step | None = None,
) -> list[Finding]:
    """``dataset``: the items and digest :func:`~lora_lock.probe.golden.read_golden` gave for the locked file."""
    items, digest = dataset
    if digest != str(section.dataset_digest):
        return [_dataset_changed(section, digest)]
    runner = GoldenRunner(session, section.convention if section.convention is not None else LEGACY)
    rows = {r.name: r for r in section.adapters}
    out = _device_changed(session, section)
    scoring = _Scoring(runner, items, _numerics_changed(session, section), max_nfr)
    n = len(items)
    for index, (name, _) in enumerate(adapters):
        row = rows.get(name)
        if row is None:  # generate records every adapter: a lock without its row was edited to skip it
            out.append(
                Finding(
                    "GOLDEN-NO-BASELINE",
                    Category.GOLDEN,
                    Severity.ERROR,
                    f"adapter {name}: the lock's golden section has no baseline for it, so it was not scored",
                    subject=name,
                    hint="regenerate the lock with --golden to record a baseline for every adapter",
                )
            )
            continue
        out += _verify_adapter(scoring, name, row, _progress(step, index * n, len(adapters) * n))
    return out


def _dataset_changed(section: Golden, digest: str) -> Finding:
    """The golden file is not the one the lock scored: its baseline says nothing about today's items."""
    return Finding(
        "GOLDEN-DATASET",
        Category.GOLDEN,
        Severity.ERROR,
        f"{section.dataset} changed since the lock was generated; its baseline no longer applies",
        subject=section.dataset,
        expected=str(section.dataset_digest),
        actual=digest,
        hint="regenerate the lock with --golden to record a new baseline",
    )


def _device_changed(session: ProbeSession, section: Golden) -> list[Finding]:
    """A warning when the set is scored on another kind of device than at lock time."""
    device = session.runtime().device
    if section.device is None or device == section.device:
        return []
    return [
        Finding(
            "GOLDEN-DEVICE",
            Category.GOLDEN,
            Severity.WARNING,
            f"the golden set was scored on {section.device} at lock time and on {device} now: near-ties "
            "may resolve differently",
            subject="device",
            expected=section.device,
            actual=device,
            hint="verify on the same kind of device the lock was generated on",
        )
    ]


@dataclass(frozen=True)
class _Flips:
    """One adapter's item correctness at lock time and now, as the lines of the items that flipped: negative
    (counted), negative but inside the noise under changed numerics (not counted), and positive."""

    then: list[bool]
    now: list[bool]
    negative: list[int]
    unstable: list[int]
    positive: list[int]


def _flips(scoring: _Scoring, name: str, row: GoldenRow, progress: Callable[[int], None] | None) -> _Flips:
    """Score adapter ``name`` on the items and compare with its lock ``row``."""
    from lora_lock.probe.golden import unpack_bits

    items = scoring.items
    n = len(items)
    then = unpack_bits(row.correct, n, f"the lock's golden `correct` of adapter {name}")
    shaky = [False] * n
    if scoring.changed and row.unstable is not None:
        shaky = unpack_bits(row.unstable, n, f"the lock's golden `unstable` of adapter {name}")
    now = [r[0] for r in scoring.runner.run_all(name, items, progress)]
    return _Flips(
        then=then,
        now=now,
        negative=[items[i].line for i in range(n) if then[i] and not now[i] and not shaky[i]],
        unstable=[items[i].line for i in range(n) if then[i] and not now[i] and shaky[i]],
        positive=[items[i].line for i in range(n) if not then[i] and now[i]],
    )


def _verify_adapter(
    scoring: _Scoring, name: str, row: GoldenRow, progress: Callable[[int], None] | None
) -> list[Finding]:
    """The golden findings of one adapter: the unstable items that flipped, then the NFR gate."""
    flips = _flips(scoring, name, row, progress)
    n, max_nfr = len(scoring.items), scoring.max_nfr
    negative = flips.negative
    nfr = len(negative) / n
    summary = (
        f"adapter {name}: accuracy {sum(flips.then) / n:.1%} → {sum(flips.now) / n:.1%}; negative flips "
        f"{len(negative)}/{n} (NFR {nfr:.2%}), positive flips {len(flips.positive)}/{n}"
    )
    out: list[Finding] = []
    if flips.unstable:
        out.append(
            Finding(
                "GOLDEN-UNSTABLE",
                Category.GOLDEN,
                Severity.INFO,
                f"adapter {name}: {len(flips.unstable)} item(s) inside the numerical noise flipped with the changed "
                f"numerics ({', '.join(scoring.changed)}), not counted in the NFR: lines {_lines(flips.unstable)}",
                subject=name,
                hint="their locked margin was within the noise measured at lock time; see the README's rule",
            )
        )
    if nfr > max_nfr:
        out.append(
            Finding(
                "GOLDEN-NFR",
                Category.GOLDEN,
                Severity.ERROR,
                f"{summary}: above the allowed NFR {max_nfr:.2%} (items on lines {_lines(negative)})",
                subject=name,
                expected=f"NFR ≤ {max_nfr:.2%}",
                actual=f"NFR {nfr:.2%}",
                hint="items the adapter answered right at lock time are now wrong; inspect those "
                "lines, or raise --max-nfr if the change is accepted",
            )
        )
    else:
        listed = f" (negative flips on lines {_lines(negative)})" if negative else ""
        out.append(Finding("GOLDEN-OK", Category.GOLDEN, Severity.INFO, summary + listed, subject=name))
    return out
