"""The static path never imports torch, transformers or peft (DESIGN §2: `check` is static; §10: import costs).

Each test runs a fresh interpreter, because the test session itself may already have imported them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

HEAVY = ("torch", "transformers", "peft")

#: Installed first in the child: any import of a heavy library raises ImportError, as on a core-only install.
BLOCKER = textwrap.dedent(
    f"""
    import sys

    HEAVY = {HEAVY!r}

    class BlockHeavy:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in HEAVY:
                raise ImportError(f"blocked by the test: {{name}}")
            return None

    sys.meta_path.insert(0, BlockHeavy())
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the import blocker does not work")

    def heavy_loaded():
        return sorted(m for m in sys.modules if m.partition(".")[0] in HEAVY)
    """
)


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
        check=False,
    )


def test_import_lora_lock_leaves_heavy_libraries_out() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, lora_lock; lora_lock.check; lora_lock.Report; "
            f"print(sorted(m for m in sys.modules if m.partition('.')[0] in {HEAVY!r}))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_check_cli_runs_with_torch_transformers_and_peft_blocked(tiny_llama: Path, tiny_llama_adapter: Path) -> None:
    code = """
    import json
    from lora_lock._cli import main

    rc = main(["--verbose", "check", sys.argv[1], "--base", sys.argv[2], "--format", "json"])
    print(json.dumps({"rc": rc, "heavy": heavy_loaded()}), file=sys.stderr)
    raise SystemExit(rc)
    """
    result = run_child(code, str(tiny_llama_adapter), str(tiny_llama))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "pass"
    assert report["checked"]["compat"] == "pass"
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary == {"rc": 0, "heavy": []}


@pytest.mark.slow
def test_check_cli_reports_drift_with_heavy_libraries_blocked(tiny_gpt2: Path, tiny_llama_adapter: Path) -> None:
    """The failing path (findings, hints, rendering) is static too: a Llama adapter on a GPT-2 base."""
    code = """
    from lora_lock._cli import main

    rc = main(["--verbose", "check", sys.argv[1], "--base", sys.argv[2]])
    assert not heavy_loaded(), heavy_loaded()
    raise SystemExit(rc)
    """
    result = run_child(code, str(tiny_llama_adapter), str(tiny_gpt2))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "COMPAT-" in result.stdout


#: What ``check`` on a safetensors base has no use for, imported only by the paths that need it: the lock and
#: snapshot machinery (``observe``, ``lockfile`` with tomllib and importlib.resources), the environment and
#: tokenizer readers (platform, subprocess, importlib.metadata), hashing (hashlib, the thread pool and its
#: logging), the GGUF reader, ``regex`` (compiled only when an adapter carries a user pattern), and ``rich``
#: (it colours a terminal's report; plain text is written without it).
LAZY_ON_CHECK = (
    "regex",
    "rich",
    "lora_lock.lock.snapshot",
    "lora_lock.lock.io",
    "lora_lock.lock.module_table",
    "lora_lock.hashing",
    "lora_lock.compat.gguf",
    "lora_lock.inspect.gguf",
    "lora_lock.inspect.environment",
    "lora_lock.inspect.tokenizer",
    "concurrent.futures",
    "logging",
    "hashlib",
    "tomllib",
    "importlib.metadata",
    "importlib.resources",
    "subprocess",
    "platform",
    "tempfile",
)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_check_on_a_safetensors_base_leaves_the_modules_it_does_not_need_out(
    fmt: str, header_base: Any, make_adapter: Any
) -> None:
    from tests.fixtures.header_bases import adapter_config, lora_tensors

    base = header_base("llama-3.2-1b")
    targets = ("q_proj", "v_proj")
    adapter = make_adapter(adapter_config("meta-llama/Llama-3.2-1B", targets), lora_tensors("llama-3.2-1b", targets))
    code = f"""
    import io, contextlib
    from lora_lock._cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["check", sys.argv[1], "--base", sys.argv[2], "--format", {fmt!r}])
    print(json.dumps({{"rc": rc, "loaded": sorted(m for m in {LAZY_ON_CHECK!r} if m in sys.modules)}}))
    """
    result = run_child("import json\n" + textwrap.dedent(code), str(adapter), str(base))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"rc": 0, "loaded": []}
