"""The lock schema documents every field a generated lock holds: a lock generated for each probed task type
validates, and a walk of it finds no key the schema does not list (also where the schema leaves a table open)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import tomllib

from lora_lock.commands.generate import generate

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "lora_lock" / "schemas" / "lora-lock.schema.json"


def _schema() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return doc


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        ref = str(node["$ref"])
        assert ref.startswith("#/$defs/"), ref
        node = root["$defs"][ref.removeprefix("#/$defs/")]
    return node


def _branches(node: Mapping[str, Any], root: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The node and every subschema that applies to the same instance (allOf / anyOf / oneOf / if-then-else)."""
    node = _resolve(node, root)
    yield node
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key, ()):
            yield from _branches(sub, root)
    for key in ("then", "else"):
        if key in node:
            yield from _branches(node[key], root)


def undocumented(value: Any, node: Mapping[str, Any], root: Mapping[str, Any], path: str = "") -> list[str]:
    """The paths of keys in ``value`` that the schema ``node`` names nowhere (no ``properties`` entry and no
    ``additionalProperties`` / ``patternProperties`` schema for it)."""
    branches = list(_branches(node, root))
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            subs = [b["properties"][key] for b in branches if key in b.get("properties", {})]
            subs += [b["additionalProperties"] for b in branches if isinstance(b.get("additionalProperties"), dict)]
            if not subs and any(b.get("patternProperties") for b in branches):
                continue  # a pattern-keyed table (file names): documented by its pattern
            if not subs:
                out.append(f"{path}/{key}")
                continue
            for sub in subs:
                out += undocumented(item, sub, root, f"{path}/{key}")
    elif isinstance(value, list):
        for sub in [b["items"] for b in branches if isinstance(b.get("items"), dict)]:
            for index, item in enumerate(value):
                out += undocumented(item, sub, root, f"{path}/{index}")
    return sorted(set(out))


def assert_lock_documented(lock_path: Path) -> dict[str, Any]:
    """The lock validates against the packaged schema, and every key it holds is documented there."""
    doc = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    schema = _schema()
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    assert undocumented(doc, schema, schema) == []
    return dict(doc)


def test_the_walk_finds_a_key_the_schema_does_not_list() -> None:
    schema = _schema()
    doc = {
        "probe": {"adapter": [{"name": "a", "effect-kl": 0.1, "noise-kl": 1e-6, "tolerance": 5e-4, "mystery": 1}]},
        "golden": {"kinds": {"choice": 3}, "surprise": "x"},
    }
    assert undocumented(doc, schema, schema) == ["/golden/surprise", "/probe/adapter/0/mystery"]


def test_every_probe_and_golden_field_the_probe_writes_is_typed_in_the_schema() -> None:
    """The fields of [probe] and [golden] that the lock-time code writes, each with a type."""
    schema = _schema()["properties"]
    probe, golden = schema["probe"]["properties"], schema["golden"]["properties"]
    probe_row, golden_row = probe["adapter"]["items"]["properties"], golden["adapter"]["items"]["properties"]
    for table, keys in (
        (probe, ("attn-implementation", "torch", "cuda", "gpu", "device", "dtype", "positions", "top-k")),
        (probe_row, ("effect-kl", "noise-kl", "tolerance", "embedding", "effect-distance", "noise-distance")),
        (golden, ("convention", "attn-implementation", "torch", "noise-numerics", "device", "dtype", "kinds")),
        (golden_row, ("accuracy", "acc-norm", "correct", "unstable", "noise-ll")),
    ):
        for key in keys:
            assert "type" in table[key] or "enum" in table[key] or "$ref" in table[key], key


def test_a_probe_row_has_the_record_of_one_of_the_two_measures() -> None:
    schema = _schema()
    validator = jsonschema.Draft202012Validator(schema["properties"]["probe"]["properties"]["adapter"]["items"])
    assert validator.is_valid({"name": "a", "effect-kl": 0.1, "noise-kl": 1e-6, "tolerance": 5e-4})
    embedding = {"name": "a", "embedding": "mean-last-hidden-state", "effect-distance": 0.2, "noise-distance": 1e-6}
    assert validator.is_valid({**embedding, "tolerance": 1e-3})
    assert not validator.is_valid({"name": "a", "tolerance": 1e-3})  # neither measure
    assert not validator.is_valid({**embedding, "tolerance": 1e-3, "effect-distance": -1})


@pytest.mark.slow
def test_a_causal_lock_with_a_golden_set_is_documented(
    tmp_path: Path, tiny_llama: Path, tiny_llama_adapter: Path
) -> None:
    shutil.copytree(tiny_llama, tmp_path / "base")
    shutil.copytree(tiny_llama_adapter, tmp_path / "adapter")
    golden = tmp_path / "golden.jsonl"
    lines = [
        {"prompt": "The fox is", "choices": ["quick", "lazy", "blue"], "answer": 0},
        {"prompt": "Numbers: 0 1 2", "choices": ["3", "x"], "answer": 0},
        {"prompt": "The capital of France is", "expected": "Paris", "scorer": "contains", "max_new_tokens": 4},
    ]
    golden.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    result = generate(
        [tmp_path / "adapter"], tmp_path / "base", tmp_path / "lora.lock", device="cpu", probe=True, golden=golden
    )
    assert result.lock is not None, [f.to_dict() for f in result.report.findings]
    doc = assert_lock_documented(tmp_path / "lora.lock")
    assert {"convention", "attn-implementation", "torch"} <= set(doc["golden"])
    assert {"attn-implementation", "torch"} <= set(doc["probe"])
