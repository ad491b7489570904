"""Valid, tiny inputs for every harness: the seeds of the atheris corpus and the bases the hypothesis strategies
mutate. ``python -m fuzz.seeds`` (re)writes ``fuzz/corpus/<harness>/``.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fuzz.harnesses import TOKENIZER_SEPARATOR, sized

CORPUS = Path(__file__).resolve().parent / "corpus"

#: dtype → bytes per element, for the seeds (sub-byte dtypes are left to the fuzzers).
_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "BOOL": 1, "F64": 8, "I32": 4}


def header_dict(
    tensors: Mapping[str, tuple[str, Sequence[int]]], metadata: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], int]:
    """A valid safetensors header (tensors laid out in order) and the length of its data section."""
    doc: dict[str, Any] = {}
    if metadata is not None:
        doc["__metadata__"] = dict(metadata)
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = _BYTES[dtype]
        for dim in shape:
            size *= dim
        doc[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    return doc, offset


def safetensors_file(
    tensors: Mapping[str, tuple[str, Sequence[int]]], metadata: Mapping[str, str] | None = None
) -> bytes:
    """A whole, valid ``.safetensors`` file with zeroed data."""
    doc, data_len = header_dict(tensors, metadata)
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(data_len)


#: A LoRA adapter's tensors (PEFT's saved names) and a base's.
ADAPTER_TENSORS: dict[str, tuple[str, Sequence[int]]] = {
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": ("F32", [2, 4]),
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": ("F32", [4, 2]),
}
BASE_TENSORS: dict[str, tuple[str, Sequence[int]]] = {
    "model.embed_tokens.weight": ("F16", [8, 4]),
    "model.layers.0.self_attn.q_proj.weight": ("BF16", [4, 4]),
    "model.norm.weight": ("F32", [4]),
}

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    },
    "gpt2_bnb": {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "vocab_size": 1000,
        "dtype": "bfloat16",
        "quantization_config": {
            "quant_method": "bitsandbytes",
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": "bfloat16",
            "llm_int8_skip_modules": ["lm_head"],
        },
    },
    "multimodal_gptq": {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": {"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 10},
        "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False},
    },
}

ADAPTER_CONFIGS: dict[str, dict[str, Any]] = {
    "lora": {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "org/base",
        "revision": None,
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "target_modules": ["q_proj", "v_proj"],
        "exclude_modules": None,
        "modules_to_save": None,
        "fan_in_fan_out": False,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": None,
        "layers_pattern": None,
        "lora_bias": False,
        "peft_version": "0.13.2",
    },
    "regex_layers": {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8.5,
        "target_modules": r".*\.(q_proj|v_proj)",
        "exclude_modules": ["lm_head"],
        "modules_to_save": ["score"],
        "rank_pattern": {"q_proj": 2, "model.layers.1": 16},
        "alpha_pattern": {"v_proj": 4.0},
        "layers_to_transform": [0, 11],
        "layers_pattern": ["layers"],
        "use_dora": True,
    },
    "adalora": {"peft_type": "ADALORA", "init_r": 12, "target_modules": "all-linear", "bias": "lora_only"},
}

INDEX = {
    "metadata": {"total_size": 22},
    "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
}

_DIGEST = "sha256:" + "ab" * 32


def valid_lock() -> dict[str, Any]:
    """A small, schema-valid lock (written by hand after ``bench/.work/tiny/static.lock``)."""
    return {
        "lock-version": 1,
        "generated-by": "lora-lock 0.1.0",
        "hashing": {"algorithm": "sha256", "files": "sha256 of each file", "tokenizer-fingerprint": "canary v1"},
        "base": {
            "source": "base",
            "dtype": "float32",
            "config": {"architecture": "LlamaForCausalLM", "hidden_size": 64, "tie_word_embeddings": False},
            "files": {"config.json": {"digest": _DIGEST, "size": 714}},
            "quantization": {"method": "none"},
            "weights-dtypes": {"F32": 21},
        },
        "tokenizer": {
            "source": "base",
            "vocab-size": 1000,
            "fingerprint": _DIGEST,
            "fingerprint-tokens": 300,
            "files": {"tokenizer.json": {"digest": _DIGEST, "size": 54283}},
            "special-tokens": {"bos_token": 1, "eos_token": 2},
        },
        "adapter": [
            {
                "name": "adapter",
                "source": "adapter",
                "files": {"adapter_config.json": {"digest": _DIGEST, "size": 1186}},
                "modules": [
                    {
                        "base-shape": "64x64",
                        "count": 2,
                        "kind": "linear",
                        "layers": "0-1",
                        "lora-a": "8x64",
                        "lora-b": "64x8",
                        "pattern": "model.layers.*.self_attn.q_proj",
                        "rank": 8,
                    }
                ],
                "settings": {
                    "peft_type": "LORA",
                    "r": 8,
                    "lora_alpha": 16,
                    "target_modules": ["q_proj", "v_proj"],
                    "bias": "none",
                },
            }
        ],
        "environment": {
            "policy": {"peft": "exact", "torch": "minor"},
            "versions": {"peft": "0.13.2", "python": "3.11.7", "torch": "2.4.0+cpu"},
        },
    }


def lock_text(lock: Mapping[str, Any] | None = None) -> str:
    from lora_lock.lock import io as lockfile

    return lockfile.dumps(valid_lock() if lock is None else lock)


GOLDEN_LINES: tuple[dict[str, Any], ...] = (
    {"prompt": "2+2=", "expected": "4"},
    {"prompt": "Capital of France?", "expected": "paris", "scorer": "contains", "ignore_case": True},
    {"prompt": "Year?", "expected": r"\d{4}", "scorer": "regex", "max_new_tokens": 8, "until": ["\n"]},
    {"prompt": "Say hi", "expected": "hi", "ignore_punctuation": True, "regexes_to_ignore": [r"\s+"]},
    {"prompt": "Pick one", "choices": ["yes", "no"], "answer": 1},
)

TOKENIZER_CONFIG = {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "chat_template": "{{ messages }}"}
TOKENIZER_JSON = {
    "version": "1.0",
    "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "hi": 3}, "unk_token": "<unk>"},
    "pre_tokenizer": {"type": "Whitespace"},
}


def seeds() -> dict[str, dict[str, bytes]]:
    """harness → file name → bytes of every seed."""

    def js(doc: Any) -> bytes:
        return json.dumps(doc, indent=1).encode()

    base_doc, base_len = header_dict(BASE_TENSORS, {"format": "pt"})
    adapter_doc, adapter_len = header_dict(ADAPTER_TENSORS)
    return {
        "safetensors_parse": {
            "base.bin": sized(base_len, json.dumps(base_doc).encode()),
            "adapter.bin": sized(adapter_len, json.dumps(adapter_doc).encode()),
            "empty.bin": sized(0, b"{}"),
        },
        "safetensors_file": {
            "base.safetensors": safetensors_file(BASE_TENSORS, {"format": "pt"}),
            "adapter.safetensors": safetensors_file(ADAPTER_TENSORS),
        },
        "model_config": {f"{name}.json": js(doc) for name, doc in MODEL_CONFIGS.items()},
        "adapter_config": {f"{name}.json": js(doc) for name, doc in ADAPTER_CONFIGS.items()},
        "checkpoint_index": {"index.json": js(INDEX)},
        "lock": {"lora.lock": lock_text().encode()},
        "golden": {"golden.jsonl": "".join(json.dumps(line) + "\n" for line in GOLDEN_LINES).encode()},
        "tokenizer": {
            "all.bin": js(TOKENIZER_CONFIG)
            + TOKENIZER_SEPARATOR
            + b"{{ bos_token }}"
            + TOKENIZER_SEPARATOR
            + js(TOKENIZER_JSON),
            "config_only.bin": js(TOKENIZER_CONFIG),
        },
    }


def write_corpus(root: Path = CORPUS) -> list[Path]:
    written = []
    for harness, files in seeds().items():
        directory = root / harness
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            path = directory / name
            path.write_bytes(data)
            written.append(path)
    return written


if __name__ == "__main__":
    for path in write_corpus():
        sys.stdout.write(f"{path.relative_to(CORPUS.parent.parent)} ({path.stat().st_size} bytes)\n")
