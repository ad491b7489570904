"""Generate ``lora_lock/inspect/data/gguf-names.json``: how transformers reads a GGUF file, as data.

lora-lock's static path reads GGUF headers without torch, transformers or the ``gguf`` package, so what those
libraries know is recorded here, by asking them (never by hand):

- ggml tensor types (id → name, block size, bytes per block) from ``gguf.constants.GGML_QUANT_SIZES``;
- for every ``general.architecture`` of ``gguf.constants.MODEL_ARCH_NAMES``: whether transformers can load it
  (its own ``load_gguf_checkpoint`` is run on a small GGUF file written here with ``gguf.GGUFWriter``), which
  ``model_type`` it becomes, which metadata key sets each model fact (hidden size, layers, heads, vocab), and the
  tensor name map (llama.cpp name → transformers parameter name) that transformers' own
  ``get_gguf_hf_weights_map`` builds from the model it instantiates (on the meta device) with the architecture's
  tensor processor.

Run in the dev environment (torch, transformers, gguf installed)::

    .venv/bin/python scripts/gen_gguf_names.py            # rewrite the data file
    .venv/bin/python scripts/gen_gguf_names.py --check    # exit 1 if it is stale

The output is deterministic: sorted keys, no timestamps, the library versions recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import logging
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "lora_lock" / "inspect" / "data" / "gguf-names.json"

#: Blocks of the probe model: two, so that a per-block name template can be checked against both.
BLOCKS = 2
_BLOCK = re.compile(r"^blk\.(\d+)\.")


def ggml_types() -> dict[str, dict[str, Any]]:
    from gguf.constants import GGML_QUANT_SIZES

    return {
        str(int(kind)): {"name": kind.name, "block_size": block, "type_size": size}
        for kind, (block, size) in sorted(GGML_QUANT_SIZES.items(), key=lambda item: int(item[0]))
    }


def _metadata_subkeys() -> list[str]:
    """Every per-architecture metadata key transformers maps to a config attribute (``block_count``, …)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    keys: set[str] = set()
    for section, mapping in GGUF_CONFIG_MAPPING.items():
        if section in ("general", "tokenizer"):
            continue
        keys.update(mapping)
    return sorted(keys)


def _probe_file(path: Path, arch: str, *, per_layer: bool) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    for i, sub in enumerate(_metadata_subkeys()):
        if per_layer and sub == "attention.head_count_kv":
            # Hybrid models (LFM2) store KV heads per layer; transformers takes the maximum.
            writer.add_array(f"{arch}.{sub}", [0, 1000 + i])
        else:
            writer.add_uint32(f"{arch}.{sub}", 1000 + i)
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("token_embd.weight", np.zeros((3, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def probe_config(arch: str, workdir: Path) -> dict[str, Any] | None:
    """What transformers' GGUF loader makes of a file of ``arch``: its config dict, or ``None`` if it refuses.

    Each metadata key gets a distinct integer, so the config attribute it lands in names the key."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = workdir / f"{arch}.gguf"
    for per_layer in (False, True):
        _probe_file(path, arch, per_layer=per_layer)
        try:
            parsed = load_gguf_checkpoint(str(path), return_tensors=False)
        except ValueError as exc:
            if "not supported" in str(exc):
                return None
            raise
        except TypeError:
            if per_layer:
                raise
            continue
        config: dict[str, Any] = parsed["config"]
        return config
    return None


def config_keys(config: dict[str, Any]) -> dict[str, str]:
    """transformers config attribute → the metadata sub-key whose probe value it received (integers only: the
    facts lora-lock reads are sizes and counts)."""
    by_value = {1000 + i: sub for i, sub in enumerate(_metadata_subkeys())}
    out = {
        attr: by_value[value]
        for attr, value in config.items()
        if isinstance(value, int) and not isinstance(value, bool) and value in by_value
    }
    if "vocab_size" not in out and config.get("vocab_size") == 3:
        # No vocab_size key: transformers counts the entries of `tokenizer.ggml.tokens` (three in the probe).
        out["vocab_size"] = "@tokenizer.ggml.tokens"
    return dict(sorted(out.items()))


def _build(model_type: str) -> Any | None:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    try:
        config = AutoConfig.for_model(model_type)
    except ValueError:
        return None  # a model_type only remote code defines (DeciLM): transformers cannot build it
    for attr in ("num_hidden_layers", "num_layers", "num_decoder_layers"):
        if hasattr(config, attr):
            setattr(config, attr, BLOCKS)
    for attr, value in SMALL.items():
        # A derived or per-layer attribute (Falcon's head_dim, Gemma 4's) raises on access: keep the default.
        with contextlib.suppress(Exception):
            if getattr(config, attr, None) is not None:
                setattr(config, attr, value)
    if getattr(config, "num_key_value_heads", 0) is None:
        # Some default configs leave it unset (Nemotron); the GGUF loader always sets it from the file.
        config.num_key_value_heads = config.num_attention_heads
    errors = []
    for auto in (AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModel):
        try:
            with torch.device("meta"):
                return auto.from_config(config)
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            errors.append(f"{auto.__name__}: {exc}")
    raise RuntimeError(f"{model_type}: no model class builds: {errors}")


#: Small sizes for the probe model, so the tensor processors can run on real-shaped arrays.
SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 4,
    "num_local_experts": 4,
}


def _run(processor: Any, name: str, shape: tuple[int, ...], raw: dict[str, str], config: dict[str, Any]) -> Any:
    """``(transformers name, output shape, output is the input transposed)`` of one processed array."""
    import numpy as np

    parsed: dict[str, Any] = {"tensors": {}, "config": config}
    weights = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    try:
        result = processor.process(weights=weights, name=name, tensor_key_mapping=raw, parsed_parameters=parsed)
    except (ValueError, RuntimeError, IndexError, KeyError, TypeError):
        return None, None, False
    if result.name is None:
        stored = parsed["tensors"]
        if len(stored) != 1:
            return None, None, False
        hf_name, tensor = next(iter(stored.items()))
        out = tensor.numpy()
    else:
        hf_name, out = raw.get(result.name), np.asarray(result.weights)
    transposed = len(shape) == 2 and out.shape == shape[::-1] and bool(np.array_equal(out, weights.T))
    return hf_name, tuple(out.shape), transposed


def _layout(
    processor: Any, gguf_name: str, shapes: dict[str, tuple[int, ...]], raw: dict[str, str], config: dict[str, Any]
) -> tuple[str | None, str]:
    """Run the architecture's tensor processor on an array named ``gguf_name``, as ``load_gguf_checkpoint`` does,
    and see where it lands: ``(transformers name, "same" | "transposed" | "merged")``. The array has the
    parameter's shape (then its reverse); "transposed": the file stores the parameter transposed (GPT-2's Conv1D);
    "merged": the tensor is combined with others (fused experts) or reshaped, so its dims are not the parameter's."""
    target = raw.get(gguf_name)
    shape = shapes.get(target or "")
    if shape is None:
        # A name only a processor knows (the head GPT-2 stores itself, the experts fused from `*_exps.weight`).
        hf_name, _, _ = _run(processor, gguf_name, (2, 4), raw, config)
        return hf_name, "merged"
    hf_name, out, transposed = _run(processor, gguf_name, shape, raw, config)
    if hf_name == target and out is not None and transposed:  # a square parameter stored transposed
        return hf_name, "transposed"
    if hf_name == target and out == shape:
        return hf_name, "same"
    if len(shape) == 2:
        hf_name, out, transposed = _run(processor, gguf_name, shape[::-1], raw, config)
        if hf_name == target and out == shape and transposed:
            return hf_name, "transposed"
    return target, "merged"


def _template(arch: str, gguf_name: str, hf_name: str) -> tuple[str, str]:
    match = _BLOCK.match(gguf_name)
    if match is None:
        return gguf_name, hf_name
    n = match[1]
    h = hf_name.replace(f".{n}.", ".{bid}.", 1)
    if "{bid}" not in h:
        raise RuntimeError(f"{arch}: {gguf_name} → {hf_name}: the block number is not in the transformers name")
    return "blk.{bid}." + gguf_name[match.end() :], h


def tensor_map(arch: str, model_type: str) -> tuple[str, dict[str, list[str]]] | None:
    """The model class transformers builds, and ``{gguf name template: [transformers name template, layout]}``."""
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    model = _build(model_type)
    if model is None:
        return None
    config = model.config.to_dict()
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config)
    raw = get_gguf_hf_weights_map(model, processor, num_layers=BLOCKS)
    shapes = {name: tuple(param.shape) for name, param in model.state_dict().items()}
    # `output.weight` too: some processors store the head under their own name (GPT-2); and a name without a
    # `.weight` suffix is looked up by processors that fuse `<name>.weight` tensors (MoE experts).
    names = {*raw, "output.weight"} | {f"{n}.weight" for n in raw if not n.endswith((".weight", ".bias"))}
    out: dict[str, list[str]] = {}
    for gguf_name in sorted(names):
        hf_name, layout = _layout(processor, gguf_name, shapes, raw, config)
        if hf_name is None:
            continue
        g, h = _template(arch, gguf_name, hf_name)
        entry = [h, layout]
        if out.setdefault(g, entry) != entry:
            raise RuntimeError(f"{arch}: {g} maps to both {out[g]} and {entry}")
    return type(model).__name__, dict(sorted(out.items()))


def generate() -> dict[str, Any]:
    import transformers
    from gguf.constants import MODEL_ARCH_NAMES

    architectures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in sorted(set(MODEL_ARCH_NAMES.values())):
            config = probe_config(arch, Path(tmp))
            if config is None:
                continue
            model_type = str(config["model_type"])
            built = tensor_map(arch, model_type)
            if built is None:
                continue
            model_class, tensors = built
            architectures[arch] = {
                "model_type": model_type,
                "model_class": model_class,
                "config": config_keys(config),
                # transformers ties the head when the file has no `output.weight`, except for these.
                "tie_always": arch in ("falcon", "bloom"),
                "tensors": tensors,
            }
    return {
        "about": "How transformers reads GGUF files; generated by scripts/gen_gguf_names.py, do not edit.",
        "gguf": importlib.metadata.version("gguf"),
        "transformers": transformers.__version__,
        "ggml_types": ggml_types(),
        "architectures": architectures,
    }


def render() -> str:
    # The loaders log and warn about the probe files' made-up values; none of it is part of the output.
    logging.disable(logging.WARNING)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        doc = generate()
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the data file differs from a regeneration")
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(json.loads(text)['architectures'])} architectures)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
