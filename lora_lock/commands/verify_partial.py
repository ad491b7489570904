"""What ``verify`` says about what it could not do: a lock without ``[probe]``, a run in which no requested
category could be checked, and the categories still checked when another source is unreadable (a missing base
shard leaves the tokenizer and the adapter checkable)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Severity
from lora_lock.lock.model import Adapter, Lock
from lora_lock.lock.tokenizer_drift import standalone_findings

if TYPE_CHECKING:
    from lora_lock.sources.resolve import Resolved


def no_probe_recorded() -> Finding:
    """The info a full verify of a lock without ``[probe]`` carries: what is not checked, and how to record it."""
    return Finding(
        "EFFECT-NOT-LOCKED",
        Category.EFFECT,
        Severity.INFO,
        "the lock has no [probe] (it was generated without the probe extra, or with --no-probe), so what the "
        "adapter does is not checked",
        hint="to check it: pip install 'lora-lock[probe]' and run `lora-lock generate --from-lock`",
    )


def nothing_checked(cats: Sequence[Category]) -> InputError:
    """Every requested category was left unchecked (say the probe extra is missing for ``--only effect``): a
    run that checked nothing must not pass (exit 0) as if it had found nothing."""
    return InputError(
        f"none of the categories asked for ({', '.join(c.value for c in cats)}) could be checked here; see the "
        "*-NOT-RUN warnings",
        hint="install what they need (pip install 'lora-lock[probe]' for effect and golden), or ask for other "
        "categories",
    )


def intact_categories(
    lock: Lock,
    fallback: list[Finding],
    complete: set[tuple[Category, str]],
    tok: Resolved,
    locked_adapters: list[Adapter],
    checkable: Collection[Category],
) -> tuple[list[Finding], set[Category]]:
    """When another source (a base shard, say) could not be read: the tokenizer and adapter categories whose own
    files were all compared are still checked — the tokenizer's facts from its own files, the adapter's settings
    from files proven identical — rather than reported as unusable input. ``checkable``: the categories that run
    and that no unusable input blocked."""
    intact: set[Category] = set()
    if Category.TOKENIZER in checkable and (Category.TOKENIZER, "") in complete:
        own = [f for f in fallback if f.category is Category.TOKENIZER]
        version = lock.environment.versions.get("transformers")
        found = standalone_findings(lock.tokenizer, tok.path, tok.files, own, version)
        if found is not None:
            fallback = [f for f in fallback if f.category is not Category.TOKENIZER] + found
            intact.add(Category.TOKENIZER)
    names = [a.name for a in locked_adapters]
    if (
        Category.ADAPTER in checkable
        and all((Category.ADAPTER, n) in complete for n in names)
        and not any(f.category is Category.ADAPTER and f.severity is Severity.ERROR for f in fallback)
    ):
        intact.add(Category.ADAPTER)  # identical files: identical settings
    return fallback, intact
