"""The fence: which paths lora-lock may open, and how it opens them.

Every reader goes through here. A name inside a source is checked component by component before anything is
opened: it must be a plain relative path (no ``..``, no absolute, drive or UNC form on any OS), every symlink
along the way must resolve inside the fence (the source's directory, or the Hub cache repo its snapshot links
into) unless symlinks are explicitly allowed, and the file itself must be a regular file. Files are opened with
``O_NONBLOCK`` (a FIFO swapped in after the check cannot hang the run), re-checked with ``fstat`` after the open,
and read up to a size bound chosen for their kind, so a link to ``/dev/zero`` or a FIFO ends in a clear error,
never in a hang or an exhausted memory.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from lora_lock.errors import InputError
from lora_lock.text import brief

MiB = 1 << 20

#: Size bounds per kind of file read whole (bytes). Weights are never read whole: headers have their own cap.
LIMITS = {
    "config": 16 * MiB,  # config.json, generation_config.json, special tokens, chat_template.json
    # adapter_config.json: a few KB; a per-module rank_pattern + alpha_pattern of a 128-expert MoE is ~5 MB.
    # Parsing costs 10-25x the text in memory, and a stranger's pull request supplies this file.
    "adapter-config": 8 * MiB,
    "index": 64 * MiB,  # model.safetensors.index.json of the largest MoE checkpoints is ~10 MB
    "tokenizer-config": 32 * MiB,  # tokenizer_config.json (chat templates, added_tokens_decoder)
    "tokenizer": 256 * MiB,  # tokenizer.json (the largest published ones are ~35 MB)
    "template": 4 * MiB,  # chat templates (*.jinja)
    "lock": 32 * MiB,
    "sidecar": 64 * MiB,
    "golden": 256 * MiB,
}

#: Windows drive (``C:``, ``C:\``, ``C:/``) and UNC (``\\server``, ``//server``) forms, refused on every OS: a lock
#: is read on runners of every kind, and on Windows these would leave the repository.
_WINDOWS_FORM = re.compile(r"^([A-Za-z]:|[\\/]{2})")


def windows_form(name: str) -> bool:
    """True when ``name`` is a Windows drive or UNC path (refused in lock paths on every OS)."""
    return bool(_WINDOWS_FORM.match(name))


def check_name(name: str, where: object) -> PurePosixPath:
    """A file name from an untrusted document, as a plain relative POSIX path, or an :class:`InputError`."""
    pure = PurePosixPath(name)
    if (
        not name
        or pure.is_absolute()
        or windows_form(name)
        or ".." in pure.parts
        or "\\" in name
        or "\x00" in name
        or len(name.encode("utf-8", "surrogatepass")) > 1024
        or any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in pure.parts)
    ):
        raise InputError(
            f"{where}: file name {brief(name)} must be a short plain relative path (no '..', no absolute, drive "
            "or UNC form)"
        )
    return pure


def _kind_of(mode: int) -> str:
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def special_error(path: Path, mode: int) -> InputError:
    """The error for a path that is not a regular file (a FIFO, a device, a socket, a directory), naming its kind."""
    return InputError(
        f"{path}: is {_kind_of(mode)}, not a regular file; lora-lock opens regular files only",
        hint="replace it with the real file",
    )


def outside_error(path: Path, target: Path, fence: Path) -> InputError:
    """The error for a symlink that leads outside the directory being locked, with the way to allow it."""
    return InputError(
        f"{path}: symlink points outside the locked directory {fence} (to {target})",
        hint="copy the file into the directory, or pass --allow-symlinks if the link is intended",
    )


def resolve_fence(root: Path, contain: Path | None = None) -> Path:
    """The directory symlinks may point into: ``contain`` (a Hub cache repo) or the source directory itself."""
    try:
        return (contain or root).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise InputError(f"{contain or root}: cannot resolve the directory ({exc.__class__.__name__})") from exc


def admit(root: Path, name: str, *, fence: Path, allow_symlinks: bool, where: object = None) -> os.stat_result:
    """Check ``root/name`` before any open: each component that is a symlink must resolve inside ``fence``
    (unless ``allow_symlinks``), and the file must be a regular file. Returns its ``stat`` (following links)."""
    pure = check_name(name, where or root)
    current = root
    for part in pure.parts:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError as exc:
            raise InputError(f"{current}: file not found") from exc
        except OSError as exc:
            raise InputError(f"{current}: cannot inspect: {exc.strerror or exc}") from exc
        if stat.S_ISLNK(info.st_mode):
            try:
                target = current.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                raise InputError(f"{current}: broken or looping symlink ({exc.__class__.__name__})") from exc
            if not allow_symlinks and not target.is_relative_to(fence):
                raise outside_error(current, target, fence)
    try:
        info = os.stat(current)
    except OSError as exc:
        raise InputError(f"{current}: cannot inspect: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise special_error(current, info.st_mode)
    return info


@contextmanager
def open_regular(path: Path, expect: os.stat_result | None = None, *, buffering: int = -1) -> Iterator[BinaryIO]:
    """Open ``path`` for reading only if it is a regular file, without blocking on a FIFO, and re-check after the
    open that it is a regular file (and, with ``expect``, the very file that was checked)."""
    try:
        before = os.stat(path)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(before.st_mode):
        raise special_error(path, before.st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode):
            raise special_error(path, after.st_mode)
        for ref in (before, expect):
            if ref is not None and (ref.st_dev, ref.st_ino) != (after.st_dev, after.st_ino):
                raise InputError(
                    f"{path}: the file was replaced while it was being opened",
                    hint="wait for the writer (a download, a sync) to finish, then run again",
                )
        fh = os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def read_bounded(path: Path, kind: str, expect: os.stat_result | None = None) -> bytes:
    """The whole content of a regular file, refused above the size bound of its ``kind`` (see :data:`LIMITS`)."""
    limit = LIMITS[kind]
    with open_regular(path, expect) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise InputError(
                f"{path}: the file is {size} bytes, above the {limit // MiB} MiB limit for a {kind} file",
                hint="this is not a file of that kind, or it was crafted; lora-lock refuses it",
            )
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if data is None or len(data) > limit:
        raise InputError(f"{path}: the file grew past the {limit // MiB} MiB limit for a {kind} file while read")
    return data


def read_text(path: Path, kind: str, expect: os.stat_result | None = None) -> str:
    """:func:`read_bounded` decoded as UTF-8."""
    data = read_bounded(path, kind, expect)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from exc


def repository_root(lock_dir: Path) -> Path:
    """The repository a lock belongs to: the nearest ancestor holding ``.git`` (a directory, or the file a
    worktree or submodule has), found without running git; the lock's own directory when there is none."""
    start = lock_dir.resolve()
    for candidate in (start, *start.parents):
        if os.path.lexists(candidate / ".git"):
            return candidate
    return start


def inside_repository(path: Path, lock_dir: Path) -> tuple[bool, Path]:
    """Whether ``path`` (resolved) lies inside the lock's repository, and that repository's root."""
    top = repository_root(lock_dir)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return False, top
    return resolved.is_relative_to(top), top


def read_beside(path: Path, kind: str) -> str:
    """A file that lives beside a lock (its sidecar, its golden set): refused when it, or a symlink on the way,
    leads outside the lock's repository; then read as UTF-8 text within the bound of ``kind``."""
    info = admit(path.parent, path.name, fence=repository_root(path.parent), allow_symlinks=False)
    return read_text(path, kind, info)


def named_by_lock(lock_dir: Path, name: str, what: str) -> Path:
    """A file the lock names by a path relative to its directory (the golden set): the path must stay inside
    the lock's repository, and so must every symlink on the way, and it must be a regular file. Returns the path
    to read (with :func:`read_bounded`, which re-checks it after the open). A fork's lock cannot make verify read,
    hash or report on a runner's file outside the checkout."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or windows_form(name) or "\\" in name or "\x00" in name:
        raise InputError(f"the lock's {what} {brief(name)} must be a relative POSIX path")
    top = repository_root(lock_dir)
    path = lock_dir / Path(*pure.parts)
    try:
        lexical = Path(os.path.normpath(lock_dir.resolve() / Path(*pure.parts)))
    except (OSError, RuntimeError) as exc:
        raise InputError(f"the lock's {what} {brief(name)}: cannot resolve ({exc.__class__.__name__})") from exc
    if not lexical.is_relative_to(top):
        raise InputError(
            f"the lock's {what} {brief(name)} leads outside the lock's repository {top}",
            hint="keep the file inside the repository the lock belongs to",
        )
    rel = lexical.relative_to(top).as_posix()
    admit(top, rel, fence=top, allow_symlinks=False, where=f"the lock's {what}")
    return path
