"""Crafted input that must not crash the CLI (losing the report) or make it run without bound.

Crashes: a tokenizer whose ``Split`` regex makes the tokenizers library panic (a pyo3 ``PanicException``, a
``BaseException``), and probe sidecar / golden values of the wrong shape. Each must end as an ``input`` finding
with the JSON report intact. Bounded work: many adapter modules, many crafted regex keys (one budget per run,
also through the Python API), a huge ``target_modules`` list, a huge ``adapter_config.json`` and an
``init_lora_weights`` asking for a billion power iterations. Each is a child process with a timeout far below
what unbounded work would take, so a defect fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lora_lock
from lora_lock import userregex
from lora_lock.probe.sidecar import sidecar_digest, sidecar_text
from tests.attacks import PEAK_RSS, Repo, child, cli, make_repo, peak_kib, verify_json
from tests.fixtures.header_bases import adapter_config, lora_tensors

#: Backtracks for minutes on any module name (fuzzy matching defeats the regex module's own safeguards).
SLOW_KEY = r"(?:.*.*.*.*.*.*){e<=6}\d{30}"
#: Catastrophic in the Oniguruma engine the tokenizers library uses: it gives up with a Rust panic.
PANIC_SPLIT = r"(\w|\s|.)*\d{50}"


@pytest.fixture(scope="module")
def probed_once(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, tiny_llama_adapter: Path) -> Repo:
    return make_repo(tmp_path_factory.mktemp("crash"), tiny_llama, tiny_llama_adapter, probe=True)


@pytest.fixture
def probed(probed_once: Repo, tmp_path: Path) -> Repo:
    """A private copy of a probed repository (sources are relative to the lock, so the copy verifies)."""
    shutil.copytree(probed_once.root, tmp_path / "repo", symlinks=True)
    return Repo(tmp_path / "repo")


# --- library crashes become findings; the report survives --------------------------------------------------------


def _panicking_tokenizer(tokenizer_json: Path) -> None:
    doc = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    doc["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": PANIC_SPLIT}, "behavior": "Isolated", "invert": False}
    tokenizer_json.write_text(json.dumps(doc), encoding="utf-8")


def test_the_tokenizers_library_panics_on_the_crafted_split_regex() -> None:
    """The premise: this pattern makes the real library raise a pyo3 PanicException (not an Exception)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    from lora_lock.inspect.tokenizer import CANARY

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PANIC_SPLIT), "isolated")
    with pytest.raises(BaseException) as raised:
        tok.encode(CANARY)
    assert not isinstance(raised.value, Exception) and type(raised.value).__name__ == "PanicException"


@pytest.mark.slow
def test_a_panicking_tokenizer_is_an_input_finding_and_the_report_is_kept(probed: Repo) -> None:
    _panicking_tokenizer(probed.base / "tokenizer.json")
    for argv in (("verify", str(probed.lock), "--format", "json"), ("verify", str(probed.lock), "--format", "json",
                                                                      "--skip", "effect,golden")):  # fmt: skip
        result = child(*argv, timeout=120)
        assert result.returncode in (1, 2), result.stderr
        report = json.loads(result.stdout)
        assert report["checked"]["environment"] == "pass" and report["checked"]["tokenizer"] in ("fail", "error"), (
            report
        )
        said = json.dumps(report["findings"])
        assert "tokenizer.json" in said and "tokenizers library" in said, said
    result = child("generate", "--no-probe", "--adapter", str(probed.adapter), "--base", str(probed.base), "-o",
                   str(probed.root / "new.lock"), timeout=60)  # fmt: skip
    assert result.returncode == 2 and "tokenizers library" in result.stdout + result.stderr
    assert not (probed.root / "new.lock").exists()


def _resealed(repo: Repo, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the sidecar and bind the edit into the lock, as a pull request editing both would."""
    section = repo.doc()["probe"]
    path = repo.root / str(section["sidecar"])
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    text = sidecar_text(doc)
    path.write_text(text, encoding="utf-8")
    repo.edit(lambda d: d["probe"].__setitem__("sidecar-digest", sidecar_digest(text)))


def _first(doc: dict[str, Any]) -> dict[str, Any]:
    fp: dict[str, Any] = next(iter(doc["adapters"].values()))[0]
    return fp


SIDECAR_EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "no-prompts": lambda d: d.__setitem__("prompts", []),
    "no-fingerprints": lambda d: d["adapters"].__setitem__(next(iter(d["adapters"])), []),
    "prompt-ids-a-string": lambda d: _first(d).__setitem__("prompt_ids", "1,2,3"),
    "logps-strings": lambda d: _first(d)["adapted"].__setitem__("logps", [["x"]]),
    "ragged-top-k": lambda d: _first(d)["base"]["ids"][0].append(0),
    "missing-row": lambda d: _first(d)["adapted"]["ids"].pop(),
    "empty-continuation": lambda d: _first(d).__setitem__("continuation", []),
    "huge-logp": lambda d: _first(d)["base"]["logps"][0].__setitem__(0, -1e300),
    "kl-a-list": lambda d: _first(d).__setitem__("effect_kl", [1]),
    "adapters-a-list": lambda d: d.__setitem__("adapters", [1, 2]),
}


@pytest.mark.slow
@pytest.mark.parametrize("edit", sorted(SIDECAR_EDITS))
def test_crafted_sidecar_values_are_input_findings(probed: Repo, capsys: pytest.CaptureFixture[str], edit: str) -> None:
    _resealed(probed, SIDECAR_EDITS[edit])
    rc, report = verify_json(capsys, probed.lock)
    assert rc == 2, report["findings"]
    assert report["checked"]["effect"] == "error" and report["checked"]["base"] == "pass"
    assert ".probe-" in json.dumps(report["findings"])  # the sidecar is named


GOLDEN_EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "no-adapters": lambda g: g.__setitem__("adapter", []),
    "correct-empty": lambda g: g["adapter"][0].__setitem__("correct", ""),
    "correct-too-long": lambda g: g["adapter"][0].__setitem__("correct", "ff" * 64),
    "items-a-string": lambda g: g.__setitem__("items", "1"),
    "accuracy-above-one": lambda g: g["adapter"][0].__setitem__("accuracy", 7.0),
    "unknown-adapter": lambda g: g["adapter"][0].__setitem__("name", "nobody"),
}


@pytest.mark.slow
@pytest.mark.parametrize("edit", sorted(GOLDEN_EDITS))
def test_crafted_golden_values_are_findings_not_crashes(
    probed: Repo, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    from lora_lock.probe.golden import read_golden

    dataset = probed.root / "golden.jsonl"
    dataset.write_text('{"prompt": "2+2=", "expected": "4"}\n{"prompt": "Q", "expected": "a"}\n', encoding="utf-8")
    _, digest = read_golden(dataset)

    def add(doc: dict[str, Any]) -> None:
        golden = {
            "adapter": [{"name": doc["adapter"][0]["name"], "accuracy": 0.5, "correct": "1"}],
            "dataset": "golden.jsonl",
            "dataset-digest": digest,
            "items": 2,
        }
        GOLDEN_EDITS[edit](golden)
        doc["golden"] = golden

    probed.edit(add)
    rc, report = verify_json(capsys, probed.lock, "--only", "golden")
    assert rc in (1, 2), report["findings"]  # never a pass: the locked adapter was not scored against a baseline
    # Either the golden check ran and failed, or the lock itself was refused (a value the schema forbids).
    state = report["checked"].get("golden", report["checked"].get("input"))
    assert state in ("fail", "error"), (report["checked"], report["findings"])
    assert report["findings"] and all(f["message"] for f in report["findings"])


# --- bounded work ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sixteen_thousand_adapter_modules_with_distinct_prefixes_are_checked_quickly(
    tmp_path: Path, header_base: Callable[..., Path], make_adapter: Callable[..., Path]
) -> None:
    """Module names with 32k distinct leading components (none in the base) are aligned to the base in less than
    quadratic time (trying every pair against every module would take about 50 s for 16k, hours at the header
    cap)."""
    base = header_base("smollm-135m")
    tensors = {
        f"base_model.model.m{i}.block.q_proj.lora_{ab}.weight": (1, 8) if ab == "A" else (8, 1)
        for i in range(32_000)
        for ab in ("A", "B")
    }
    adapter = make_adapter(adapter_config(None, ["q_proj"], r=1), tensors)
    result = child("check", str(adapter), "--base", str(base), "--format", "json", timeout=60)
    assert result.returncode in (1, 2), result.stdout[-2000:]
    assert json.loads(result.stdout)["findings"]


@pytest.mark.slow
def test_a_million_target_modules_is_a_fast_result_or_a_clear_refusal(
    header_base: Callable[..., Path], make_adapter: Callable[..., Path]
) -> None:
    """As many distinct ``target_modules`` as fit under the adapter_config.json bound (a million 4-letter names,
    7 MB): a result in seconds with one set probe per module name suffix, minutes with one ``endswith`` per pair."""
    import itertools
    import string

    base = header_base("smollm-135m")
    names = ("".join(t) for t in itertools.product(string.ascii_lowercase + string.digits, repeat=4))
    targets = [*itertools.islice(names, 1_000_000), "q_proj"]
    adapter = make_adapter(adapter_config(None, targets, r=4), lora_tensors("smollm-135m", ["q_proj"], r=4))
    # written compactly, as PEFT does not indent it either; the pretty-printed form would pass the bound
    (adapter / "adapter_config.json").write_text(json.dumps(adapter_config(None, targets, r=4)), encoding="utf-8")
    assert (adapter / "adapter_config.json").stat().st_size < ADAPTER_CONFIG_BOUND
    result = child("check", str(adapter), "--base", str(base), "--format", "json", timeout=60)
    assert result.returncode in (0, 1, 2)
    report = json.loads(result.stdout)
    if result.returncode == 2:
        assert "target_modules" in json.dumps(report["findings"])


def _slow_key_config(keys: int) -> dict[str, Any]:
    return adapter_config(None, ["q_proj"], r=4, rank_pattern={f"{SLOW_KEY}{'x' * i}": 2 for i in range(keys)})


def test_twelve_crafted_rank_pattern_keys_end_within_one_run_budget(
    header_base: Callable[..., Path], make_adapter: Callable[..., Path]
) -> None:
    base = header_base("llama-3-8b")
    adapter = make_adapter(_slow_key_config(12), lora_tensors("llama-3-8b", ["q_proj"], r=4))
    result = child("check", str(adapter), "--base", str(base), "--format", "json", timeout=60)
    assert result.returncode == 2
    assert "rank_pattern" in json.dumps(json.loads(result.stdout)["findings"])


@pytest.mark.parametrize("entry", ["check", "verify", "guard", "generate"])
def test_the_api_entry_points_give_user_regexes_one_budget_per_run(
    tmp_path: Path,
    header_base: Callable[..., Path],
    make_adapter: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    entry: str,
) -> None:
    """Per match the limit is long here (20 s) and per run short (1 s): an entry point that opens no run budget
    gives each crafted key its full per-match time and fails with the per-match message, late; one that does
    stops at the run budget."""
    from lora_lock.sources.fence import windows_form  # noqa: F401  (fence loads before the patch, as in a real run)

    base = header_base("smollm-135m")
    adapter = make_adapter(adapter_config(None, ["q_proj"], r=4), lora_tensors("smollm-135m", ["q_proj"], r=4))
    lock = tmp_path / "lora.lock"
    if entry in ("verify", "guard"):
        assert lora_lock.generate([adapter], base, lock, probe=False).written
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    config["rank_pattern"] = {SLOW_KEY: 2}
    (adapter / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.setattr(userregex, "TIMEOUT_S", 20.0)
    monkeypatch.setattr(userregex, "RUN_BUDGET_S", 1.0)

    said: str
    if entry == "check":
        said = json.dumps([f.to_dict() for f in lora_lock.check(adapter, base).findings])
    elif entry == "verify":
        said = json.dumps([f.to_dict() for f in lora_lock.verify(lock, allow_outside_sources=True).findings])
    elif entry == "guard":
        with pytest.raises(lora_lock.LockViolation) as raised:
            lora_lock.guard(lock, allow_outside_sources=True)
        said = json.dumps([f.to_dict() for f in raised.value.report.findings])
    else:
        try:
            result = lora_lock.generate([adapter], base, lock, probe=False)
            said = json.dumps([f.to_dict() for f in result.report.findings])
        except lora_lock.InputError as exc:
            said = exc.message
    assert "in all" in said and "rank_pattern" in said, said
    assert "takes too long to match" not in said


#: A real adapter_config.json is a few KB; one with a per-module rank_pattern and alpha_pattern for a 128-expert
#: MoE is ~5 MB. The bound sits above that and far below what parsing costs memory for (~10-25x the text).
ADAPTER_CONFIG_BOUND = 8 << 20


@pytest.mark.parametrize("size_mb", [99, 9])
def test_a_huge_adapter_config_is_refused_before_it_is_parsed(
    make_adapter: Callable[..., Path], header_base: Callable[..., Path], size_mb: int
) -> None:
    base = header_base("smollm-135m")
    adapter = make_adapter(None, lora_tensors("smollm-135m", ["q_proj"], r=4))
    entries = size_mb * (1 << 20) // 5
    with (adapter / "adapter_config.json").open("w", encoding="utf-8") as fh:
        fh.write('{"peft_type": "LORA", "r": 4, "target_modules": [')
        fh.write(",".join(['"ab"'] * entries))
        fh.write("]}")
    assert (adapter / "adapter_config.json").stat().st_size > ADAPTER_CONFIG_BOUND
    result = child("check", str(adapter), "--base", str(base), timeout=60, code=PEAK_RSS)
    assert result.returncode == 2
    assert "adapter_config.json" in result.stdout + result.stderr and "MiB limit" in result.stdout + result.stderr
    peak = peak_kib(result.stderr)
    assert peak < 150_000, peak  # the interpreter and lora-lock's static path: the file is never parsed


def test_a_real_sized_adapter_config_stays_under_the_bound(header_base: Callable[..., Path]) -> None:
    """The bound's other side: a per-module rank_pattern and alpha_pattern for every projection of a 70B model
    (the largest per-module configs published) is far below it."""
    from tests.fixtures.header_bases import base_layers

    modules = [p for p in base_layers("llama-3-70b") if p.rpartition(".")[2].endswith("proj")]
    doc = adapter_config(
        None,
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        rank_pattern={f"base_model.model.{m}": 8 for m in modules},
        alpha_pattern={f"base_model.model.{m}": 16 for m in modules},
    )
    assert len(json.dumps(doc, indent=2)) * 10 < ADAPTER_CONFIG_BOUND
    from lora_lock.sources.fence import LIMITS

    assert LIMITS["adapter-config"] == ADAPTER_CONFIG_BOUND


@pytest.mark.slow
def test_a_billion_pissa_power_iterations_are_refused_up_front(
    probed: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = probed.adapter / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["init_lora_weights"] = "pissa_niter_1000000000"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    result = child("verify", str(probed.lock), "--format", "json", timeout=120)
    assert result.returncode in (1, 2)
    report = json.loads(result.stdout)
    assert report["checked"]["effect"] in ("error", "skipped"), report
    result = child("generate", "--probe", "--adapter", str(probed.adapter), "--base", str(probed.base), "-o",
                   str(probed.root / "new.lock"), timeout=120)  # fmt: skip
    assert result.returncode == 2 and "1000000000" in result.stdout + result.stderr
    rc, _, _ = cli(capsys, "check", str(probed.adapter), "--base", str(probed.base))
    assert rc in (0, 1)  # the static check reads the value and runs nothing
