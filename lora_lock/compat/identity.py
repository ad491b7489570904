"""Shapes fitting is not identity: whether the base given is the one the adapter names (``base_model_name_or_path``).

A Hub repo id confirms by id and revision; a Hub cache snapshot (``…/models--org--name/snapshots/<commit>``)
confirms like the repo id it caches; a local path confirms when it is the same directory, or names a directory of
the same name: PEFT stores the path the base was loaded from during training, usually relative to the training
directory (``./models/tiny-llama``), which says nothing about where the base lives now.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from lora_lock.findings import Category, Finding, Severity
from lora_lock.inspect.adapter import Adapter
from lora_lock.inspect.model_config import ModelFacts
from lora_lock.sources.resolve import Resolved

_SNAPSHOT = re.compile(r"models--(?P<repo>[^/]+)/snapshots/(?P<sha>[0-9a-f]{40})/?$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


#: Well-known bases of one family that share every projection shape, for the hint on those families.
_LOOKALIKES = {"llama": "Llama-3-8B and Mistral-7B", "mistral": "Llama-3-8B and Mistral-7B"}


def _hint(facts: ModelFacts | None) -> str:
    model_type = facts.model_type if facts is not None else None
    family = (facts.architecture or model_type) if facts is not None else None
    if model_type in _LOOKALIKES:
        same = _LOOKALIKES[model_type]
    elif family:
        same = f"two {family} checkpoints of the same size (a base and its fine-tune, or another release)"
    else:
        same = "two bases of the same architecture and size"
    return (
        f"shapes fitting is not identity: {same} share every projection shape; a lock pins the base's commit "
        "and file digests"
    )


def _leaf(name: str) -> str:
    """The last path component of a stored path, POSIX or Windows (PEFT stores what the trainer passed)."""
    return (PureWindowsPath(name).name if "\\" in name else PurePosixPath(name.rstrip("/")).name).lower()


def _local_matches(named: str, base: Resolved, adapter_root: Path) -> bool:
    path = base.path
    try:
        resolved = path.resolve()
    except OSError:
        return False
    snapshot = _SNAPSHOT.search(resolved.as_posix()) or _SNAPSHOT.search(path.as_posix())
    name, _, rev = named.partition("@")
    if snapshot is not None:
        repo = snapshot["repo"].replace("--", "/")
        if repo == name and (not rev or snapshot["sha"].startswith(rev)):
            return True
        if not _REPO_ID.match(name) and _SNAPSHOT.search(name.rstrip("/")) is not None:
            return _SNAPSHOT.search(name.rstrip("/"))["repo"] == snapshot["repo"]  # type: ignore[index]
    for candidate in (Path(named).expanduser(), adapter_root / Path(named).expanduser()):
        try:
            if candidate.exists() and candidate.resolve() == resolved:
                return True
        except OSError:
            continue
    if _REPO_ID.match(name) and snapshot is None:
        # ``org/name`` against a plain directory: the directory's own name is all there is to compare
        return name.rpartition("/")[2].lower() == resolved.name.lower()
    return _leaf(named) not in ("", ".", "..") and _leaf(named) == resolved.name.lower()


def identity_findings(
    adapter: Adapter, base: Resolved, *, fits: bool = True, facts: ModelFacts | None = None
) -> list[Finding]:
    """Say when the base cannot be confirmed to be the one the adapter names. ``fits``: the adapter's tensors were
    checked against this base and fit (only then does the message say so)."""
    named = adapter.config.base_model_name_or_path
    if not named:
        return [
            Finding(
                "COMPAT-IDENTITY",
                Category.COMPAT,
                Severity.WARNING,
                "the adapter does not name its base (`base_model_name_or_path` is empty), so only "
                + ("shapes could be checked" if fits else "its configuration could be checked"),
                subject="base_model_name_or_path",
                hint=_hint(facts),
            )
        ]
    if base.repo_id is not None:
        named_repo, _, named_rev = named.partition("@")
        wanted_rev = named_rev or adapter.config.revision
        if base.repo_id == named_repo and (not wanted_rev or wanted_rev in (base.revision, base.ref)):
            return []
        actual = f"{base.repo_id}@{base.revision}"
        if base.repo_id == named_repo:
            named = f"{named_repo}@{wanted_rev}"
    else:
        if _local_matches(named, base, adapter.root):
            return []
        actual = f"local directory {base.path}"
    return [
        Finding(
            "COMPAT-IDENTITY",
            Category.COMPAT,
            Severity.WARNING,
            f"{'the shapes fit, but ' if fits else ''}the base cannot be confirmed to be `{named}`, the base the "
            "adapter names",
            subject="base_model_name_or_path",
            expected=named,
            actual=actual,
            hint=_hint(facts),
        )
    ]
