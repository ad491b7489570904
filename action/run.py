"""The two steps of the lora-lock GitHub Action (``action.yml``): ``setup`` and ``verify``.

Inputs arrive as ``INPUT_*`` environment variables: ``action.yml`` maps each input in a step's ``env:`` and never
expands one inside a script. Both steps validate every input the same way (flag-like values, unknown choices and
paths that leave the workspace are refused with an ``::error::`` and exit 2) before anything runs.

- ``setup`` runs with the job's Python before lora-lock is installed, so it uses the standard library only. It
  installs the action's own checkout (``$GITHUB_ACTION_PATH``: the tool version is the action version) into the
  job's Python, or into a venv under ``$RUNNER_TEMP`` with ``isolated: true``, and outputs that Python's path.
- ``verify`` runs with that Python: ``lora-lock verify --format json`` once, to a report file, then renders the same
  report as markdown (the job summary) and as workflow commands (annotations) with lora-lock's own renderers.

The Hugging Face token (``INPUT_HF_TOKEN``) is read by ``verify`` only, masked, handed to lora-lock as ``HF_TOKEN``
and never printed or written anywhere.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import installer  # action/installer.py: this script's directory is first on sys.path

#: Every category ``lora-lock verify`` knows, in report order (tests/action/test_action.py compares with lora_lock).
CATEGORIES = ("base", "tokenizer", "adapter", "compat", "quantization", "environment", "effect", "golden")
#: The static tier: no torch needed (lora_lock.commands.verify.STATIC_CATEGORIES).
STATIC = CATEGORIES[:6]
#: What only the full tier checks, with the probe stack.
BEHAVIOUR = ("effect", "golden")
PROBE_STACK = ("torch", "transformers", "peft")
TIERS = ("static", "full")
FAIL_ON = ("error", "warning")
DEVICE = re.compile(r"(auto|cpu|cuda(:[0-9]{1,2})?)")
EXIT_OK, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
TITLE = "lora-lock"
#: Runs the CLI with the action's directory, not the checkout, first on ``sys.path`` (see cli.py).
CLI = str(Path(__file__).resolve().parent / "cli.py")
PROBE_HINT = (
    "install the probe stack first: pip install 'lora-lock[probe]' (or your own pinned torch/transformers/peft)"
)


class ActionError(Exception):
    """An unusable input or set-up: the message (and hint) is for the user and never holds a secret."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# ---------------------------------------------------------------------------------------------------- output


def _escape(text: str) -> str:
    """Escape a workflow-command message the way @actions/core does, so no value can start a new command."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _command(kind: str, message: str) -> None:
    _say(f"::{kind} title={TITLE}::{_escape(message)}")


def _show(value: str) -> str:
    """A user value for a message: quoted, control characters escaped, bounded."""
    return repr(value if len(value) <= 80 else value[:80] + "…")


def _set_outputs(values: Mapping[str, str]) -> None:
    path = os.environ.get("GITHUB_OUTPUT")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.writelines(f"{key}={value}\n" for key, value in values.items())
    except OSError as exc:
        _command("warning", f"could not write the step outputs to $GITHUB_OUTPUT: {exc.strerror}")


# ---------------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Config:
    """The validated inputs. The token is deliberately not here (a config may be shown; the token never is)."""

    workspace: Path
    workdir: Path
    lockfile: str  # as handed to the CLI, relative to ``workdir`` when possible
    display: str  # POSIX path relative to the workspace: annotations and titles
    tier: str
    categories: tuple[str, ...]
    device: str
    deep: bool
    adapter: str | None
    fail_on: str
    summary: bool
    isolated: bool
    install: bool
    notes: tuple[str, ...] = ()


def _raw(env: Mapping[str, str], name: str, default: str = "") -> str:
    """Input ``name`` (as in action.yml) from ``INPUT_NAME``; empty means the default. Flag-like values are refused."""
    value = env.get("INPUT_" + name.upper().replace("-", "_"), "").strip() or default
    if value.startswith("-"):
        raise ActionError(
            f"input `{name}` looks like a command-line option ({_show(value)}); inputs are values, never flags",
            hint=f"set `{name}` to a plain value, such as the input's default",
        )
    return value


def _single_line(name: str, value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ActionError(f"input `{name}` contains a control character or a line break ({_show(value)})")
    return value


def _choice(env: Mapping[str, str], name: str, choices: Sequence[str], default: str) -> str:
    value = _raw(env, name, default).lower()
    if value not in choices:
        raise ActionError(f"input `{name}` must be one of {', '.join(choices)}, not {_show(value)}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    return _choice(env, name, ("true", "false"), "true" if default else "false") == "true"


def _category_list(env: Mapping[str, str], name: str) -> list[str]:
    value = _raw(env, name)
    names = [part.lower() for part in re.split(r"[,\s]+", value) if part]
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown:
        raise ActionError(
            f"input `{name}`: unknown categor{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(_show(n) for n in unknown)}; choose from {', '.join(CATEGORIES)}"
        )
    return names


def _inside(path: str, root: str) -> bool:
    """Is ``path`` (symlinks resolved) ``root`` or below it?"""
    real = os.path.realpath(path)
    try:
        return os.path.commonpath([real, root]) == root
    except ValueError:  # different drives on Windows
        return False


def _workspace_path(name: str, value: str, base: str, workspace: str) -> str:
    """``value`` (relative to ``base``, or absolute) as a normalised absolute path that stays in the workspace."""
    _single_line(name, value)
    path = os.path.normpath(value if os.path.isabs(value) else os.path.join(base, value))
    if not _inside(path, os.path.realpath(workspace)):
        raise ActionError(
            f"input `{name}` ({_show(value)}) points outside the workspace ($GITHUB_WORKSPACE)",
            hint="use a path inside the repository checkout, relative to `working-directory`",
        )
    return path


def _select(tier: str, isolated: bool, only: list[str], skip: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The categories to check, and notes for the log."""
    notes: list[str] = []
    in_tier = list(STATIC if tier == "static" else CATEGORIES)
    if isolated:
        in_tier.remove("environment")
        notes.append(
            "isolated: true leaves out the `environment` category: it would check the action's own venv, not the "
            "Python your adapters run with (the full tier, in your own environment, checks it)"
        )
    outside = [c for c in only if c not in in_tier]
    if outside:
        if isolated and "environment" in outside:
            hint = "drop `isolated: true` to check the job's environment"
        else:
            hint = "use `tier: full` (on a runner with torch, transformers and peft) for effect and golden"
        raise ActionError(f"input `only`: {', '.join(outside)} is not part of the {tier} tier here", hint=hint)
    chosen = [c for c in in_tier if (not only or c in only) and c not in skip]
    if not chosen:
        raise ActionError("inputs `only` and `skip` leave nothing to verify")
    return tuple(chosen), tuple(notes)


def load_config(env: Mapping[str, str]) -> Config:
    """Validate every input (except the token, read by ``verify`` alone). Raises :class:`ActionError`."""
    workspace_raw = env.get("GITHUB_WORKSPACE", "")
    if not workspace_raw or not os.path.isdir(workspace_raw):
        raise ActionError("$GITHUB_WORKSPACE is not set or not a directory: run this script through action.yml")
    workspace = os.path.normpath(os.path.abspath(workspace_raw))

    tier = _choice(env, "tier", TIERS, "static")
    fail_on = _choice(env, "fail-on", FAIL_ON, "error")
    device = _single_line("device", _raw(env, "device", "auto").lower())
    if not DEVICE.fullmatch(device):
        raise ActionError(f"input `device` must be auto, cpu, cuda or cuda:N, not {_show(device)}")
    deep = _flag(env, "deep", False)
    summary = _flag(env, "summary", True)
    install = _flag(env, "install", True)
    # `auto`: the static tier runs in its own venv (its `environment` check would otherwise compare the lock with
    # whatever the runner's Python happens to hold); the full tier must use the job's torch/transformers/peft.
    isolated = (
        tier == "static" and install
        if _raw(env, "isolated", "auto").lower() == "auto"
        else _flag(env, "isolated", False)
    )
    adapter = _single_line("adapter", _raw(env, "adapter")) or None
    if adapter is not None and len(adapter) > 200:
        raise ActionError("input `adapter` is longer than 200 characters")
    if isolated and tier == "full":
        raise ActionError(
            "tier: full cannot run with isolated: true: the probe must use the job's own torch, transformers and "
            "peft (the lock's environment section checks exactly those)",
            hint="drop `isolated: true` for the full tier",
        )
    if isolated and not install:
        raise ActionError(
            "isolated: true installs lora-lock into its own venv; it cannot be combined with install: false"
        )
    categories, notes = _select(tier, isolated, _category_list(env, "only"), _category_list(env, "skip"))

    workdir = _workspace_path("working-directory", _raw(env, "working-directory", "."), workspace, workspace)
    if not os.path.isdir(workdir):
        raise ActionError(f"input `working-directory`: {_show(os.path.relpath(workdir, workspace))} is not a directory")
    lockfile = _workspace_path("lockfile", _raw(env, "lockfile", "lora.lock"), workdir, workspace)
    display = Path(os.path.relpath(lockfile, workspace)).as_posix()
    if not os.path.isfile(lockfile):
        raise ActionError(
            f"lock file {_show(display)} not found in the workspace",
            hint="create it with `lora-lock generate` and commit it, or set the `lockfile` input",
        )
    if any(c in BEHAVIOUR for c in categories):
        missing = [m for m in PROBE_STACK if importlib.util.find_spec(m) is None]
        if missing:
            raise ActionError(
                f"tier: full runs the effect probe, but {', '.join(missing)} is not installed in the job's Python "
                f"({sys.executable})",
                hint=PROBE_HINT,
            )
    return Config(
        workspace=Path(workspace),
        workdir=Path(workdir),
        lockfile=os.path.relpath(lockfile, workdir),
        display=display,
        tier=tier,
        categories=categories,
        device=device,
        deep=deep,
        adapter=adapter,
        fail_on=fail_on,
        summary=summary,
        isolated=isolated,
        install=install,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------------- setup


def _runner_temp(env: Mapping[str, str]) -> Path:
    return Path(env.get("RUNNER_TEMP") or tempfile.gettempdir())


def setup(env: Mapping[str, str]) -> int:
    config = load_config(env)
    for note in config.notes:
        _command("notice", note)
    if not config.install:
        if importlib.util.find_spec("lora_lock") is None:
            raise ActionError(
                f"install: false, but lora-lock is not installed in the job's Python ({sys.executable})",
                hint="install it first (see the README's install section), or leave `install` at true",
            )
        python = sys.executable
    else:
        action_path = Path(env.get("GITHUB_ACTION_PATH", ""))
        if not (action_path / "pyproject.toml").is_file():
            raise ActionError("$GITHUB_ACTION_PATH is not the lora-lock checkout: run this script through action.yml")
        temp = _runner_temp(env)
        if config.isolated:
            _say("::group::Install lora-lock into its own venv (hash-pinned requirements)")
            try:
                python = installer.install_isolated(sys.executable, temp / "lora-lock-venv", action_path, temp)
            finally:
                _say("::endgroup::")
        else:
            _say("::group::Install lora-lock into the job's Python (changing none of its packages)")
            try:
                added = installer.install_into_job_python(sys.executable, action_path, temp)
            finally:
                _say("::endgroup::")
            _say(f"added to {sys.executable}: {', '.join(added) or 'nothing but lora-lock'}")
            python = sys.executable
    version = subprocess.run(
        [python, CLI, "--version"], cwd=_runner_temp(env), capture_output=True, text=True, check=False
    )
    if version.returncode != 0:
        raise ActionError(f"lora-lock does not run with {python}: {version.stderr.strip()[-500:]}")
    _say(f"{version.stdout.strip()} ({python}); tier {config.tier}: {', '.join(config.categories)}")
    _set_outputs({"python": python})
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- verify


def _load_report(path: Path, title: str) -> Any:
    """The JSON report as a ``lora_lock.findings.Report`` (None when the CLI wrote none)."""
    from lora_lock.findings import Report

    try:
        return Report.from_dict(json.loads(path.read_text(encoding="utf-8")), title=title)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_summary(text: str) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        _command("warning", "$GITHUB_STEP_SUMMARY is not set: no job summary written")
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        _command(
            "warning",
            f"could not write the job summary ($GITHUB_STEP_SUMMARY: {exc.strerror}); "
            "the annotations and the JSON report (output `report`) still hold every finding",
        )


def verify(env: Mapping[str, str]) -> int:
    config = load_config(env)
    child_env = {k: v for k, v in os.environ.items() if k != "INPUT_HF_TOKEN"}
    # UTF-8 whatever the runner's locale (Windows pipes default to cp1252, which cannot encode "→" or "≤").
    child_env.update({"NO_COLOR": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONIOENCODING": "utf-8"})
    token = env.get("INPUT_HF_TOKEN", "").strip()
    if token:
        for line in token.splitlines():
            if line.strip():
                _say(f"::add-mask::{line.strip()}")
        child_env["HF_TOKEN"] = token

    fd, name = tempfile.mkstemp(prefix="lora-lock-report-", suffix=".json", dir=_runner_temp(env))
    report_path = Path(name)
    argv = ["verify", "--format", "json", "--only", ",".join(config.categories), "--device", config.device]
    argv += ["--deep"] if config.deep else []
    argv += ["--adapter", config.adapter] if config.adapter else []
    argv += ["--", config.lockfile]
    from lora_lock.report import printable

    # The title carries input values (lockfile, adapter): one printable line that cannot start a command.
    _say("::group::" + printable(f"lora-lock {' '.join(argv)}").replace("\n", " "))
    with os.fdopen(fd, "wb") as out:
        code = subprocess.run(
            [sys.executable, CLI, *argv], cwd=config.workdir, env=child_env, stdout=out, check=False
        ).returncode
    _say("::endgroup::")

    title = f"lora-lock verify {config.display}"
    report = _load_report(report_path, title)
    if report is None:
        message = f"lora-lock verify exited {code} without a report (its message is in the log above)"
        _command("error", message)
        markdown_path = _error_markdown(env, message, title)
        _set_outputs(
            {
                "status": "error",
                "findings": "0",
                "errors": "0",
                "warnings": "0",
                "checked": "{}",
                "report": str(report_path),
                "markdown": str(markdown_path),
            }
        )
        return code if code in (EXIT_FAIL, EXIT_ERROR) else EXIT_ERROR

    from lora_lock.findings import Severity
    from lora_lock.report import Format, renderer_for

    sys.stdout.write(renderer_for(Format.GITHUB, source=config.display, locate=_locator(config)).render(report))
    status = report.status.value
    errors, warnings = report.count(Severity.ERROR), report.count(Severity.WARNING)
    exit_code = code if code in (EXIT_OK, EXIT_FAIL, EXIT_ERROR) else EXIT_ERROR
    asked = [c for c in config.categories if c in BEHAVIOUR]  # what this run asked for, not what it skipped
    states = [state.value for cat, state in report.checked.items() if cat.value in asked]
    own: list[str] = []  # the action's own warnings: annotations, counted, and shown in the summary
    if asked and states and set(states) == {"skipped"}:
        # The full tier was asked for, yet the lock records none of the behaviour sections it asked for: say so.
        sections = " or ".join(f"[{'probe' if c == 'effect' else c}]" for c in asked)
        own.append(
            f"tier: full, but the lock records no {sections} section: the adapter's behaviour was not checked "
            "(regenerate the lock with the probe on, and --golden FILE for a golden set)"
        )
    for message in own:
        _command("warning", message)
    warnings += len(own)
    if exit_code == EXIT_OK and config.fail_on == "warning" and warnings:
        _command("error", f"fail-on: warning, and the report has {warnings} warning(s)")
        status, exit_code = "fail", EXIT_FAIL
    markdown = _summary_markdown(report, config, status, warnings, own)
    markdown_path = report_path.with_suffix(".md")
    markdown_path.write_text(markdown, encoding="utf-8")
    if config.summary:
        _write_summary(markdown)
    _set_outputs(
        {
            "status": status,
            "findings": str(len(report.findings)),
            "errors": str(errors),
            "warnings": str(warnings),
            "report": str(report_path),
            "markdown": str(markdown_path),
            "checked": json.dumps({cat.value: state.value for cat, state in report.checked.items()}),
        }
    )
    return exit_code


def _locator(config: Config) -> Any:
    """Each finding's annotation file, as ``verify --format github`` gives it: the file that changed where it is in
    the workspace, the lock otherwise. Paths are relative to the workspace, as GitHub reads them, whatever
    `working-directory` is."""
    from lora_lock.report.where import for_lock

    return for_lock(config.workdir / config.lockfile, config.display, root=config.workspace)


def _summary_markdown(report: Any, config: Config, status: str, warnings: int, own: Sequence[str]) -> str:
    """The job summary: lora-lock's markdown report, its status line replaced when the action's verdict differs
    (``fail-on: warning``), and the action's own warnings under it."""
    from lora_lock.findings import Status
    from lora_lock.report import Format, printable, renderer_for
    from lora_lock.report.markdown import _STATUS

    markdown = renderer_for(Format.MARKDOWN).render(report)
    lines = [f"⚠️ {printable(message)}" for message in own]
    if status != report.status.value:
        verdict = f"❌ **fail**: {warnings} warning(s), and this check runs with `fail-on: warning`"
        if _STATUS[Status.PASS] in markdown:
            markdown = markdown.replace(_STATUS[Status.PASS], verdict, 1)
        else:
            lines.insert(0, verdict)
    if lines:
        head, sep, rest = markdown.partition("\n\n")  # after the title line
        status_line, _, rest2 = rest.partition("\n\n")
        markdown = head + sep + status_line + "\n\n" + "\n\n".join(lines) + "\n\n" + rest2
    return markdown + f"\n<sub>tier `{config.tier}`: {', '.join(config.categories)}</sub>\n\n"


# ---------------------------------------------------------------------------------------------------- main

STEPS: dict[str, Callable[[Mapping[str, str]], int]] = {"setup": setup, "verify": verify}


def main(argv: Sequence[str]) -> int:
    if hasattr(sys.stdout, "reconfigure"):  # annotations carry the report's "→" and "≤" on any runner's locale
        sys.stdout.reconfigure(encoding="utf-8")
    if len(argv) != 1 or argv[0] not in STEPS:
        _command("error", f"usage: run.py {{{'|'.join(STEPS)}}}")
        return EXIT_ERROR
    try:
        return STEPS[argv[0]](os.environ)
    except (ActionError, installer.InstallError, OSError) as exc:
        if isinstance(exc, (ActionError, installer.InstallError)):
            message = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
        else:
            message = f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
        _command("error", message)
        outputs = {"status": "error", "findings": "0", "errors": "0", "warnings": "0", "checked": "{}"}
        with contextlib.suppress(OSError):  # the job summary and the `markdown` output say why, as after a report
            outputs["markdown"] = str(_error_markdown(os.environ, message))
        _set_outputs(outputs)
        return EXIT_ERROR


def _error_markdown(env: Mapping[str, str], message: str, title: str = "lora-lock verify") -> Path:
    """The job summary (unless `summary: false`) and the `markdown` output's file when there is no report."""
    fd, name = tempfile.mkstemp(prefix="lora-lock-report-", suffix=".md", dir=_runner_temp(env))
    fenced = message.replace("```", "`\u200b``")
    text = f"## {title}\n\n⛔ **error** (no report):\n\n```text\n{fenced}\n```\n"
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    if env.get("INPUT_SUMMARY", "true").strip().lower() != "false":
        _write_summary(text)
    return Path(name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
