"""What ``generate`` and ``verify`` call: lock-time fingerprints, and verify-time findings against them."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError
from lora_lock.models import Category, Finding, Severity
from lora_lock.probe import gates
from lora_lock.probe.effect import ProbeSession, gather, kl, rounded, top_k
from lora_lock.probe.golden import GoldenItem
from lora_lock.probe.prompts import prompts_digest
from lora_lock.probe.sidecar import SIDECAR_FORMAT, Step

DEFAULT_POSITIONS = 16
DEFAULT_TOP_K = 8


@dataclass(frozen=True)
class ProbeLock:
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
    runtime = session.runtime()
    encoded = [session.encode(p) for p in prompts]
    per_adapter: dict[str, list[dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    findings: list[Finding] = []
    # Progress in forwards' worth: the batched decoding costs about as much as the P adapted passes.
    ticks = _Ticks(step, len(adapters) * 3 * len(prompts))
    for name, _ in adapters:
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
                    "noise_kl": rounded(noise),
                }
            )
        per_adapter[name] = prints
        effect = sum(effects) / len(effects)
        noise = max(noises)
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
        with session.fits(f"the probe of adapter {name}"):  # a value no check foresaw is unusable input too
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
                f"adapter {name}'s outputs drifted: KL(lock ‖ now) {drift:.3g} > tolerance {tol:.3g}; {cause}",
                name,
                expected=f"≤ {tol:.3g}",
                actual=f"{drift:.3g}",
                hint="if the change is intended, regenerate the lock and review the behaviour",
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


# --- golden set ---------------------------------------------------------------------------------------------------


def _progress(step: Step | None, offset: int, total: int) -> Callable[[int], None] | None:
    if step is None:
        return None
    return lambda done: step(offset + done, total)


def lock_golden(
    session: ProbeSession, adapters: Sequence[tuple[str, Path]], path: Path, lock_dir: Path, *, step: Step | None = None
) -> dict[str, Any]:
    from lora_lock.probe.golden import GoldenRunner, pack_bits, read_golden
    from lora_lock.sources import posix_relative

    items, digest = read_golden(path)
    runner = GoldenRunner(session)
    rows = []
    for index, (name, _) in enumerate(adapters):
        results = runner.run_all(name, items, _progress(step, index * len(items), len(adapters) * len(items)))
        correct = [r[0] for r in results]
        row: dict[str, Any] = {
            "name": name,
            "accuracy": rounded(sum(correct) / len(items)),
            "correct": pack_bits(correct),
        }
        norms = [r[1] for r in results if r[1] is not None]
        if norms:
            row["acc-norm"] = rounded(sum(norms) / len(norms))
        rows.append(row)
    kinds = {
        "generation": sum(1 for i in items if i.kind == "generation"),
        "choice": sum(1 for i in items if i.kind == "choice"),
    }
    runtime = session.runtime()
    return {
        "dataset": posix_relative(path, lock_dir),
        "dataset-digest": digest,
        "device": runtime.device,  # verify scores in the same dtype; another device is a warning
        "dtype": runtime.dtype,
        "items": len(items),
        "kinds": {k: v for k, v in kinds.items() if v},
        "adapter": rows,
    }


def verify_golden(
    session: ProbeSession,
    section: Mapping[str, Any],
    dataset: tuple[list[GoldenItem], str],
    adapters: Sequence[tuple[str, Path]],
    *,
    max_nfr: float,
    step: Step | None = None,
) -> list[Finding]:
    """``dataset``: the items and digest :func:`~lora_lock.probe.golden.read_golden` gave for the locked file."""
    from lora_lock.probe.golden import GoldenRunner, unpack_bits

    items, digest = dataset
    if digest != section["dataset-digest"]:
        return [
            Finding(
                "GOLDEN-DATASET",
                Category.GOLDEN,
                Severity.ERROR,
                f"{section['dataset']} changed since the lock was generated; its baseline no longer applies",
                subject=str(section["dataset"]),
                expected=str(section["dataset-digest"]),
                actual=digest,
                hint="regenerate the lock with --golden to record a new baseline",
            )
        ]
    runner = GoldenRunner(session)
    rows = {r["name"]: r for r in section["adapter"]}
    out: list[Finding] = []
    device = session.runtime().device
    if "device" in section and device != section["device"]:
        out.append(
            Finding(
                "GOLDEN-DEVICE",
                Category.GOLDEN,
                Severity.WARNING,
                f"the golden set was scored on {section['device']} at lock time and on {device} now: near-ties "
                "may resolve differently",
                subject="device",
                expected=str(section["device"]),
                actual=device,
                hint="verify on the same kind of device the lock was generated on",
            )
        )
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
        then = unpack_bits(str(row["correct"]), n, f"the lock's golden `correct` of adapter {name}")
        now = [r[0] for r in runner.run_all(name, items, _progress(step, index * n, len(adapters) * n))]
        negative = [items[i].line for i in range(n) if then[i] and not now[i]]
        positive = [items[i].line for i in range(n) if not then[i] and now[i]]
        nfr, pfr = len(negative) / n, len(positive) / n
        acc_then, acc_now = sum(then) / n, sum(now) / n
        summary = (
            f"adapter {name}: accuracy {acc_then:.1%} → {acc_now:.1%}; negative flips {len(negative)}/{n} "
            f"(NFR {nfr:.2%}), positive flips {len(positive)}/{n}"
        )
        if nfr > max_nfr:
            lines = ", ".join(str(x) for x in negative[:10]) + (" …" if len(negative) > 10 else "")
            out.append(
                Finding(
                    "GOLDEN-NFR",
                    Category.GOLDEN,
                    Severity.ERROR,
                    f"{summary}: above the allowed NFR {max_nfr:.2%} (items on lines {lines})",
                    subject=name,
                    expected=f"NFR ≤ {max_nfr:.2%}",
                    actual=f"NFR {nfr:.2%}",
                    hint="items the adapter answered right at lock time are now wrong; inspect those "
                    "lines, or raise --max-nfr if the change is accepted",
                )
            )
        else:
            out.append(Finding("GOLDEN-OK", Category.GOLDEN, Severity.INFO, summary, subject=name))
        del pfr
    return out


# --- one model load for both -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    probe: ProbeLock | None
    golden: dict[str, Any] | None
    findings: list[Finding]


def lock_behaviour(
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
    from lora_lock.probe.prompts import DEFAULT_PROMPTS, read_prompts

    prompts = read_prompts(Path(prompts_file)) if prompts_file is not None else DEFAULT_PROMPTS
    golden_path = Path(golden) if golden is not None else None
    if golden_path is not None:
        from lora_lock.probe.golden import read_golden

        read_golden(golden_path)  # fail on a bad file before loading the model
    _require_causal(adapters)
    probes: list[ProbeLock] = []
    goldens: list[dict[str, Any]] = []
    for group in load_groups(adapters):
        session = ProbeSession(base_dir, tokenizer_dir, group, device=device, dtype=dtype)
        if probe:
            probes.append(lock_probe(session, group, prompts, step=step))
        if golden_path:
            goldens.append(lock_golden(session, group, golden_path, lock_dir, step=step))
        del session  # one model in memory at a time
    order = {name: index for index, (name, _) in enumerate(adapters)}
    probed = _merge_probes(probes, order) if probes else None
    golden_section = _merge_rows(goldens, order) if goldens else None
    return Behaviour(probe=probed, golden=golden_section, findings=probed.findings if probed else [])


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
        if rewrites_base(name, path) or writes_into_base(adapter.config, tensors):
            alone.append([(name, path)])
        else:
            shared.append((name, path))
    return ([shared] if shared else []) + alone


def _merge_rows(sections: list[dict[str, Any]], order: Mapping[str, int]) -> dict[str, Any]:
    """One lock section from the sections of several model loads: their per-adapter rows, in adapter order."""
    rows = sorted((row for section in sections for row in section["adapter"]), key=lambda row: order[row["name"]])
    return {**sections[0], "adapter": rows}


def _merge_probes(probes: list[ProbeLock], order: Mapping[str, int]) -> ProbeLock:
    sidecar = dict(probes[0].sidecar)
    prints = {name: p for probe in probes for name, p in probe.sidecar["adapters"].items()}
    sidecar["adapters"] = {name: prints[name] for name in sorted(prints, key=lambda n: order[n])}
    return ProbeLock(
        section=_merge_rows([p.section for p in probes], order),
        sidecar=sidecar,
        findings=[f for probe in probes for f in probe.findings],
    )


def verify_behaviour(
    lock: Mapping[str, Any],
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
) -> tuple[list[Finding], dict[Category, InputError]]:
    """Findings, and the categories that could not run with the reason. Each category's own input (the sidecar,
    the golden file) is read before the model loads, and an error in one never discards the other's findings;
    an error loading the model (raised) stops both."""
    from lora_lock.fence import named_by_lock
    from lora_lock.probe.golden import read_golden
    from lora_lock.probe.sidecar import read_sidecar

    failures: dict[Category, InputError] = {}
    section = lock.get("probe") if effect else None
    golden_section = lock.get("golden") if golden else None
    dataset = None
    sidecar = None
    if section:
        try:
            sidecar = read_sidecar(lock_dir / str(section["sidecar"]), str(section["sidecar-digest"]))
        except InputError as exc:
            failures[Category.EFFECT] = exc
    if golden_section:
        try:
            dataset = read_golden(named_by_lock(lock_dir, str(golden_section["dataset"]), "golden dataset"))
        except InputError as exc:
            failures[Category.GOLDEN] = exc
            golden_section = None
    if sidecar is None and not golden_section:
        return [], failures
    _require_causal(adapters)
    locked = section or golden_section or {}
    findings: list[Finding] = []
    groups = load_groups(adapters)
    for group in groups:
        try:
            session = ProbeSession(
                base_dir, tokenizer_dir, group, device=device, dtype=str(locked.get("dtype", "auto"))
            )
        except InputError as exc:
            if len(groups) == 1:
                raise  # nothing was measured: the caller reports it for both categories
            # A later load failing keeps what the earlier loads found (drift still wins over unusable input).
            if section and sidecar is not None:
                failures.setdefault(Category.EFFECT, exc)
            if golden_section and dataset is not None:
                failures.setdefault(Category.GOLDEN, exc)
            continue
        if section and sidecar is not None:
            try:
                findings += verify_probe(session, section, sidecar, group, step=step)
            except InputError as exc:
                failures.setdefault(Category.EFFECT, exc)
        if golden_section and dataset is not None:
            try:
                findings += verify_golden(session, golden_section, dataset, group, max_nfr=max_nfr, step=step)
            except InputError as exc:
                failures.setdefault(Category.GOLDEN, exc)
        del session
    # A device warning is said once, however many model loads there were.
    return list(dict.fromkeys(findings)), failures


def _require_causal(adapters: Sequence[tuple[str, Path]]) -> None:
    """The probe scores next-token distributions: causal language models only."""
    from lora_lock.inspect.jsonfile import read_json_object

    for name, path in adapters:
        task = read_json_object(path / "adapter_config.json").get("task_type")
        if task not in (None, "CAUSAL_LM"):
            raise InputError(
                f"adapter {name}: task_type {task} is not a causal language model; the effect probe and golden set "
                "score next-token distributions",
                hint="lock it with --no-probe (the static checks still apply)",
            )
