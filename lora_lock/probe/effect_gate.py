"""The effect probe at lock time and at verify time, over every adapter of a session: the lock's ``[probe]``
section and the findings that concern the whole run (device, attention kernel, a fingerprint missing). Each
adapter's fingerprints and gates are in :mod:`.distribution_gate` (token or class distributions) and
:mod:`.embed_gate` (embeddings), the lock rows and findings they share in :mod:`.gate_findings`; the gates'
arithmetic is in :mod:`.gates`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Severity
from lora_lock.hashing import Digest
from lora_lock.lock.model import Probe, ProbeRow
from lora_lock.probe.distribution_gate import lock_distributions, verify_distributions
from lora_lock.probe.effect import ProbeRuntime, ProbeSession
from lora_lock.probe.embed import EmbeddingSession
from lora_lock.probe.embed_gate import lock_embedding, verify_embedding
from lora_lock.probe.progress import Ticks
from lora_lock.probe.prompts import prompts_digest
from lora_lock.probe.sidecar import SIDECAR_FORMAT, Step
from lora_lock.probe.sidecar import sidecar_digest as digest_of
from lora_lock.probe.sidecar import sidecar_text as text_of

DEFAULT_POSITIONS = 16
DEFAULT_TOP_K = 8


@dataclass(frozen=True)
class ProbeLock:
    """The probe's result at lock time: each adapter's lock row, the prompts and settings, where it ran, the
    sidecar of fingerprints and the findings. :meth:`record` is the lock's ``[probe]`` naming the sidecar."""

    rows: tuple[ProbeRow, ...]
    prompts: tuple[str, ...]
    positions: int
    top_k: int
    runtime: ProbeRuntime
    sidecar: dict[str, Any]
    findings: list[Finding]

    @cached_property
    def sidecar_text(self) -> str:
        """The sidecar as the file holds it (canonical JSON, one line); serialised once, however often asked."""
        return text_of(self.sidecar)

    @cached_property
    def sidecar_digest(self) -> str:
        """The ``sha256:`` digest of :attr:`sidecar_text`, which names the file and which the lock records."""
        return digest_of(self.sidecar_text)

    def record(self, sidecar: str) -> Probe:
        """The lock's ``[probe]``, naming the sidecar file ``sidecar`` (relative to the lock) and binding its
        digest."""
        runtime = self.runtime
        return Probe(
            adapters=self.rows,
            device=runtime.device,
            dtype=runtime.dtype,
            positions=self.positions,
            prompts=len(self.prompts),
            prompts_digest=Digest.from_str(prompts_digest(self.prompts)),
            sidecar=sidecar,
            sidecar_digest=Digest.from_str(self.sidecar_digest),
            top_k=self.top_k,
            attn_implementation=runtime.attn_implementation,
            torch=runtime.torch,
            cuda=runtime.cuda or None,
            gpu=runtime.gpu or None,
        )


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
    rows: list[ProbeRow] = []
    findings: list[Finding] = []
    # Progress in forwards' worth: the batched decoding costs about as much as the P adapted passes.
    ticks = Ticks(step, len(adapters) * 3 * len(prompts))
    for name, _ in adapters:
        if isinstance(session, EmbeddingSession):  # vectors, not distributions: gates of their own
            row, per_adapter[name], found = lock_embedding(session, name, encoded, ticks)
        else:
            row, per_adapter[name], found = lock_distributions(session, name, encoded, positions, k, ticks)
        rows.append(row)
        findings += found
    sidecar = {"format": SIDECAR_FORMAT, "prompts": list(prompts), "adapters": per_adapter}
    return ProbeLock(tuple(rows), tuple(prompts), positions, k, runtime, sidecar, findings)


def verify_probe(
    session: ProbeSession,
    section: Probe,
    sidecar: Mapping[str, Any],
    adapters: Sequence[tuple[str, Path]],
    *,
    step: Step | None = None,
) -> list[Finding]:
    """Re-run the probe on today's stack and apply the gates (see :mod:`lora_lock.probe.gates`)."""
    findings = _runtime_changed(session.runtime(), section)
    prompts: list[str] = list(sidecar["prompts"])
    rows = {r.name: r for r in section.adapters}
    ticks = Ticks(step, len(adapters) * 2 * len(prompts))
    for name, _ in adapters:
        row = rows.get(name)
        prints = sidecar["adapters"].get(name)
        if row is None or prints is None:
            findings.append(
                Finding(
                    "EFFECT-NOT-LOCKED",
                    Category.EFFECT,
                    Severity.WARNING,
                    f"adapter {name} has no probe fingerprint in the lock",
                    subject=name,
                    hint="regenerate the lock with the probe on",
                )
            )
            ticks.add(2 * len(prompts))
            continue
        embedded = _embedded(session, name, row, prints)
        with session.fits(f"the probe of adapter {name}"):  # a value no check foresaw is unusable input too
            if embedded:
                findings += verify_embedding(session, name, row, prompts, prints, ticks)
            else:
                findings += verify_distributions(session, name, row, prompts, prints, ticks)
    return findings


def _runtime_changed(runtime: ProbeRuntime, section: Probe) -> list[Finding]:
    """Warnings for a device kind or an attention kernel other than the lock's: the tolerances were measured
    with those numerics."""
    findings: list[Finding] = []
    if runtime.device != section.device:
        findings.append(
            Finding(
                "EFFECT-DEVICE",
                Category.EFFECT,
                Severity.WARNING,
                f"the probe was locked on {section.device} and runs on "
                f"{runtime.device} now: numerics differ, the tolerances were measured on {section.device}",
                subject="device",
                expected=section.device,
                actual=runtime.device,
                hint="verify on the same kind of device the lock was generated on",
            )
        )
    attn = section.attn_implementation
    if attn is not None and attn != runtime.attn_implementation:
        findings.append(
            Finding(
                "EFFECT-ATTN",
                Category.EFFECT,
                Severity.WARNING,
                f"the probe was locked with the {attn} attention kernel and runs with "
                f"{runtime.attn_implementation} now: numerics differ, the tolerances were measured with {attn}",
                subject="attn-implementation",
                expected=attn,
                actual=runtime.attn_implementation,
                hint="the transformers default kernel changed (or the model config sets another); pin the "
                "transformers version the lock records, or regenerate the lock",
            )
        )
    return findings


def _embedded(session: ProbeSession, name: str, row: ProbeRow, prints: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the lock probed adapter ``name`` as an embedding model; refused when its row and fingerprints
    disagree, or when the session loaded today is of the other kind."""
    embedded = row.embedding is not None or row.effect_distance is not None
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
    return embedded
