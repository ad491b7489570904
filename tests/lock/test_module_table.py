"""The lock's module table in runtime names (``module-names = "runtime"``), and earlier locks (checkpoint names)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lora_lock import diff, generate, verify
from lora_lock.findings import Category
from lora_lock.inspect.modules import pattern_of
from lora_lock.lock.io import dumps, read, write_atomic
from lora_lock.lock.model import Adapter, ModuleRow
from lora_lock.lock.module_table import RUNTIME, ModuleNames, aligned, comparable, runtime_rows
from tests.fixtures.header_bases import adapter_config, lora_tensors
from tests.fixtures.runtime_bases import small_llava_config

R = 4


def _verify(lock: Path) -> Any:
    return verify(lock, only={Category.COMPAT, Category.ADAPTER}, allow_outside_sources=True)


def _codes(report: Any) -> set[str]:
    return {f.code for f in report.findings}


def _as_0_1_0(lock: Mapping[str, Any]) -> dict[str, Any]:
    """The lock written before runtime names for the same world: rows under checkpoint names, no runtime fields."""
    old: dict[str, Any] = json.loads(json.dumps(lock))
    old["base"].pop("runtime-rules", None)
    for section in old["adapter"]:
        section.pop("module-names", None)
        section["modules"] = [
            {**{k: v for k, v in row.items() if k != "checkpoint"}, "pattern": row.get("checkpoint", row["pattern"])}
            for row in section["modules"]
        ]
    return old


# --- unit --------------------------------------------------------------------------------------------------------

NAMES = ModuleNames(
    rules="test",
    to_runtime={"language_model.model.layers.*.self_attn.q_proj": "model.language_model.layers.*.self_attn.q_proj"},
    runtime=frozenset({"model.language_model.layers.*.self_attn.q_proj", "lm_head"}),
    to_checkpoint={"model.language_model.layers.*.self_attn.q_proj": "language_model.model.layers.*.self_attn.q_proj"},
)
ROW = ModuleRow.from_dict(
    {
        "pattern": "language_model.model.layers.*.self_attn.q_proj",
        "count": 2,
        "layers": "0-1",
        "kind": "linear",
        "base-shape": "64x64",
        "rank": R,
        "lora-a": f"{R}x64",
        "lora-b": f"64x{R}",
    }
)


def test_rows_are_renamed_and_keep_their_checkpoint_name() -> None:
    (row,) = runtime_rows([ROW], NAMES)
    assert row.pattern == "model.language_model.layers.*.self_attn.q_proj"
    assert row.checkpoint == ROW.pattern
    # A row the engine already named by its runtime name gets the same checkpoint name.
    assert runtime_rows([replace(ROW, pattern=row.pattern)], NAMES) == (row,)
    # A name already in runtime form, or one the runtime model does not know (a tied lm_head), is kept as is.
    assert runtime_rows([replace(ROW, pattern="lm_head")], NAMES) == (replace(ROW, pattern="lm_head"),)
    assert runtime_rows([replace(ROW, pattern="x.y")], NAMES) == (replace(ROW, pattern="x.y"),)


def _adapter(rows: list[dict[str, Any]], **more: Any) -> Adapter:
    """A locked adapter holding these module rows."""
    settings = {"peft_type": "LORA", "r": R, "lora_alpha": 16}
    return Adapter.from_dict({"name": "a", "source": "a", "settings": settings, "files": {}, "modules": rows, **more})


def test_old_and_new_rows_meet_by_checkpoint_name() -> None:
    full = ROW.to_dict()
    (new,) = runtime_rows([ROW], NAMES)
    locked_old = _adapter([full])
    now = _adapter([new.to_dict()], **{"module-names": RUNTIME})
    row = ModuleRow.from_dict(full)
    assert aligned(locked_old, now) == ([row], [row])
    # Both in runtime names: compared by runtime name, the bookkeeping field left out.
    both = aligned(now, now)
    assert both[0] == both[1] == [ModuleRow.from_dict({**full, "pattern": new.pattern})]
    assert comparable(now.modules, by_checkpoint=False) == [ModuleRow.from_dict({**full, "pattern": new.pattern})]


def test_a_lock_of_a_base_whose_names_do_not_change_has_no_checkpoint_fields(
    header_base: Any, make_adapter: Any, tmp_path: Path
) -> None:
    base = header_base("llama-3.2-1b")
    targets = ("q_proj", "v_proj")
    adapter = make_adapter(adapter_config("meta-llama/Llama-3.2-1B", targets), lora_tensors("llama-3.2-1b", targets))
    result = generate([adapter], base, tmp_path / "lora.lock", probe=False)
    lock = read(tmp_path / "lora.lock")  # validates against the schema
    assert result.written and lock["adapter"][0]["module-names"] == RUNTIME
    assert "LlamaForCausalLM" in lock["base"]["runtime-rules"]
    assert all("checkpoint" not in row for row in lock["adapter"][0]["modules"])
    assert {row["pattern"] for row in lock["adapter"][0]["modules"]} == {
        "model.layers.*.self_attn.q_proj",
        "model.layers.*.self_attn.v_proj",
    }


# --- a real tiny Llava: checkpoint names differ from the modules transformers builds ------------------------------


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, set[str]]:
    """A tiny real Llava saved by the installed transformers, an adapter in the layout PEFT on transformers 4 wrote
    (``language_model.model.layers.N.self_attn.q_proj``), and the module patterns of the model transformers
    builds."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from safetensors import safe_open
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("llava-table")
    cfg = small_llava_config()
    config = transformers.LlavaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    torch.manual_seed(0)
    model = transformers.LlavaForConditionalGeneration(config)
    model.save_pretrained(root / "base")
    built = {pattern_of(name) for name, _ in model.named_modules()}
    tensors = {}
    with safe_open(str(root / "base" / "model.safetensors"), "pt") as fh:
        for key in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
            if key.startswith("language_model.") and key.endswith(("q_proj.weight", "v_proj.weight")):
                out_f, in_f = fh.get_slice(key).get_shape()
                module = "base_model.model." + key.removesuffix(".weight")
                tensors[f"{module}.lora_A.weight"] = torch.randn(R, in_f)
                tensors[f"{module}.lora_B.weight"] = torch.randn(out_f, R)
    adapter = root / "adapter"
    adapter.mkdir()
    # The text model only: PEFT 0.21 converts old `language_model.model.*` keys but not the vision tower's
    # `vision_tower.encoder.*` (real PEFT drops those), and this test is about names, not drops.
    doc = adapter_config("llava-hf/llava-1.5-7b-hf", r".*language_model.*\.(q_proj|v_proj)", r=R, task_type=None)
    (adapter / "adapter_config.json").write_text(json.dumps(doc))
    save_file(tensors, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    # What real PEFT does with the pair: every tensor lands (the verdict the lock is written under).
    from peft import PeftModel
    from peft.utils import set_peft_model_state_dict
    from peft.utils.save_and_load import load_peft_weights

    loaded = PeftModel.from_pretrained(
        transformers.LlavaForConditionalGeneration.from_pretrained(root / "base"), adapter
    )
    result = set_peft_model_state_dict(loaded, load_peft_weights(str(adapter)), adapter_name="default")
    assert result.unexpected_keys == []  # type: ignore[attr-defined]  # peft annotates a bare namedtuple
    return root / "base", adapter, built


@pytest.fixture(scope="module")
def llava_lock(llava: tuple[Path, Path, set[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    base, adapter, _ = llava
    out = tmp_path_factory.mktemp("llava-lock") / "lora.lock"
    result = generate([adapter], base, out, probe=False)
    assert result.written, [f.to_dict() for f in result.report.findings]
    return out


@pytest.mark.slow
def test_lock_rows_are_named_as_the_modules_transformers_builds(
    llava: tuple[Path, Path, set[str]], llava_lock: Path
) -> None:
    _, _, built = llava
    lock = read(llava_lock)
    section = lock["adapter"][0]
    assert section["module-names"] == RUNTIME
    assert "LlavaForConditionalGeneration" in lock["base"]["runtime-rules"]
    rows = section["modules"]
    assert rows and all(row["pattern"] in built for row in rows), [r["pattern"] for r in rows]
    renamed = [row for row in rows if "checkpoint" in row]
    assert {row["checkpoint"].partition(".layers.")[0] for row in renamed} == {"language_model.model"}
    assert {row["pattern"].partition(".layers.")[0] for row in renamed} == {"model.language_model"}
    assert all(row["checkpoint"] not in built for row in renamed)
    assert "COMPAT-MODULES" not in _codes(_verify(llava_lock))


@pytest.mark.slow
def test_a_lock_written_by_0_1_0_verifies_without_false_drift(llava_lock: Path, tmp_path: Path) -> None:
    old = _as_0_1_0(read(llava_lock))
    path = tmp_path / "lora.lock"
    write_atomic(path, dumps(old))
    assert "COMPAT-MODULES" not in _codes(_verify(path))
    # ... while a real change of a recorded row is still drift.
    old["adapter"][0]["modules"][0]["rank"] = R * 2
    write_atomic(path, dumps(old))
    assert "COMPAT-MODULES" in _codes(_verify(path))


@pytest.mark.slow
def test_diff_meets_an_old_lock_by_checkpoint_names(llava_lock: Path, tmp_path: Path) -> None:
    old_path = tmp_path / "old.lock"
    write_atomic(old_path, dumps(_as_0_1_0(read(llava_lock))))
    result = diff(old_path, llava_lock)
    subjects = {c.subject for c in result.changes if c.category is Category.COMPAT}
    # Only the naming itself changed: the rules line; no module row added, removed or changed.
    assert subjects == {"runtime-rules"}
    assert diff(llava_lock, llava_lock).identical
