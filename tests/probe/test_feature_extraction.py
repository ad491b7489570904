"""The probe of embedding models (PEFT ``FEATURE_EXTRACTION``) on a tiny real BERT encoder: each prompt's
mean-pooled embedding, adapted against base; the effect gates fire on a changed adapter, pass on noise, and never
false-alarm on an unchanged project."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lora_lock.commands.generate import generate
from lora_lock.errors import InputError
from lora_lock.lock.io import read as read_lock
from lora_lock.lock.model import Lock, ProbeRow
from lora_lock.probe import embed_gate
from lora_lock.probe.sidecar import validate as validate_sidecar
from tests.probe.test_lock_schema import assert_lock_documented
from tests.probe.test_tasks import ADAPTER_FILE, _codes, _edit, _noise, _scale_b, _verify


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> Path:
    """A tiny ``BertModel``, a ``FEATURE_EXTRACTION`` LoRA trained to move its embeddings, and a lock made by
    ``generate``."""
    pytest.importorskip("peft")
    from lora_lock.testing import tiny_fe

    root = tmp_path_factory.mktemp("probe-feature-extraction")
    tiny_fe.build_tiny_encoder(root / "base", tiny_tokenizer, seed=0)
    tiny_fe.train_embedding_lora(root / "base", root / "adapter", seed=0)
    result = generate([root / "adapter"], root / "base", root / "lora.lock", device="cpu", probe=True)
    assert result.lock is not None, [f.to_dict() for f in result.report.findings]
    assert not [f for f in result.report.findings if f.category.value == "effect"]  # it has an effect, is probed
    return root


def _sidecar(root: Path) -> dict[str, Any]:
    section = read_lock(root / "lora.lock")["probe"]
    doc: dict[str, Any] = json.loads((root / str(section["sidecar"])).read_text(encoding="utf-8"))
    return doc


@pytest.mark.slow
def test_an_embedding_model_is_probed_and_never_false_alarms(encoder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = assert_lock_documented(encoder / "lora.lock")
    (row,) = lock["probe"]["adapter"]
    assert row["embedding"] == "mean-last-hidden-state" and "effect-kl" not in row
    # The typed lock reads it too (as `outdated`, `list` and `export-env` do), and writes back the same text.
    text = (encoder / "lora.lock").read_text(encoding="utf-8")
    typed = Lock.from_toml(text)
    assert typed.probe is not None and typed.probe.adapters[0].effect_distance == row["effect-distance"]
    assert typed.to_toml() == text
    assert row["effect-distance"] > 1e-2 and row["tolerance"] == embed_gate.FLOOR  # fp32 on CPU: noise ~1e-7
    (prints,) = _sidecar(encoder)["adapters"].values()
    sizes = {len(fp[side]["embedding"]) for fp in prints for side in ("adapted", "base")}
    assert sizes == {64}  # the hidden size: one vector per prompt and side
    for _ in range(3):  # three verifies of an unchanged project
        rc, report = _verify(capsys, encoder / "lora.lock", "--only", "effect")
        assert rc == 0, report["findings"]
        assert _codes(report) == {"EFFECT-OK"}, report["findings"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "codes"),
    [
        (_scale_b(0.5), {"EFFECT-CHANGED", "EFFECT-DRIFT"}),
        (_scale_b(0.0), {"EFFECT-NONE", "EFFECT-DRIFT"}),
        (_noise(1e-7), set()),
    ],
    ids=["lora_B-x0.5", "zeroed", "noise-1e-7"],
)
def test_the_embedding_gates_fire_on_changes_and_pass_on_noise(
    encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, codes: set[str]
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(encoder, root)
    _edit(root / "adapter" / ADAPTER_FILE, change)
    rc, report = _verify(capsys, root / "lora.lock", "--only", "effect")
    errors = {f["code"] for f in report["findings"] if f["severity"] == "error"}
    assert codes <= errors and (rc == 1) == bool(codes), report["findings"]
    assert "EFFECT-BASE-DRIFT" not in _codes(report)  # the base did not move: reported apart, not here
    if codes:
        (drift,) = [f for f in report["findings"] if f["code"] == "EFFECT-DRIFT"]
        assert "the adapter itself changed" in drift["message"]
    else:
        assert not errors and "EFFECT-OK" in _codes(report)


@pytest.mark.slow
def test_regenerating_an_unchanged_embedding_lock_gives_the_same_bytes(encoder: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(encoder, root)
    result = generate([root / "adapter"], root / "base", root / "again.lock", device="cpu", probe=True)
    assert result.lock is not None
    section = read_lock(root / "again.lock")["probe"]
    assert section["sidecar-digest"] == read_lock(encoder / "lora.lock")["probe"]["sidecar-digest"]


@pytest.mark.slow
def test_a_moved_base_is_reported_apart(encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "repo"
    shutil.copytree(encoder, root)

    def scale_embeddings(tensors: dict[str, Any]) -> None:
        (key,) = [k for k in tensors if k.endswith("word_embeddings.weight")]
        tensors[key] = tensors[key] * 1.5

    _edit(root / "base" / "model.safetensors", scale_embeddings)
    rc, report = _verify(capsys, root / "lora.lock", "--only", "effect")
    found = {f["code"]: f for f in report["findings"]}
    assert found["EFFECT-BASE-DRIFT"]["severity"] == "warning", report["findings"]
    assert "the base or the stack moved too" in found["EFFECT-DRIFT"]["message"] and rc == 1


@pytest.mark.slow
def test_an_untrained_embedding_adapter_is_named_at_lock_time(
    encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(encoder, root)
    _edit(root / "adapter" / ADAPTER_FILE, _scale_b(0.0))
    result = generate([root / "adapter"], root / "base", root / "lora.lock", device="cpu", probe=True)
    (none,) = [f for f in result.report.findings if f.code == "EFFECT-NONE"]
    assert none.severity.value == "warning" and "embeddings" in none.message
    rc, report = _verify(capsys, root / "lora.lock", "--only", "effect")
    (again,) = [f for f in report["findings"] if f["code"] == "EFFECT-NONE"]
    assert rc == 0 and again["severity"] == "warning" and "as at lock time" in again["message"]


@pytest.mark.slow
def test_the_golden_set_names_an_embedding_model_it_does_not_score(encoder: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(encoder, root)
    golden = root / "golden.jsonl"
    golden.write_text(json.dumps({"prompt": "The fox is", "choices": ["quick", "lazy"], "answer": 0}) + "\n")
    result = generate([root / "adapter"], root / "base", root / "lora.lock", device="cpu", probe=True, golden=golden)
    assert result.lock is not None
    assert [f.subject for f in result.report.findings if f.code == "GOLDEN-TASK"] == ["adapter"]
    assert "golden" not in read_lock(root / "lora.lock")


def _token_print(fp: dict[str, Any]) -> None:
    fp["continuation"] = [1]
    fp["adapted"] = fp["base"] = {"ids": [[1]], "logps": [[-0.5]]}


def _as_kl_row(row: dict[str, Any]) -> None:
    for key in ("embedding", "effect-distance", "noise-distance"):
        del row[key]
    row.update({"effect-kl": 0.5, "noise-kl": 1e-6})


CRAFTED: dict[str, tuple[str, Any]] = {
    "a-token-print-among-embeddings": ("sidecar", lambda d: _token_print(next(iter(d["adapters"].values()))[0])),
    "a-short-vector": ("sidecar", lambda d: next(iter(d["adapters"].values()))[0]["adapted"]["embedding"].pop()),
    "a-kl-row-over-embeddings": ("lock", lambda lock: _as_kl_row(lock["probe"]["adapter"][0])),
}


@pytest.mark.slow
@pytest.mark.parametrize("edit", sorted(CRAFTED))
def test_crafted_embedding_fingerprints_are_unusable_input(
    encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    from lora_lock.lock.io import dumps
    from lora_lock.probe.sidecar import sidecar_digest, sidecar_text

    root = tmp_path / "repo"
    shutil.copytree(encoder, root)
    lock = read_lock(root / "lora.lock")
    where, change = CRAFTED[edit]
    if where == "sidecar":
        doc = _sidecar(root)
        change(doc)
        text = sidecar_text(doc)
        (root / str(lock["probe"]["sidecar"])).write_text(text, encoding="utf-8")
        lock["probe"]["sidecar-digest"] = sidecar_digest(text)
    else:
        change(lock)
    (root / "lora.lock").write_text(dumps(lock), encoding="utf-8")
    rc, report = _verify(capsys, root / "lora.lock", "--only", "effect")
    assert rc == 2 and report["checked"]["effect"] == "error", report["findings"]


# --- no model: the sidecar's shape and the gates' arithmetic ------------------------------------------------------


def _print(vector: list[float]) -> dict[str, Any]:
    return {"prompt_ids": [1, 2], "adapted": {"embedding": vector}, "base": {"embedding": vector}}


def test_the_sidecar_holds_embedding_fingerprints_and_refuses_a_mixed_shape(tmp_path: Path) -> None:
    good = {"format": 1, "prompts": ["a", "b"], "adapters": {"x": [_print([1.0, 2.0]), _print([0.5, -1.0])]}}
    validate_sidecar(good, tmp_path / "s.json")
    for bad in (
        {**_print([1.0]), "adapted": {"embedding": []}},  # an empty vector
        {**_print([1.0]), "adapted": {"embedding": ["x"]}},  # not a number
        {**_print([1.0]), "adapted": {"embedding": [1e300]}},  # beyond any real activation
        {"prompt_ids": [1], "adapted": {"embedding": [1.0]}},  # no base side
    ):
        doc = {**good, "adapters": {"x": [bad, _print([1.0])]}}
        with pytest.raises(InputError, match="probe fingerprints field"):
            validate_sidecar(doc, tmp_path / "s.json")


def test_a_lock_row_of_unequal_sizes_or_another_pooling_is_refused() -> None:
    row = ProbeRow.from_dict(
        {
            "name": "x",
            "embedding": "mean-last-hidden-state",
            "effect-distance": 0.2,
            "noise-distance": 1e-6,
            "tolerance": 1e-3,
        }
    )
    with pytest.raises(InputError, match="unequal sizes"):
        embed_gate.verify_embedding(None, "x", row, ["a", "b"], [_print([1.0, 2.0]), _print([1.0])], None)
    with pytest.raises(InputError, match="cls"):
        embed_gate.verify_embedding(None, "x", replace(row, embedding="cls"), ["a"], [_print([1.0])], None)
    with pytest.raises(InputError, match="not a number"):
        embed_gate.verify_embedding(None, "x", replace(row, tolerance=math.nan), ["a"], [_print([1.0])], None)


def test_distances_and_neighbours() -> None:
    assert embed_gate.distance([3.0, 4.0], [3.0, 4.0]) == 0
    assert embed_gate.distance([6.0, 8.0], [3.0, 4.0]) == pytest.approx(1.0)  # a norm change counts
    assert embed_gate.distance([1.0, 0.0], [0.0, 0.0]) == 1.0
    assert embed_gate.RATIO_BAND[0] ** 2 == pytest.approx(0.8) and embed_gate.RATIO_BAND[1] ** 2 == pytest.approx(1.25)
    nn = embed_gate.neighbours([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert [j for j, _ in nn] == [1, 0, 1]
    assert nn[0][1] == pytest.approx(0.9 / math.hypot(0.9, 0.1))  # its lead over the orthogonal runner-up
    assert embed_gate.neighbours([[1.0]]) == []
    assert embed_gate.tolerance(1e-6) == embed_gate.FLOOR and embed_gate.tolerance(1.0) == embed_gate.CAP


def test_a_confident_nearest_prompt_that_changes_is_a_flip_and_a_near_tie_is_not() -> None:
    locked = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]
    assert embed_gate.confident_flips(locked, locked) == 0
    swapped = [[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]]  # prompt 0's nearest is now prompt 2
    assert embed_gate.confident_flips(locked, swapped) >= 1
    tie = [[1.0, 0.0], [0.7, 0.7], [0.7, 0.71]]  # prompt 0's two neighbours within the margin
    assert embed_gate.confident_flips(tie, [[1.0, 0.0], [0.7, 0.71], [0.7, 0.7]]) == 0


def test_a_changed_embedding_effect_shows_in_the_lock_diff() -> None:
    from lora_lock.findings import Category
    from lora_lock.lock.diff import _behaviour_changes
    from lora_lock.lock.model import Probe

    row = {"name": "a", "embedding": "mean-last-hidden-state", "effect-distance": 0.5, "noise-distance": 1e-6}
    digest = "sha256:" + "ab" * 32
    settings = {"device": "cpu", "dtype": "float32", "positions": 8, "prompts": 4, "prompts-digest": digest}
    settings |= {"sidecar": "lora.lock.probe-0123456789ab.json", "sidecar-digest": digest, "top-k": 5}
    old = Probe.from_dict({**settings, "adapter": [{**row, "tolerance": 1e-3}]})
    new = Probe.from_dict({**settings, "adapter": [{**row, "effect-distance": 0.25, "tolerance": 1e-3}]})
    (change,) = _behaviour_changes("probe", Category.EFFECT, old, new)
    assert "effect-distance 0.5 → 0.25" in change.message
