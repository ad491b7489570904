"""Where bases and adapters come from. A source spec is a local directory or, later, a Hub ``repo@revision``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lora_lock.errors import SourceError


@dataclass(frozen=True)
class Resolved:
    """A source made concrete: the local directory holding its files, and how to name it in a lock."""

    spec: str
    path: Path
    repo_id: str | None = None
    revision: str | None = None
    ref: str | None = None

    @property
    def label(self) -> str:
        if self.repo_id:
            return f"{self.repo_id}@{self.revision[:12]}" if self.revision else self.repo_id
        return str(self.path)


def resolve_local(spec: str | Path, *, relative_to: Path | None = None, what: str = "source") -> Resolved:
    """Resolve a local directory spec (relative specs first against the cwd, then ``relative_to``)."""
    raw = Path(spec).expanduser()
    candidates = [raw]
    if relative_to is not None and not raw.is_absolute():
        candidates.append(relative_to / raw)
    for candidate in candidates:
        if candidate.is_dir():
            return Resolved(spec=str(spec), path=candidate)
    raise SourceError(
        f"{what} {str(spec)!r} is not a local directory",
        hint="pass a directory holding the model's files (Hub repo ids are resolved by the Hub source layer)",
    )
