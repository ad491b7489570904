"""The file set of a source, deny by default: every file under a directory (or in a Hub commit's listing).

A loader reads more than the names lora-lock knows: transformers loads an adapter it finds in a model folder, vLLM
loads every ``*.safetensors`` of a folder without an index, the tokenizer honours ``fast_tokenizer_files`` and
``additional_chat_templates/``. So the lock records every file with its digest, and any file that appears,
disappears or changes is drift. Only the files of :data:`IGNORED_NAMES` / :data:`IGNORED_SUFFIXES` /
:data:`IGNORED_DIRS`, which no loader reads, drift at ``info`` severity; a ``.git`` directory is not listed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from lora_lock.errors import InputError
from lora_lock.findings import Category, Finding, Severity
from lora_lock.sources.fence import check_name, outside_error, special_error

#: Base names (compared case-insensitively) of files no loader reads: docs, licences, git metadata.
IGNORED_NAMES = frozenset(
    {
        ".gitattributes",
        ".gitignore",
        "readme",
        "readme.md",
        "license",
        "license.md",
        "license.txt",
        "licence",
        "licence.md",
        "licence.txt",
        "notice",
        "notice.md",
        "notice.txt",
        "use_policy.md",
    }
)
#: Images (model cards embed them); no loader of a text model reads an image from the model folder.
IGNORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
#: Bookkeeping ``hf download --local-dir`` writes next to the files (metadata with timestamps).
IGNORED_DIRS = (".cache/huggingface/",)
#: Directories that are not part of a model: never listed (a git clone's object store, not read by any loader).
SKIPPED_DIRS = frozenset({".git"})

#: More files than any model directory holds: above it the source is refused (bounded work).
MAX_FILES = 20_000
MAX_DEPTH = 32

#: Files that make transformers load an adapter from a model folder (``find_adapter_config_file``), or that are
#: an adapter's weights.
ADAPTER_SHAPED = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def loader_ignores(name: str) -> bool:
    """True for the few files no loader reads (their drift is ``info``); every other file's drift is an error."""
    base = PurePosixPath(name).name.lower()
    return base in IGNORED_NAMES or base.endswith(IGNORED_SUFFIXES) or name.startswith(IGNORED_DIRS)


class _Walker:
    """One listing of ``root``: the names found so far, the directories already walked (a directory reached
    twice through links is listed once), and the fence every symlink must resolve inside."""

    def __init__(self, root: Path, fence: Path, allow_symlinks: bool) -> None:
        self.root = root
        self.fence = fence
        self.allow_symlinks = allow_symlinks
        self.found: list[str] = []
        self.seen: set[Path] = set()

    def walk(self, directory: Path, prefix: str, depth: int) -> None:
        """List ``directory`` (its names prefixed by ``prefix``), descending at most :data:`MAX_DEPTH` deep."""
        if depth > MAX_DEPTH:
            raise InputError(f"{directory}: directories nested more than {MAX_DEPTH} deep; not a model directory")
        try:
            real = directory.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise InputError(f"{directory}: cannot resolve ({exc.__class__.__name__})") from exc
        if real in self.seen:
            return  # a directory reached twice through links: its files are listed once
        self.seen.add(real)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise InputError(f"{directory}: cannot list: {exc.strerror or exc}") from exc
        for entry in entries:
            self.entry(entry, prefix, depth)

    def entry(self, entry: os.DirEntry[str], prefix: str, depth: int) -> None:
        """One directory entry: a subdirectory is walked, a regular file listed, anything else refused."""
        name = prefix + entry.name
        path = Path(entry.path)
        check_name(name, self.root)
        mode = self.mode(entry, path)
        if stat.S_ISDIR(mode):
            if entry.name not in SKIPPED_DIRS:
                self.walk(path, name + "/", depth + 1)
        elif stat.S_ISREG(mode):
            self.found.append(name)
            if len(self.found) > MAX_FILES:
                raise InputError(
                    f"{self.root}: more than {MAX_FILES} files; this is not a model directory",
                    hint="point at the directory holding the model's files only",
                )
        else:
            raise special_error(path, mode)

    def mode(self, entry: os.DirEntry[str], path: Path) -> int:
        """The entry's file mode, a symlink's of its target: the link must resolve, and inside the fence unless
        symlinks are allowed."""
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError as exc:
            raise InputError(f"{path}: cannot inspect: {exc.strerror or exc}") from exc
        if not stat.S_ISLNK(info.st_mode):
            return info.st_mode
        try:
            target = path.resolve(strict=True)
            info = os.stat(path)
        except (OSError, RuntimeError) as exc:
            raise InputError(f"{path}: broken or looping symlink ({exc.__class__.__name__})") from exc
        if not self.allow_symlinks and not target.is_relative_to(self.fence):
            raise outside_error(path, target, self.fence)
        return info.st_mode


def list_local(root: Path, *, fence: Path, allow_symlinks: bool) -> tuple[str, ...]:
    """Every file under ``root`` as sorted relative POSIX names, checked by the fence on the way: symlinks (file
    or directory) must resolve inside ``fence`` unless ``allow_symlinks``; anything but a regular file or a
    directory (a FIFO, a device, a socket, a broken link) is refused. Nothing is opened."""
    walker = _Walker(root, fence, allow_symlinks)
    walker.walk(root, "", 0)
    return tuple(sorted(walker.found))


def excluding_lock(names: Iterable[str], root: Path, lock_path: Path | None) -> tuple[str, ...]:
    """``names`` without the lock itself, its sidecars and its temp files, when the lock lives inside ``root``
    (an adapter locked in place: ``generate --adapter .``)."""
    names = tuple(names)
    if lock_path is None:
        return names
    try:
        rel = lock_path.parent.resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):
        return names
    where = "" if rel == Path(".") else rel.as_posix() + "/"
    lock = lock_path.name

    def ours(name: str) -> bool:
        if not name.startswith(where) or "/" in name[len(where) :]:
            return False
        base = name[len(where) :]
        return (
            base == lock
            or (base.startswith(f"{lock}.probe-") and base.endswith(".json"))
            or (base.startswith(f".{lock}.") and base.endswith(".tmp"))
        )

    return tuple(n for n in names if not ours(n))


def planted_adapter(names: Iterable[str]) -> list[str]:
    """The adapter-shaped files at the top of a base's file set (transformers would load that adapter)."""
    return sorted(n for n in names if n in ADAPTER_SHAPED)


def planted_finding(root: object, planted: list[str]) -> Finding:
    """``BASE-PLANTED-ADAPTER``: adapter files in the base directory, which transformers would load into the base."""
    return Finding(
        "BASE-PLANTED-ADAPTER",
        Category.BASE,
        Severity.ERROR,
        f"the base directory {root} holds an adapter ({', '.join(planted)}): "
        "AutoModelForCausalLM.from_pretrained(base) loads it into the base, so every adapter served on it runs "
        "over a changed model",
        subject=planted[0],
        expected="no adapter files in the base",
        actual=", ".join(planted),
        hint="remove the adapter files from the base directory (lock an adapter with --adapter instead)",
    )


def stray_weights_finding(root: object, names: Iterable[str], used: Iterable[str]) -> Finding | None:
    """Top-level ``*.safetensors`` the checkpoint does not use: vLLM loads every one of them when there is no
    index, transformers does not, so the two serve different weights."""
    used = set(used)
    stray = sorted(n for n in names if "/" not in n and n.endswith(".safetensors") and n not in used)
    stray = [n for n in stray if n not in ADAPTER_SHAPED]
    if not stray:
        return None
    return Finding(
        "BASE-STRAY-WEIGHTS",
        Category.BASE,
        Severity.WARNING,
        f"{root} holds {len(stray)} safetensors file(s) the checkpoint does not use ({', '.join(stray[:4])}"
        f"{', …' if len(stray) > 4 else ''}); loaders that read every *.safetensors of a folder (vLLM without an "
        "index) load them too",
        subject=stray[0],
        actual=", ".join(stray),
        hint="remove the stray files; they are locked with their digests like every file",
    )
