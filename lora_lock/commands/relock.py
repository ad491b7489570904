"""``generate --from-lock``: the arguments that regenerate a lock from its own sources, prompts, golden file and
options, so that "the change is intended, re-lock it" is one command (the drift hints name it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lora_lock.errors import InputError
from lora_lock.lock.model import Lock, Probe, Sourced, read_lock
from lora_lock.sources.fence import named_by_lock


@dataclass(frozen=True)
class LockArguments:
    """What ``generate`` needs to rebuild a lock as it was made. ``prompts`` is the locked probe prompt set
    (None: the lock has no ``[probe]``); paths are as the lock's directory sees them, joined to it."""

    output: Path
    adapters: list[str]
    names: list[str]
    base: str
    tokenizer: str | None
    probe: bool
    prompts: tuple[str, ...] | None = None
    golden: Path | None = None
    device: str | None = None
    dtype: str | None = None


def _spec(section: Sourced, lock_dir: Path) -> str:
    """A lock source as a ``generate`` argument: the pinned Hub commit, or the directory joined to the lock's."""
    pin = section.hub()
    if pin is not None:
        return f"{pin.repo}@{pin.revision}"
    return str(lock_dir / Path(*PurePosixPath(str(section.source)).parts))


def _tokenizer(lock: Lock, lock_dir: Path) -> str | None:
    """The ``--tokenizer`` argument: None when the tokenizer comes from the base's own source and commit."""
    base, tok = lock.base, lock.tokenizer
    same = (tok.source, tok.repo, tok.revision) == (base.source, base.repo, base.revision)
    return None if same or (tok.source is None and tok.repo is None) else _spec(tok, lock_dir)


def lock_arguments(lockfile: str | Path) -> LockArguments:
    """Read ``lockfile`` (a lock, or a directory holding ``lora.lock``) and return the arguments it was made with.

    A Hub source is regenerated at its pinned commit (``--base org/name@main`` moves it on purpose). The probe
    prompts are taken from the locked sidecar, so a prompts file need not still exist; a missing sidecar is
    unusable input naming it. Raises :class:`InputError` on an unusable lock."""
    path = Path(lockfile)
    if path.is_dir():
        path = path / "lora.lock"
    lock = read_lock(path)
    lock_dir = path.parent
    base = _spec(lock.base, lock_dir)
    tokenizer = _tokenizer(lock, lock_dir)
    adapters = [_spec(a, lock_dir) for a in lock.adapters]
    names = [str(a.name) for a in lock.adapters]
    probe, golden = lock.probe, lock.golden
    prompts = _locked_prompts(probe, lock_dir) if probe is not None else None
    # The probe's device and dtype, else the golden set's (the probe records both; the golden set may not).
    ran_on = probe if probe is not None else golden
    device, dtype = (ran_on.device, ran_on.dtype) if ran_on is not None else (None, None)
    return LockArguments(
        output=path,
        adapters=adapters,
        names=names,
        base=base,
        tokenizer=tokenizer,
        probe=probe is not None,
        prompts=prompts,
        golden=named_by_lock(lock_dir, str(golden.dataset), "golden dataset") if golden is not None else None,
        device=str(device).split(":")[0] if device else None,
        dtype=str(dtype) if dtype else None,
    )


def _locked_prompts(probe: Probe, lock_dir: Path) -> tuple[str, ...]:
    from lora_lock.probe.sidecar import read_sidecar

    sidecar = lock_dir / str(probe.sidecar)
    try:
        data = read_sidecar(sidecar, str(probe.sidecar_digest))
    except InputError as exc:
        raise InputError(
            f"--from-lock: the probe prompts are kept in the sidecar, which cannot be used: {exc.message}",
            hint="restore the sidecar, or regenerate without --from-lock, naming --probe-prompts FILE",
        ) from exc
    return tuple(str(p) for p in data["prompts"])


def prompts_file(prompts: tuple[str, ...], directory: Path) -> Path:
    """Write ``prompts`` as JSONL (a prompt may span lines) into ``directory`` for the probe to read."""
    target = directory / "probe-prompts.jsonl"
    target.write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in prompts), "utf-8")
    return target


def generate_arguments(args: Any, scratch: Path) -> dict[str, Any]:
    """``generate``'s arguments from the CLI's parsed options ``args``: as given, or with ``--from-lock`` the
    lock's own, each overridden where given. ``scratch``: a directory for the locked prompts file."""
    given: dict[str, Any] = {
        "adapters": args.adapter,
        "base": args.base,
        "output": args.output or "lora.lock",
        "tokenizer": args.tokenizer,
        "probe": args.probe,
        "probe_prompts": args.probe_prompts,
        "device": args.device or "auto",
        "dtype": args.dtype or "auto",
        "golden": args.golden,
        "names": args.name,
    }
    if args.from_lock is None:
        if not args.adapter:
            raise InputError(
                "generate: no adapter given", hint="pass --adapter DIR, or --from-lock to regenerate an existing lock"
            )
        return given
    from lora_lock.probe.prompts import DEFAULT_PROMPTS

    lock = lock_arguments(args.from_lock)
    prompts = None
    if args.probe_prompts is None and lock.prompts is not None and lock.prompts != DEFAULT_PROMPTS:
        prompts = prompts_file(lock.prompts, scratch)
    return {
        **given,
        "adapters": args.adapter or lock.adapters,
        "names": args.name or (None if args.adapter else lock.names),
        "base": args.base or lock.base,
        "output": args.output or lock.output,
        "tokenizer": args.tokenizer or lock.tokenizer,
        # A lock with a probe is regenerated with one (an error where the stack is missing); one without it
        # gets the default, so installing the probe extra and regenerating records it.
        "probe": args.probe if args.probe is not None else (True if lock.probe else None),
        "probe_prompts": args.probe_prompts or prompts,
        "device": args.device or lock.device or "auto",
        "dtype": args.dtype or lock.dtype or "auto",
        "golden": args.golden or lock.golden,
    }
