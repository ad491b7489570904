"""One escaping boundary: whatever a lock, a config, a file name or an exception holds, no command writes a raw
control character, a bidi override or a GitHub workflow command, in any format, to stdout, stderr or a file.

Every command runs on crafted values (an adapter directory name, a planted file name, ``config.json`` and
``adapter_config.json`` values, lock strings) holding ESC sequences, CR, ``\\n::error::``, ``::add-mask::``,
``::set-output``, ``::stop-commands``, a bidi override, an 8-bit CSI and markdown links, images and HTML.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import tomllib

from lora_lock._cli import main
from lora_lock.commands.generate import generate
from lora_lock.findings import Category, Finding, Report, Severity
from lora_lock.report import Format, renderer_for, sanitize
from tests.helpers import read_toml, run_cli, write_toml

EVIL = (
    "x\x1b[2J\x1b]0;title\x07\r\n::error file=a.py::forged\n  ::add-mask::secret\n::set-output name=status::pass"
    "\n\t::stop-commands::tok\u202eevil\u2066\x9b31m\u2028 [link](http://evil.example) ![img](http://evil.example/i)"
    " <details><summary>hidden</summary> | cell `code`"
)
#: The same, usable as a file name (no slash).
EVIL_NAME = EVIL.replace("/", "_")

#: What must never be written raw (TAB and LF are allowed between lines of a multi-line document).
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: A workflow command the github renderer writes on purpose: its properties are escaped, so no ``::`` inside.
ANNOTATION = re.compile(r"::(error|warning|notice) (file=[^:\n]*,)?title=[^:\n]*::[^\n]*")
SGR = re.compile(r"\x1b\[[0-9;]*m")


def assert_safe(text: str, where: str, *, github: bool = False, markdown: bool = False) -> None:
    bad = UNSAFE.search(text)
    assert bad is None, f"{where}: raw {bad.group()!r} at {bad.start()}: {text[max(0, bad.start() - 40) :][:80]!r}"
    for line in text.splitlines():
        if re.match(r"\s*::", line):
            assert github and ANNOTATION.fullmatch(line), f"{where}: a workflow command is written: {line!r}"
    if markdown:
        assert "<summary>hidden" not in text and "](http" not in text.replace("\\](http", ""), where
        assert text.count("<details>") == text.count("<details><summary>details</summary>"), where
        for line in text.splitlines():
            if line.startswith("| ") and not line.startswith("| category") and "---" not in line:
                cells = re.split(r"(?<!\\)\|", line)
                assert len(cells) in (4, 5), f"{where}: a table row broken by a crafted '|': {line!r}"


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    """A repository whose adapter directory, planted files, configs and edited lock hold :data:`EVIL`."""
    root = tmp_path_factory.mktemp("escaping")
    shutil.copytree(tiny_llama, root / "base")
    adapter = root / EVIL_NAME
    shutil.copytree(tiny_llama_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = EVIL  # quoted by COMPAT-IDENTITY
    (adapter / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    result = generate([adapter], root / "base", root / "lora.lock", probe=False)
    assert result.written
    # After locking: a drifted config.json value, a planted file and an unusable adapter.
    base_config = json.loads((root / "base" / "config.json").read_text(encoding="utf-8"))
    base_config["architectures"] = [EVIL]
    (root / "base" / "config.json").write_text(json.dumps(base_config), encoding="utf-8")
    (root / "base" / f"{EVIL_NAME}.txt").write_text("planted", encoding="utf-8")
    bad = root / "bad"
    shutil.copytree(tiny_llama_adapter, bad)
    bad_config = json.loads((bad / "adapter_config.json").read_text(encoding="utf-8"))
    bad_config["peft_type"] = EVIL
    (bad / "adapter_config.json").write_text(json.dumps(bad_config), encoding="utf-8")

    doc = read_toml(root / "lora.lock")
    doc["adapter"][0]["name"] = EVIL
    doc["base"]["config"]["model_type"] = EVIL
    doc["adapter"][0]["files"][EVIL_NAME] = {"digest": "sha256:" + "0" * 64, "size": 1}
    write_toml(root / "edited.lock", doc)
    doc["base"]["source"] = EVIL_NAME  # a base directory that does not exist: an error paragraph quoting it
    write_toml(root / "nobase.lock", doc)
    return root


def _check_run(capsys: pytest.CaptureFixture[str], fmt: str, *argv: str) -> tuple[int, str, str]:
    rc, out, err = run_cli(capsys, *argv)
    where = " ".join(a if a.isprintable() else repr(a) for a in argv)
    assert_safe(out, f"stdout of {where}", github=fmt == "github", markdown=fmt == "markdown")
    assert_safe(err, f"stderr of {where}")
    return rc, out, err


REPORT_FORMATS = [f.value for f in Format]


@pytest.mark.parametrize("fmt", REPORT_FORMATS)
def test_check_verify_outdated_generate_in_every_format(
    crafted: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    adapter, base = str(crafted / EVIL_NAME), str(crafted / "base")
    rc, out, err = _check_run(capsys, fmt, "check", adapter, "--base", base, "--format", fmt)
    assert rc in (0, 1) and "COMPAT-IDENTITY" in out
    for lock in ("lora.lock", "edited.lock", "nobase.lock"):
        rc, out, err = _check_run(capsys, fmt, "verify", str(crafted / lock), "--format", fmt)
        assert rc in (1, 2), out + err
        rc, out, err = _check_run(capsys, fmt, "verify", str(crafted / lock), "--format", fmt, "--adapter", EVIL)
        rc, out, err = _check_run(capsys, fmt, "outdated", str(crafted / lock), "--format", fmt)
    out_lock = crafted / f"gen-{fmt}.lock"
    rc, out, err = _check_run(capsys, fmt, "generate", "--no-probe", "--adapter", adapter, "--base", base,
                              "-o", str(out_lock), "--format", fmt)  # fmt: skip
    assert rc == 0 and "COMPAT-IDENTITY" in err
    assert_safe(out_lock.read_text(encoding="utf-8"), "the written lock")
    rc, out, err = _check_run(capsys, fmt, "generate", "--no-probe", "--adapter", str(crafted / "bad"), "--base",
                              base, "-o", str(crafted / "bad.lock"), "--format", fmt)  # fmt: skip
    assert rc == 2 and "peft_type" in out + err


def test_the_crafted_values_stay_visible_as_escapes(crafted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Escaped, not dropped: a reviewer sees that the value held an ESC, a CR and a forged command."""
    rc, out, _ = _check_run(capsys, "text", "verify", str(crafted / "lora.lock"))
    assert rc == 1
    assert "\\x1b[2J" in out and "\\x0d" in out and ":\u200b:error" in out and "\\u202e" in out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_diff_and_list(crafted: Path, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    rc, out, _ = _check_run(capsys, fmt, "diff", str(crafted / "lora.lock"), str(crafted / "edited.lock"),
                            "--format", fmt)  # fmt: skip
    assert rc == 1
    if fmt == "json":
        assert any(EVIL in change["message"] for change in json.loads(out)["changes"])  # the JSON value is exact
    else:
        # One line per change: the forged lines of a lock string do not become lines of the diff.
        assert all(line.startswith(("  ", "base", "tokenizer", "adapter", "environment")) or "change" in line
                   for line in out.splitlines())  # fmt: skip
    rc, out, _ = _check_run(capsys, fmt, "list", str(crafted / "edited.lock"), "--format", fmt)
    assert rc == 0
    if fmt == "json":
        assert json.loads(out) == {"adapter": [EVIL]}
    else:
        assert len(out.splitlines()) == 1


def test_export_env_and_schema(crafted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    named = crafted / f"{EVIL_NAME}.lock"
    shutil.copy(crafted / "edited.lock", named)
    rc, out, _ = _check_run(capsys, "text", "export-env", str(named))
    assert rc == 0 and [line for line in out.splitlines() if not line.startswith("#")]
    written = crafted / "constraints.txt"
    rc, _, _ = _check_run(capsys, "text", "export-env", str(named), "-o", str(written))
    assert rc == 0
    assert_safe(written.read_text(encoding="utf-8"), "the constraints file")
    assert all(line.startswith("#") or "==" in line for line in written.read_text(encoding="utf-8").splitlines())
    rc, out, _ = _check_run(capsys, "text", "schema")
    assert rc == 0 and json.loads(out)


def test_usage_and_internal_errors(
    crafted: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit):
        main(["verify", "--format", EVIL])
    _, err = capsys.readouterr()
    assert_safe(err, "argparse's error")

    def broken(lockfile: Any) -> list[str]:
        raise RuntimeError(EVIL)

    monkeypatch.setattr("lora_lock.commands.fleet.adapter_names", broken)
    rc, _, err = _check_run(capsys, "text", "list", str(crafted / "lora.lock"))
    assert rc == 2 and "internal error: RuntimeError" in err and len(err.splitlines()) == 2


def test_colour_output_carries_only_its_own_sequences(
    crafted: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    rc = main(["verify", str(crafted / "edited.lock")])
    out, err = capsys.readouterr()
    assert rc == 1 and "\x1b[" in out  # coloured
    assert_safe(SGR.sub("", out), "coloured stdout")
    assert_safe(err, "stderr")


def test_guard_raises_a_sanitised_violation(crafted: Path) -> None:
    from lora_lock.commands.guard import LockViolation, guard

    with pytest.raises(LockViolation) as caught:
        guard(crafted / "edited.lock")
    assert_safe(str(caught.value), "str(LockViolation)")
    assert "\n" not in caught.value.message
    for fmt in Format:
        assert_safe(renderer_for(fmt).render(caught.value.report), f"the violation's report as {fmt.value}",
                    github=fmt is Format.GITHUB, markdown=fmt is Format.MARKDOWN)  # fmt: skip


@pytest.mark.parametrize("fmt", list(Format))
def test_every_field_of_a_finding_is_escaped_by_every_renderer(fmt: Format) -> None:
    """Renderers alone (no files): every text field of a finding and the report's title hold :data:`EVIL`."""
    findings = [
        Finding("X-ONE", Category.COMPAT, severity, EVIL, subject=EVIL, expected=EVIL, actual=EVIL + "!", hint=EVIL)
        for severity in Severity
    ]
    report = Report.build(findings, ran=[Category.COMPAT], title=EVIL)
    for source in (None, EVIL):
        text = renderer_for(fmt, source=source).render(report)
        assert_safe(text, fmt.value, github=fmt is Format.GITHUB, markdown=fmt is Format.MARKDOWN)
        if fmt is Format.JSON:
            assert json.loads(text)["findings"][0]["message"] == EVIL


SANITISERS: list[tuple[str, Callable[[str], str]]] = [
    ("text", sanitize.text),
    ("line", sanitize.line),
    ("cell", sanitize.cell),
    ("annotation", sanitize.annotation),
    ("annotation_property", sanitize.annotation_property),
]


def _samples() -> Iterator[str]:
    yield EVIL
    for code in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x202E, 0x2066, 0x2028, 0x2029, 0x200F, 0x61C]:
        yield f"a{chr(code)}::error::b"
        yield f"{chr(code)}::set-output name=x::y"
    for lead in ("", " ", "\t", "  \t ", "\n", "\r\n", "\x0b", "\x0c", "\u00a0", "\u3000"):
        for command in ("::error::x", "::add-mask::y", "::stop-commands::z", "::set-output name=a::b"):
            yield f"ok{lead}{command}"
            yield f"{lead}{command}"


@pytest.mark.parametrize(("name", "clean"), SANITISERS)
def test_each_sanitiser_leaves_nothing_a_terminal_or_runner_acts_on(name: str, clean: Callable[[str], str]) -> None:
    for sample in _samples():
        out = clean(sample)
        assert UNSAFE.search(out) is None, (name, sample, out)
        assert not re.search(r"^\s*::", out, re.MULTILINE), (name, sample, out)
        if name != "text":
            assert "\n" not in out, (name, sample, out)
        assert clean(out) == out or name in ("cell", "annotation", "annotation_property")


def test_documents_keep_their_value() -> None:
    text = json.dumps({"k": EVIL}, ensure_ascii=False)
    assert json.loads(sanitize.document(text)) == {"k": EVIL}
    toml = tomli_w.dumps({"k": EVIL})
    safe = sanitize.document(toml)
    assert UNSAFE.search(safe) is None and tomllib.loads(safe) == {"k": EVIL}


@pytest.mark.parametrize(
    ("lockfile", "adapter"),
    [
        ("x\x1b[2J\x1b]0;t\x07::error::forged.lock", "a\x1b[2K::set-output name=status::pass\u202e"),  # refused
        ("x ::error::forged ::add-mask::s.lock", "a ::set-output name=status::pass"),  # accepted, then quoted
    ],
)
def test_the_actions_log_group_title_and_summary_carry_no_command(
    tmp_path: Path, locked_workspace: Path, lockfile: str, adapter: str
) -> None:
    """The Action's ``::group::`` title quotes its inputs (lockfile, adapter); the summary quotes the report.
    With crafted inputs, no line of the log starts a workflow command the Action did not mean, and no raw control
    character reaches the log or the summary."""
    from tests.action.test_action import BASE_INPUTS, run_action

    models = locked_workspace / "models"
    shutil.copy(models / "lora.lock", models / lockfile)
    run = run_action(locked_workspace, tmp_path / "runner", {**BASE_INPUTS, "lockfile": lockfile, "adapter": adapter})
    assert "Traceback" not in run.log and run.code != 0
    # A runner reads a command only at the start of a line: the Action's own are these.
    own = re.compile(r"::(group::[^\n]*|endgroup::|(error|warning|notice) (file=[^:\n]*,)?title=[^:\n]*::[^\n]*)")
    lines = run.stdout.splitlines()
    for line in lines:
        bad = UNSAFE.search(line)
        assert bad is None, f"raw {bad.group()!r} in the Action's log line {line!r}"
        if line.lstrip().startswith("::"):
            assert line == line.lstrip() and own.fullmatch(line), f"a workflow command from crafted input: {line!r}"
    assert not any(line.startswith(("::set-output", "::add-mask::s", "::error::forged")) for line in lines)
    if "::group::" in run.stdout:
        (title,) = [line for line in lines if line.startswith("::group::lora-lock verify")]
        assert "forged" in title  # quoted inside the title, where it is plain text
    if run.summary.exists():
        assert_safe(run.summary.read_text(encoding="utf-8"), "the job summary", markdown=True)


@pytest.fixture
def locked_workspace(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    from tests.action.test_action import locked

    return locked.__wrapped__(tmp_path, tiny_llama, tiny_llama_adapter, monkeypatch)  # type: ignore[attr-defined, no-any-return]
