"""The command line. The only module that parses argv, prints, reads environment variables or exits."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from lora_lock._version import __version__
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


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its message short and ours."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        _say(f"lora-lock: error: {message}")
        raise SystemExit(EXIT_ERROR)


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
    from lora_lock.commands.verify_partial import lock_path
    from lora_lock.lock.io import read
    from lora_lock.report.where import locator

    path = lock_path(args.lockfile)
    try:
        lock = read(path)
    except InputError:  # the report already says what is wrong with the lock
        return None
    return locator(path, lock, args.lockfile)


def _cmd_list(args: argparse.Namespace) -> int:
    import json

    from lora_lock.commands import fleet
    from lora_lock.commands.verify_partial import lock_path
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
    parser = _Parser(prog="lora-lock", description="Lock a LoRA adapter to the exact base it was trained on.")
    parser.add_argument("--version", action="version", version=f"lora-lock {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of unexpected errors")
    # Also accepted after the command (`lora-lock verify --verbose`); SUPPRESS keeps the top-level value otherwise.
    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    formats = [f.value for f in Format]

    p = sub.add_parser("check", parents=[common], help="does an adapter fit a base? (static: headers and configs only)")
    p.add_argument("adapter", help="adapter directory or Hub repo id org/name[@revision]")
    p.add_argument(
        "--base", metavar="SRC", help="base: directory or org/name[@revision] (default: what the adapter names)"
    )
    p.add_argument("--format", choices=formats, default="text")
    p.add_argument(
        "--allow-symlinks", action="store_true", help="accept symlinks that point outside the adapter or base directory"
    )
    p.add_argument(
        "--stack",
        metavar="SPEC",
        help="apply the load rules of this stack, e.g. transformers==5.23.0,peft==0.21.2 or transformers==4.57.1 "
        "(default: the installed versions)",
    )
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("generate", parents=[common], help="write lora.lock for one or more adapters over one base")
    p.add_argument(
        "--adapter",
        action="append",
        metavar="SRC",
        help="adapter: directory or org/name[@revision] (repeat for several adapters over one base)",
    )
    p.add_argument(
        "--name",
        action="append",
        metavar="NAME",
        help="the lock's name of each --adapter, in order (default: its directory or repo name)",
    )
    p.add_argument(
        "--from-lock",
        nargs="?",
        const="lora.lock",
        metavar="LOCK",
        help="regenerate LOCK (default lora.lock, or a directory holding it) from its own sources, adapter names, "
        "probe prompts, golden file and probe device/dtype; options given as well override the lock's",
    )
    p.add_argument(
        "--base", metavar="SRC", help="base: directory or org/name[@revision] (default: what the adapter names)"
    )
    p.add_argument("--tokenizer", metavar="SRC", help="tokenizer: directory or org/name[@revision] (default: the base)")
    p.add_argument("-o", "--output", help="lock file to write (default: lora.lock, or the --from-lock lock)")
    p.add_argument(
        "--allow-symlinks", action="store_true", help="accept symlinks that point outside the locked directories"
    )
    p.add_argument("--format", choices=formats, default="text", help="format of the report when refused")
    p.add_argument(
        "--download",
        action="store_true",
        help="download Hub weights into the cache and hash them (default: digests from Hub metadata, no download)",
    )
    p.add_argument(
        "--probe",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="record the adapter-effect probe (default: on when torch, transformers and peft are installed)",
    )
    p.add_argument("--probe-prompts", metavar="FILE", help="probe prompts: one per line, or JSONL with `prompt`")
    p.add_argument("--golden", metavar="FILE", help="golden dataset (JSONL) whose per-item results to lock")
    p.add_argument("--device", help="device for the probe: auto (default), cpu, cuda or cuda:N")
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="dtype for the probe (auto: float32 on CPU, bfloat16 on CUDA)",
    )
    p.set_defaults(func=_cmd_generate)

    cats = ",".join(c.value for c in Category if c is not Category.INPUT)
    p = sub.add_parser("verify", parents=[common], help="re-check everything a lock pins; exit 1 on drift")
    p.add_argument("lockfile", nargs="?", default="lora.lock", help="the lock (default: lora.lock)")
    p.add_argument("--only", metavar="CATS", help=f"comma-separated categories to check ({cats})")
    p.add_argument("--skip", metavar="CATS", help="comma-separated categories to skip")
    p.add_argument("--adapter", action="append", metavar="NAME", help="verify only this adapter (repeatable)")
    p.add_argument(
        "--allow-symlinks", action="store_true", help="accept symlinks that point outside the locked directories"
    )
    p.add_argument(
        "--allow-outside-sources",
        action="store_true",
        help="accept lock sources outside the lock's repository (its git top-level, or the lock's directory)",
    )
    p.add_argument("--format", choices=formats, default="text")
    p.add_argument(
        "--deep",
        action="store_true",
        help="re-hash every byte, also of Hub cache files whose blob names already prove their digest",
    )
    p.add_argument("--device", default="auto", help="device for the effect probe: auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--max-nfr",
        type=float,
        metavar="RATE",
        help="golden set: highest allowed negative flip rate, 0..1 (default 0.01)",
    )
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "outdated", parents=[common], help="has a Hub branch or tag the lock was resolved from moved? exit 1 if so"
    )
    p.add_argument("lockfile", nargs="?", default="lora.lock", help="the lock (default: lora.lock)")
    p.add_argument("--format", choices=formats, default="text")
    p.set_defaults(func=_cmd_outdated)

    p = sub.add_parser(
        "list", parents=[common], help="the adapters of a lock (one per line, or a CI matrix with --format json)"
    )
    p.add_argument("lockfile", nargs="?", default="lora.lock")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser(
        "export-env", parents=[common], help="pip constraints pinning the lock's environment (for containers)"
    )
    p.add_argument("lockfile", nargs="?", default="lora.lock")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_export_env)

    p = sub.add_parser("diff", parents=[common], help="what changed between two locks; exit 1 when they differ")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--format", choices=["text", "json", "markdown"], default="text", help="markdown: for a PR comment")
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser("schema", parents=[common], help="print the JSON Schema of lora.lock")
    p.set_defaults(func=_cmd_schema)
    return parser


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
    raise SystemExit(main())
