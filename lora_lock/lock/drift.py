"""Recorded fact vs the world now → findings: file tables (missing / changed / extra), values, and library
versions under the lock's match policy. Shared by ``verify``'s categories."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lora_lock.findings import Category, Finding, Severity
from lora_lock.hashing import FileDigest
from lora_lock.inspect.environment import PROBE_ONLY, current_environment, versions_match
from lora_lock.lock.model import Environment
from lora_lock.lock.snapshot import UNHASHED
from lora_lock.lock.values import FileRef, FileSet
from lora_lock.sources.fileset import loader_ignores
from lora_lock.text import short_digest, value_text

REGENERATE = "if this change is intended, run `lora-lock generate --from-lock` and review the lock diff"


def compare_files(
    category: Category,
    prefix: str,
    files: FileSet,
    root: Path,
    current: Mapping[str, FileDigest],
    present: Iterable[str],
) -> list[Finding]:
    """Missing, changed and extra files of one section (every difference listed). The section's file set is
    deny by default: every file is an error except the few no loader reads (:func:`loader_ignores`), ``info``.
    ``files``: the section's locked files; ``current``: path → its digest and size now (the files read)."""
    out: list[Finding] = []
    present = set(present)

    def severity(name: str) -> Severity:
        return Severity.INFO if loader_ignores(name) else Severity.ERROR

    def note(name: str) -> str:
        return " (no loader reads it)" if loader_ignores(name) else ""

    for entry in files:
        name, digest = entry.path, str(entry.digest)
        if name not in present and not _exists(root / name):
            out.append(
                Finding(
                    f"{prefix}-FILE-MISSING",
                    category,
                    severity(name),
                    f"{name} is locked but missing from {root}{note(name)}",
                    subject=name,
                    expected=f"{digest} ({entry.size} bytes)",
                    actual="missing",
                    hint=f"restore the file; {REGENERATE}",
                )
            )
            continue
        now = _now(entry, current.get(name))
        if now is not None and now != (digest, entry.size):
            out.append(
                Finding(
                    f"{prefix}-FILE-CHANGED",
                    category,
                    severity(name),
                    f"{name} changed: {short_digest(digest)}… ({entry.size} bytes) → "
                    f"{short_digest(now[0])}… ({now[1]} bytes){note(name)}",
                    subject=name,
                    expected=digest,
                    actual=now[0],
                    hint=REGENERATE,
                )
            )
    for name in sorted(present - set(files.paths())):
        out.append(
            Finding(
                f"{prefix}-FILE-EXTRA",
                category,
                severity(name),
                f"{name} is present in {root} but not in the lock{note(name)}",
                subject=name,
                expected="absent",
                actual="present",
                hint="every file of a locked directory is locked, since loaders read files lora-lock does not "
                f"know of; remove it, or {REGENERATE}",
            )
        )
    return out


def _now(entry: FileRef, seen: FileDigest | None) -> tuple[str, int] | None:
    """The digest and size of a locked file now (None: not read); a file sized but not hashed (the fast path)
    counts as the locked digest."""
    if seen is None:
        return None
    return (str(entry.digest) if seen.digest == UNHASHED else seen.digest), seen.size


def compare_values(
    code: str,
    category: Category,
    what: str,
    locked: Mapping[str, Any],
    current: Mapping[str, Any],
    hint: str = REGENERATE,
) -> list[Finding]:
    """One finding per key whose value differs between the lock and now (a key on one side only included),
    in key order; ``code`` and ``hint`` are the caller's."""
    out = []
    for key in sorted(set(locked) | set(current)):
        old, new = locked.get(key), current.get(key)
        if old != new:
            out.append(
                Finding(
                    code,
                    category,
                    Severity.ERROR,
                    f"{what} `{key}` changed: {value_text(old) if old is not None else 'absent'} → "
                    f"{value_text(new) if new is not None else 'absent'}",
                    subject=key,
                    expected=value_text(old),
                    actual=value_text(new),
                    hint=hint,
                )
            )
    return out


def environment_findings(section: Environment) -> list[Finding]:
    """The installed stack against the lock's ``[environment]``: a missing package (a warning when only the probe
    needs it), a version outside the policy's rule, and a different GPU."""
    env = current_environment()
    out: list[Finding] = []
    for name, old in sorted(section.versions.items()):
        rule = section.policy.get(name, "exact")
        new = env.versions.get(name)
        if new is None:
            severity = Severity.WARNING if name in PROBE_ONLY else Severity.ERROR
            out.append(
                Finding(
                    "ENV-MISSING",
                    Category.ENVIRONMENT,
                    severity,
                    f"{name} {old} is locked but not installed here"
                    + (" (only the effect probe needs it)" if name in PROBE_ONLY else ""),
                    subject=name,
                    expected=old,
                    actual="not installed",
                    hint=f"install it (pip install '{name}=={old}') or see `lora-lock export-env`",
                )
            )
        elif not versions_match(old, new, rule):
            out.append(
                Finding(
                    "ENV-VERSION",
                    Category.ENVIRONMENT,
                    Severity.ERROR,
                    f"{name} {old} → {new} (policy: {rule} match)",
                    subject=name,
                    expected=old,
                    actual=new,
                    hint=f"pin {name}=={old}, or if the upgrade is intended, regenerate the "
                    "lock (and re-run the probe) with the new version",
                )
            )
    gpu = section.gpu
    if gpu and env.gpu != gpu:
        out.append(
            Finding(
                "ENV-GPU",
                Category.ENVIRONMENT,
                Severity.WARNING,
                f"GPU changed: {gpu.get('name')} → {env.gpu.get('name', 'none')}",
                subject="gpu",
                expected=value_text(dict(gpu)),
                actual=value_text(env.gpu) if env.gpu else "none",
                hint="numerics differ across GPU generations; the effect probe decides whether it matters",
            )
        )
    return out


def _exists(path: Path) -> bool:
    """``Path.exists`` that treats an unusable name (too long for the filesystem, …) as absent."""
    try:
        return path.exists()
    except OSError:
        return False
