"""The command line. The only module that parses argv, prints, reads environment variables or exits."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

from lora_lock._version import __version__
from lora_lock.errors import LoraLockError
from lora_lock.models import Report
from lora_lock.report import Format, renderer_for

EXIT_OK, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its message short and ours."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"lora-lock: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


def _use_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty()


def _emit(report: Report, args: argparse.Namespace, source: str = "lora.lock") -> int:
    fmt = Format(args.format)
    text = renderer_for(fmt, color=_use_color(sys.stdout), source=source).render(report)
    sys.stdout.write(text)
    return report.status.exit_code


def _cmd_check(args: argparse.Namespace) -> int:
    from lora_lock.checker import check

    return _emit(check(args.adapter, args.base), args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lora-lock", description="Lock a LoRA adapter to the exact base it was trained on.")
    parser.add_argument("--version", action="version", version=f"lora-lock {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    formats = [f.value for f in Format]

    p = sub.add_parser("check", help="does an adapter fit a base? (static: headers and configs only)")
    p.add_argument("adapter", help="adapter directory (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--base", help="base model directory (default: the base the adapter config names)")
    p.add_argument("--format", choices=formats, default="text")
    p.set_defaults(func=_cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 pass, 1 drift, 2 unusable input or tool failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except LoraLockError as exc:
        if args.verbose:
            raise
        print(f"lora-lock: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("lora-lock: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI boundary: anything unexpected is a tool failure (exit 2), not a traceback
        if args.verbose:
            raise
        print(f"lora-lock: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: re-run with --verbose for the traceback and report it", file=sys.stderr)
        return EXIT_ERROR


def entry() -> NoReturn:
    raise SystemExit(main())
