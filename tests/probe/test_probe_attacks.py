"""What the probe must never load, the library errors it must turn into findings (full tier), init methods that
rewrite the base, and concurrent ``generate`` runs.

The probe runs the real stack (torch, transformers, peft) on tiny models, so these are slow tests.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lora_lock.testing import tiny
from tests.attacks import Repo, child, cli, codes, make_repo, verify_json
from tests.helpers import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def probed_once(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, tiny_llama_adapter: Path) -> Repo:
    return make_repo(tmp_path_factory.mktemp("probe-attacks"), tiny_llama, tiny_llama_adapter, probe=True)


@pytest.fixture
def probed(probed_once: Repo, tmp_path: Path) -> Repo:
    shutil.copytree(probed_once.root, tmp_path / "repo", symlinks=True)
    return Repo(tmp_path / "repo")


# --- a pickle is never loaded ------------------------------------------------------------------------------------


class _Payload:
    """Unpickled, it creates the file named by ``marker`` (a stand-in for running any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


#: Child: records any torch.load call or any class lookup by an unpickler (the audit event every pickle
#: Unpickler raises), then runs the CLI. argv[1] is the marker prefix.
_SPY = """
import sys
prefix = sys.argv.pop(1)
def hook(event, args):
    if event == "pickle.find_class":
        open(prefix + ".find-class", "w").close()
sys.addaudithook(hook)
import torch
real_load = torch.load
def spy(*args, **kwargs):
    open(prefix + ".torch-load", "w").close()
    return real_load(*args, **kwargs)
torch.load = spy
from lora_lock._cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_pickle_only_base_is_never_unpickled_and_the_static_report_is_kept(probed: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (probed.base / "model.safetensors").unlink()
    (probed.base / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    prefix = str(tmp_path / "spy")
    for argv in (
        ("verify", str(probed.lock), "--format", "json"),
        ("generate", "--probe", "--adapter", str(probed.adapter), "--base", str(probed.base), "-o",
         str(probed.root / "new.lock"), "--format", "json"),
    ):  # fmt: skip
        result = child(prefix, *argv, code=_SPY, timeout=180)
        assert result.returncode in (1, 2), result.stderr
        report = json.loads(result.stdout)
        assert report["findings"], report
        if argv[0] == "verify":
            assert report["checked"]["base"] == "fail" and report["checked"]["effect"] != "pass", report
            assert "model.safetensors" in json.dumps(report["findings"])
    assert not marker.exists(), "the pickle payload ran"
    assert not Path(prefix + ".torch-load").exists(), "torch.load was called"
    assert not Path(prefix + ".find-class").exists(), "an unpickler looked up a class"
    assert not (probed.root / "new.lock").exists()


# --- full tier: library errors become findings -------------------------------------------------------------------


def _edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")


BASE_EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "bitsandbytes": lambda d: d.__setitem__(
        "quantization_config", {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    ),
    "hub-kernel": lambda d: d.__setitem__("attn_implementation", "kernels-community/flash-attn"),
    "hub-kernel-nested": lambda d: d.__setitem__("text_config", {"_attn_implementation": "kernels-community/x"}),
    "dtype-attribute": lambda d: d.__setitem__("torch_dtype", "__class__"),
    "dtype-object": lambda d: d.__setitem__("dtype", {"bfloat16": 1}),
    "dtype-function": lambda d: d.__setitem__("torch_dtype", "load"),
}


@pytest.mark.parametrize("edit", sorted(BASE_EDITS))
def test_a_crafted_base_config_is_a_finding_in_the_full_tier(
    probed: Repo, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    _edit_json(probed.base / "config.json", BASE_EDITS[edit])
    rc, report = verify_json(capsys, probed.lock)
    assert rc in (1, 2), report["findings"]
    assert report["checked"]["effect"] != "pass", report
    assert report["checked"]["environment"] == "pass"  # the rest of the report is kept
    if edit.startswith("hub-kernel"):
        assert "INPUT-HUB-KERNEL" in codes(report)
    rc, out, err = cli(
        capsys, "generate", "--probe", "--adapter", str(probed.adapter), "--base", str(probed.base), "-o",
        str(probed.root / "new.lock"),
    )  # fmt: skip
    assert rc in (1, 2), out + err
    assert "config.json" in out + err or "quantiz" in out + err


@pytest.mark.parametrize("method", ["loftq", "corda", "pissa_niter_99999", "no-such-method", 7])
def test_an_init_method_the_probe_cannot_run_is_refused_in_both_tiers(
    probed: Repo, capsys: pytest.CaptureFixture[str], method: object
) -> None:
    _edit_json(probed.adapter / "adapter_config.json", lambda d: d.__setitem__("init_lora_weights", method))
    name = probed.doc()["adapter"][0]["name"]
    full = verify_json(capsys, probed.lock)
    single = verify_json(capsys, probed.lock, "--adapter", name)
    assert full[0] == single[0] and full[0] in (1, 2)
    for _, report in (full, single):
        assert report["checked"]["effect"] != "pass"
    rc, out, err = cli(
        capsys, "generate", "--probe", "--adapter", str(probed.adapter), "--base", str(probed.base), "-o",
        str(probed.root / "new.lock"),
    )  # fmt: skip
    assert rc == 2 and "init_lora_weights" in out + err


# --- init methods that rewrite the base; concurrent generate -----------------------------------------------------


@pytest.fixture(scope="module")
def rewriting_adapters(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> dict[str, Path]:
    """Adapters saved as PEFT saves them with PiSSA / OLoRA / EVA initialisation (not converted to plain LoRA)."""
    out: dict[str, Path] = {}
    for method in ("pissa", "olora"):
        out[method] = tiny.train_lora(
            tiny_llama,
            tmp_path_factory.mktemp(f"init-{method}"),
            target_modules=("q_proj", "v_proj", "down_proj"),
            r=4,
            alpha=8,
            seed=1,
            init_lora_weights=method,
        )
    return out


@pytest.mark.parametrize("method", ["pissa", "olora", "eva"])
def test_a_base_rewriting_init_method_verifies_the_same_alone_and_beside_others(
    tmp_path: Path,
    tiny_llama: Path,
    tiny_llama_adapter: Path,
    rewriting_adapters: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    method: str,
) -> None:
    repo = Repo(tmp_path / "repo")
    (repo.root / ".git").mkdir(parents=True)
    shutil.copytree(tiny_llama, repo.base)
    shutil.copytree(tiny_llama_adapter, repo.root / "plain")
    special = repo.root / method
    if method == "eva":  # EVA keeps the base at load; its saved weights are a plain LoRA's
        shutil.copytree(tiny_llama_adapter, special)
        _edit_json(special / "adapter_config.json", lambda d: d.__setitem__("init_lora_weights", "eva"))
    else:
        shutil.copytree(rewriting_adapters[method], special)
    repo.generate(repo.root / "plain", special, probe=True)
    names = [a["name"] for a in repo.doc()["adapter"]]
    full_rc, full = verify_json(capsys, repo.lock)
    assert full_rc == 0, full["findings"]
    for name in names:
        rc, alone = verify_json(capsys, repo.lock, "--adapter", name)
        assert rc == full_rc, (name, alone["findings"])


def test_concurrent_generate_runs_never_leave_the_lock_naming_a_deleted_sidecar(probed: Repo, tmp_path: Path) -> None:
    prompts = []
    for i in range(2):
        path = tmp_path / f"prompts-{i}.txt"
        path.write_text(f"Prompt set {i} one\nPrompt set {i} two\n", encoding="utf-8")
        prompts.append(path)
    argv = ["generate", "--probe", "--adapter", str(probed.adapter), "--base", str(probed.base), "-o", str(probed.lock)]
    for _round in range(2):
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "lora_lock", *argv, "--probe-prompts", str(p)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for p in prompts
        ]
        for run in runs:
            out, err = run.communicate(timeout=300)
            assert run.returncode == 0, out + err
            assert "Traceback" not in out + err
        sidecar = probed.root / str(probed.doc()["probe"]["sidecar"])
        assert sidecar.is_file(), "the lock names a sidecar that is gone"
        result = child("verify", str(probed.lock), "--format", "json", timeout=180)
        assert result.returncode == 0, result.stdout[-2000:]
