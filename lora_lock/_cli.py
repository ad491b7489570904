"""The command line. The only module that parses argv, prints, reads environment variables or exits."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from lora_lock.errors import InputError, LoraLockError
from lora_lock.findings import Category, Report, Severity
from lora_lock.report import Format, renderer_for

EXIT_OK, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2


def _say(text: str, stream: TextIO | None = None) -> None:
    """Write one message line to stderr (or ``stream``). Every line the CLI writes itself goes through here: the
    values it quotes (adapter names, paths, lock strings, foreign exception texts) are sanitised to one line, so
    none can forge a workflow command or move a terminal's cursor."""
    from lora_lock.report.sanitize import line

    (stream or sys.stderr).write(line(text) + "\n")


def _write(text: str, stream: TextIO | None = None) -> None:
    """Write a multi-line document the CLI assembled from untrusted values (a diff, a name list, constraints) to
    stdout (or ``stream``), sanitised line by line. Reports go through their renderer instead (:func:`_emit`):
    each renderer sanitises the values it places, and the ``github`` one writes workflow commands on purpose."""
    from lora_lock.report.sanitize import text as clean

    (stream or sys.stdout).write(clean(text))


def _use_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty()


def _emit(report: Report, args: argparse.Namespace, source: str | None = "lora.lock", locate: Any = None) -> int:
    fmt = Format(args.format)
    text = renderer_for(fmt, color=_use_color(sys.stdout), source=source, locate=locate).render(report)
    sys.stdout.write(text)
    return report.status.exit_code


def _cmd_check(args: argparse.Namespace) -> int:
    from lora_lock.commands.check import check
    from lora_lock.runtime import parse_stack

    # A bad --stack is a usage error (exit 2, one paragraph), raised before anything is read.
    stack = parse_stack(args.stack) if args.stack is not None else None
    return _emit(
        check(args.adapter, args.base, allow_symlinks=args.allow_symlinks, stack=stack),
        args,
        source=_adapter_config_file(args.adapter),
    )


def _adapter_config_file(adapter: str) -> str | None:
    """Where ``check`` annotations point: the adapter's config when it is a local directory (a Hub id is no
    workspace file), relative to the working directory when it lies under it, as a workflow's paths do."""
    config = Path(adapter) / "adapter_config.json"
    try:
        if not config.is_file():
            return None
        return config.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return config.as_posix()
    except OSError:  # a name too long for the filesystem, say: the report already says what is wrong with it
        return None


def _categories(text: str | None) -> frozenset[Category] | None:
    if text is None:
        return None
    try:
        return Category.parse_list(text)
    except ValueError as exc:
        raise InputError(f"--only/--skip: {exc}") from exc


class _Progress:
    """A rich progress bar on stderr, shown only on a terminal and only once hashing has run for a second."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty() and not os.environ.get("CI")
        self.start = time.monotonic()
        self.done = 0
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, nbytes: int) -> None:
        self.done += nbytes
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.start < 1.0:
                return
            from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

            self.bar = Progress(
                *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True, console=None
            )
            self.bar.start()
            self.task = self.bar.add_task("hashing", total=None)
        self.bar.update(self.task, completed=self.done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _Steps:
    """A rich progress bar on stderr for the probe and golden set (terminal only)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty() and not os.environ.get("CI")
        self.bar: Any = None
        self.task: Any = None
        self.total = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
        if self.task is None or total != self.total:  # the golden set follows the probe: a bar of its own
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task, self.total = self.bar.add_task("probing", total=total), total
        self.bar.update(self.task, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _cmd_generate(args: argparse.Namespace) -> int:
    import tempfile

    from lora_lock.commands.generate import generate
    from lora_lock.findings import input_finding

    progress, steps = _Progress(), _Steps()
    try:
        with tempfile.TemporaryDirectory(prefix="lora-lock-") as scratch:
            from lora_lock.commands.relock import generate_arguments

            chosen = generate_arguments(args, Path(scratch))
            args.adapter = chosen["adapters"]
            result = generate(
                chosen.pop("adapters"),
                chosen.pop("base"),
                chosen.pop("output"),
                allow_symlinks=args.allow_symlinks,
                download=args.download,
                progress=progress,
                probe_step=steps,
                **chosen,
            )
    except InputError as exc:
        if Format(args.format) is Format.TEXT:
            raise  # the usual one-paragraph message on stderr
        # A machine-read format gets a report even when nothing could be locked, as `check` and `verify` give.
        return _emit(Report.build([input_finding(exc)], ran=(), title="lora-lock generate"), args, source=None)
    finally:
        progress.close()
        steps.close()
    if not result.written and result.lock is None:
        _say(f"lora-lock: not writing {result.path}: the adapter does not fit the base")
        only_one = args.adapter[0] if len(args.adapter) == 1 else None
        return _emit(result.report, args, source=_adapter_config_file(only_one) if only_one else None)
    for finding in result.report.findings:
        if finding.severity is not Severity.INFO:
            _say(f"{finding.severity.value}: {finding.code} {finding.message}")
    state = "wrote" if result.written else "up to date:"
    _say(f"lora-lock: {state} {result.path}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from lora_lock.commands.verify import verify

    progress, steps = _Progress(), _Steps()
    try:
        report = verify(
            args.lockfile,
            only=_categories(args.only),
            skip=_categories(args.skip) or (),
            adapters=args.adapter or None,
            allow_symlinks=args.allow_symlinks,
            allow_outside_sources=args.allow_outside_sources,
            deep=args.deep,
            device=args.device,
            max_nfr=args.max_nfr,
            progress=progress,
            probe_step=steps,
        )
    finally:
        progress.close()
        steps.close()
    return _emit(report, args, source=args.lockfile, locate=_locator(args))


def _locator(args: argparse.Namespace) -> Any:
    """``verify --format github``: annotate each finding on the file that changed, where it has one."""
    if args.format != Format.GITHUB.value:
        return None
    from lora_lock.report.where import for_lock

    return for_lock(args.lockfile, args.lockfile)


def _cmd_list(args: argparse.Namespace) -> int:
    import json

    from lora_lock.commands import fleet
    from lora_lock.lock.io import lock_path
    from lora_lock.report.fleet import matrix_json, name_lines

    if args.format == "json":
        try:
            text = matrix_json(fleet.adapter_names(lock_path(args.lockfile)))
        except InputError as exc:
            # A machine reads this: a JSON document saying why, not plain text its parser chokes on (exit 2 still
            # fails the job, rather than an empty matrix that runs nothing).
            _say(f"lora-lock: error: {exc.message}")
            _write(json.dumps({"adapter": [], "error": {"message": exc.message, "hint": exc.hint}}) + "\n")
            return EXIT_ERROR
        _write(text)
    else:
        _write(name_lines(fleet.adapter_names(lock_path(args.lockfile))))
    return 0


def _cmd_export_env(args: argparse.Namespace) -> int:
    from lora_lock.commands.fleet import pins
    from lora_lock.lock.io import write_atomic
    from lora_lock.report.fleet import constraints

    text = constraints(pins(args.lockfile))
    from lora_lock.report.sanitize import text as clean

    if args.output in (None, "-"):
        _write(text)
    else:
        write_atomic(Path(args.output), clean(text))
        _say(f"lora-lock: wrote {args.output}")
    return 0


def _cmd_outdated(args: argparse.Namespace) -> int:
    from lora_lock.commands.outdated import outdated

    return _emit(outdated(args.lockfile), args, source=args.lockfile)


def _cmd_diff(args: argparse.Namespace) -> int:
    from lora_lock.lock.diff import diff
    from lora_lock.report import Format
    from lora_lock.report.diff import render_diff

    result = diff(args.old, args.new)
    _write(render_diff(result, Format(args.format)))
    return 0 if result.identical else EXIT_DRIFT


def _cmd_schema(args: argparse.Namespace) -> int:
    from lora_lock.lock.io import schema_text

    _write(schema_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``lora-lock`` argument parser, each command bound to its handler here."""
    from lora_lock._cli_parser import build_parser as build

    return build(
        {
            "check": _cmd_check,
            "generate": _cmd_generate,
            "verify": _cmd_verify,
            "outdated": _cmd_outdated,
            "list": _cmd_list,
            "export-env": _cmd_export_env,
            "diff": _cmd_diff,
            "schema": _cmd_schema,
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 pass, 1 drift, 2 unusable input or tool failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    from lora_lock import userregex

    try:
        with userregex.budget():  # one budget for all user-written patterns of the command
            return func(args)
    except LoraLockError as exc:
        if args.verbose:
            raise
        _say(f"lora-lock: error: {exc.message}")
        if exc.hint:
            _say(f"hint: {exc.hint}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _say("lora-lock: interrupted")
        return 130
    except BrokenPipeError:  # `lora-lock … | head`: the reader left; say nothing more, as a killed writer would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # the shell's status for SIGPIPE
    except Exception as exc:  # the CLI boundary: anything unexpected is a tool failure (exit 2), not a traceback
        if args.verbose:
            raise
        _say(f"lora-lock: internal error: {type(exc).__name__}: {_exception_text(exc)}")
        _say("hint: re-run with --verbose for the traceback and report it")
        return EXIT_ERROR


def _exception_text(exc: BaseException) -> str:
    """``str(exc)`` of a foreign exception, which may itself fail (a crafted ``__str__``, a huge integer)."""
    try:
        return str(exc)[:2000]
    except Exception:  # the error line must be written whatever the exception holds
        return "(its message cannot be shown)"


def entry() -> NoReturn:
    """The console script: run :func:`main` on ``sys.argv`` and exit with its code (0 pass, 1 fail, 2 error)."""
    raise SystemExit(main())
