"""``outdated``: has a Hub ref the lock was resolved from moved to another commit since?

Tags and branches move; the lock pins commits. This reports, for each Hub source locked from a ref, whether the
ref now points elsewhere and what changed there (file digests from Hub metadata, config facts), without
downloading weights. Meant for a scheduled CI job: exit 1 when something moved.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Report, Severity, input_finding
from lora_lock.hashing import digest_text, hash_file
from lora_lock.inspect.model_config import read_model_facts
from lora_lock.lock.model import BaseConfig, Lock, Sourced, read_lock
from lora_lock.lock.values import FileSet
from lora_lock.sources.hub import HubSnapshot, is_offline
from lora_lock.text import short_commit


@dataclass(frozen=True)
class _HubSource:
    """One section of the lock locked from the Hub, with the files and config to compare at its ref now."""

    category: Category
    what: str
    section: Sourced
    files: FileSet
    config: BaseConfig | None = None


def _hub_fields(section: Sourced) -> tuple[str | None, str | None, str | None]:
    return section.repo, section.revision, section.ref


def _hub_sources(lock: Lock) -> Iterator[_HubSource]:
    base, tok = lock.base, lock.tokenizer
    # Folded into the base only when it follows the same ref too: `--base org/m@<sha> --tokenizer org/m@main`
    # resolves to one commit today, but only the tokenizer moves when `main` does.
    same_repo = tok.repo is not None and _hub_fields(tok) == _hub_fields(base)
    if base.repo is not None:
        # The usual case: the tokenizer files live in the base repo, so they are compared with the base's.
        by_path = {ref.path: ref for ref in base.files}
        by_path.update({ref.path: ref for ref in tok.files} if same_repo else {})
        yield _HubSource(Category.BASE, "base", base, FileSet(tuple(by_path.values())), base.config)
    if tok.repo is not None and not same_repo:
        yield _HubSource(Category.TOKENIZER, "tokenizer", tok, tok.files)
    for adapter in lock.adapters:
        if adapter.repo is not None:
            yield _HubSource(Category.ADAPTER, f"adapter {adapter.name}", adapter, adapter.files)


def _moved(source: _HubSource) -> list[Finding]:
    from lora_lock.sources.hub import parse_spec, resolve_online

    category, what = source.category, source.what
    pin = source.section.hub()
    assert pin is not None  # only sections naming a repo are Hub sources
    repo, locked, ref = pin.repo, pin.revision, pin.ref
    parse_spec(f"{repo}@{ref or locked}")  # an edited lock's repo id or ref huggingface_hub would refuse
    if not ref:
        return [
            Finding(
                "SOURCE-PINNED",
                category,
                Severity.INFO,
                f"{what} {repo} was locked from a commit, not a branch or tag: nothing can move",
                subject=repo,
                actual=locked,
            )
        ]
    locked_files = source.files
    small = [n for n in locked_files.paths() if n.endswith((".json", ".txt", ".model", ".jinja"))]
    snap = resolve_online(repo, ref, want=small)
    if snap.commit == locked:
        return []
    out = [
        Finding(
            f"{category.value.upper()}-MOVED",
            category,
            Severity.ERROR,
            f"{what} {repo}: {ref} moved {short_commit(locked)} → {short_commit(snap.commit)} "
            "since the lock was generated",
            subject=repo,
            expected=locked,
            actual=snap.commit,
            hint=f"review the upstream change; to adopt it, run `lora-lock generate` with {repo}@{ref} and verify "
            "the adapter (and its effect) again",
        )
    ]
    out += _file_changes(category, f"{what} {repo}", ref, locked_files, snap)
    if source.config is not None:
        out += _config_changes(category, f"{what} {repo}", ref, source.config, snap.snapshot_dir / "config.json")
    return out


def _file_changes(category: Category, where: str, ref: str, locked_files: FileSet, snap: HubSnapshot) -> list[Finding]:
    """The locked files of a moved ref that changed, went away or (weights) were added at ``ref`` now."""
    out: list[Finding] = []
    now: dict[str, str] = {}
    for name, meta in snap.files.items():
        if meta.sha256:
            now[name] = digest_text(meta.sha256)
        elif (snap.snapshot_dir / name).is_file():
            now[name] = hash_file(snap.snapshot_dir / name).digest
    for entry in locked_files:
        name, old = entry.path, str(entry.digest)
        new = now.get(name)
        if new is None and name in snap.files:
            continue  # a small file we did not fetch: its change, if any, shows in the others
        if new != old:
            out.append(
                Finding(
                    f"{category.value.upper()}-FILE-CHANGED",
                    category,
                    Severity.WARNING,
                    f"{where}: {name} {'removed' if new is None else 'changed'} at {ref}",
                    subject=name,
                    expected=old,
                    actual=new or "absent",
                )
            )
    for name in sorted(n for n in snap.files if n.endswith(".safetensors") and n not in locked_files):
        out.append(
            Finding(
                f"{category.value.upper()}-FILE-EXTRA",
                category,
                Severity.WARNING,
                f"{where}: {name} added at {ref}",
                subject=name,
            )
        )
    return out


def _config_changes(category: Category, where: str, ref: str, base: BaseConfig, config: Path) -> list[Finding]:
    """The locked config identity against the config.json at ``ref`` now."""
    out: list[Finding] = []
    if not config.is_file():
        return out
    facts = read_model_facts(config).identity()
    locked = base.to_dict()  # the identity facts as both sides key them, absent ones left out
    for key in sorted(set(facts) | set(locked)):
        if facts.get(key) != locked.get(key):
            out.append(
                Finding(
                    "BASE-CONFIG",
                    category,
                    Severity.WARNING,
                    f"{where}: {key} {locked.get(key)} → {facts.get(key)} at {ref}",
                    subject=key,
                    expected=str(locked.get(key)),
                    actual=str(facts.get(key)),
                )
            )
    return out


def outdated(lockfile: str | Path = "lora.lock") -> Report:
    """Check every Hub source of the lock against the ref it was resolved from (needs the network)."""
    path = Path(lockfile)
    title = f"lora-lock outdated {path.name}"
    try:
        lock = read_lock(path)
    except InputError as exc:
        return Report.build([input_finding(exc)], ran=(), title=title)
    findings: list[Finding] = []
    ran: set[Category] = set()
    sources = list(_hub_sources(lock))
    if not sources:
        findings.append(
            Finding(
                "SOURCE-LOCAL",
                Category.BASE,
                Severity.INFO,
                "the lock has no Hub sources; local directories cannot move under you",
            )
        )
    blocked: set[Category] = set()
    offline = bool(sources) and is_offline()
    for source in sources:
        ran.add(source.category)
        if offline:
            blocked.add(source.category)
            continue
        try:
            findings += _moved(source)
        except InputError as exc:
            findings.append(input_finding(exc))
            blocked.add(source.category)
    if offline:
        findings.append(
            input_finding(
                InputError(
                    "`lora-lock outdated` asks the Hub where each ref points now, and offline mode is on "
                    "(HF_HUB_OFFLINE)",
                    hint="run it where the Hub is reachable, e.g. in a scheduled CI job",
                )
            )
        )
    return Report.build(findings, ran=sorted(ran, key=list(Category).index), title=title, blocked=blocked)
