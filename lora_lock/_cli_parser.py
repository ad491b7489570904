"""The argument parser of the command line: one function per command, each adding that command's arguments."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from lora_lock._version import __version__
from lora_lock.findings import Category
from lora_lock.report import Format

#: A command's handler: the parsed arguments in, the exit code out.
Handler = Callable[[argparse.Namespace], int]
EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its message short and ours."""

    def error(self, message: str) -> NoReturn:
        from lora_lock.report.sanitize import line

        self.print_usage(sys.stderr)
        sys.stderr.write(line(f"lora-lock: error: {message}") + "\n")
        raise SystemExit(EXIT_ERROR)


def build_parser(handlers: Mapping[str, Handler]) -> argparse.ArgumentParser:
    """The ``lora-lock`` parser; ``handlers``: each command's handler, by command name."""
    parser = _Parser(prog="lora-lock", description="Lock a LoRA adapter to the exact base it was trained on.")
    parser.add_argument("--version", action="version", version=f"lora-lock {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of unexpected errors")
    # Also accepted after the command (`lora-lock verify --verbose`); SUPPRESS keeps the top-level value otherwise.
    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (
        _add_check,
        _add_generate,
        _add_verify,
        _add_outdated,
        _add_list,
        _add_export_env,
        _add_diff,
        _add_schema,
    ):
        add(sub, common, handlers)
    return parser


def _add_check(sub: Any, common: argparse.ArgumentParser, handlers: Mapping[str, Handler]) -> None:
    """The ``check`` command's arguments."""
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
    p.set_defaults(func=handlers["check"])


def _add_generate(sub: Any, common: argparse.ArgumentParser, handlers: Mapping[str, Handler]) -> None:
    """The ``generate`` command's arguments."""
    formats = [f.value for f in Format]
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
    _add_probe_options(p)
    p.set_defaults(func=handlers["generate"])


def _add_probe_options(p: argparse.ArgumentParser) -> None:
    """``generate``'s options for the behaviour checks: the effect probe and the golden set."""
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


def _add_verify(sub: Any, common: argparse.ArgumentParser, handlers: Mapping[str, Handler]) -> None:
    """The ``verify`` command's arguments."""
    formats = [f.value for f in Format]
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
    p.set_defaults(func=handlers["verify"])


def _add_outdated(sub: Any, common: argparse.ArgumentParser, handlers: Mapping[str, Handler]) -> None:
    """The ``outdated`` command's arguments."""
    formats = [f.value for f in Format]
    p = sub.add_parser(
        "outdated", parents=[common], help="has a Hub branch or tag the lock was resolved from moved? exit 1 if so"
    )
    p.add_argument("lockfile", nargs="?", default="lora.lock", help="the lock (default: lora.lock)")
    p.add_argument("--format", choices=formats, default="text")
    p.set_defaults(func=handlers["outdated"])


def _add_list(sub: Any, common: argparse.ArgumentParser, handlers: Mapping[str, Handler]) -> None:
    """The ``list`` command's arguments."""
    p = sub.add_parser(
        "list", parents=[common], help="the adapters of a lock (one per line, or a CI matrix with --format json)"
    )
    p.add_argument("lockfile", nargs="?", default="lora.lock")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=handlers["list"])


def _add_export_env(sub: Any, common: argparse.ArgumentParser, handlers: Mapping[str, Handler]) -> None:
    """The ``export-env`` command's arguments."""
    p = sub.add_parser(
        "export-env", parents=[common], help="pip constraints pinning the lock's environment (for containers)"
    )
    p.add_argument("lockfile", nargs="?", default="lora.lock")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    p.set_defaults(func=handlers["export-env"])


def _add_diff(sub: Any, common: argparse.ArgumentParser, handlers: Mapping[str, Handler]) -> None:
    """The ``diff`` command's arguments."""
    p = sub.add_parser("diff", parents=[common], help="what changed between two locks; exit 1 when they differ")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--format", choices=["text", "json", "markdown"], default="text", help="markdown: for a PR comment")
    p.set_defaults(func=handlers["diff"])


def _add_schema(sub: Any, common: argparse.ArgumentParser, handlers: Mapping[str, Handler]) -> None:
    """The ``schema`` command's arguments."""
    p = sub.add_parser("schema", parents=[common], help="print the JSON Schema of lora.lock")
    p.set_defaults(func=handlers["schema"])
