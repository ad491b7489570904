"""Tiny real example models for tests, the demo and benchmarks: CPU only, seconds, deterministic given a seed.

- :func:`train_bpe_tokenizer` — a byte-level BPE tokenizer trained with ``tokenizers`` on a small built-in
  multilingual corpus, saved so ``transformers.AutoTokenizer`` loads it (with a chat template).
- :func:`build_tiny_llama` / :func:`build_tiny_gpt2` — random-weight ``LlamaForCausalLM`` / ``GPT2LMHeadModel``
  saved as safetensors with config.json, generation_config.json and the tokenizer files.
- :func:`train_lora` — a PEFT LoRA adapter trained a few steps on CPU, so it really changes the model's outputs.
- :func:`adapter_kl` — how much an adapter changes the next-token distributions on a prompt.

torch, transformers and peft are imported inside the functions, so importing this module stays cheap (pytest
fixture modules import it in every session). Nothing here downloads anything or runs remote code.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Special tokens of every tiny tokenizer, in id order (``<unk>`` is 0).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"

#: A minimal chat template over the role tokens above.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

#: The built-in training corpus: short texts in several scripts, code and numbers, enough for ~1000 BPE tokens.
CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog. A low-rank adapter changes a few matrices of a large model.",
    "Fine-tuning updates the weights; a LoRA adapter learns two small matrices whose product is added to a layer.",
    "The lockfile pins the base model, the tokenizer and the environment that the adapter was trained on.",
    "When the base model changes, the adapter may still load without an error and silently do nothing at all.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 2048 4096 3.14159 2.71828 -1 1e-5 0.02 99.9%",
    "Dates and times: 2024-01-31, 12:45:00, Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday.",
    "def forward(self, x: Tensor) -> Tensor:\n    return self.base(x) + self.scale * self.lora_B(self.lora_A(x))",
    "for i in range(10):\n    if i % 2 == 0:\n        print(f'even {i}')\n    else:\n        continue",
    "import json\nwith open('config.json') as f:\n    config = json.load(f)\nprint(config['hidden_size'])",
    '{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 1000, "rope_theta": 10000}',
    "Der schnelle braune Fuchs springt über den faulen Hund. Große Sprachmodelle lernen aus sehr vielen Texten.",
    "Ein Adapter verändert nur wenige Gewichte; das Basismodell bleibt unverändert und wird nicht neu trainiert.",
    "Le renard brun rapide saute par-dessus le chien paresseux. Les grands modèles de langue apprennent beaucoup.",
    "Ça va très bien, merci ! Où est la gare ? C'est une journée magnifique à Paris, près de la Seine.",
    "El rápido zorro marrón salta sobre el perro perezoso. ¿Qué tal estás? Mañana vamos a la montaña.",
    "La pequeña niña come manzanas y naranjas en el jardín; los niños juegan al fútbol en la plaza.",
    "A raposa marrom rápida pula sobre o cão preguiçoso. Não há nada melhor do que um café em Lisboa.",
    "Il veloce cane marrone salta sopra la volpe pigra. Buongiorno, come stai? Andiamo a mangiare la pizza.",
    "Быстрая коричневая лиса прыгает через ленивую собаку. Привет, мир! Как дела? Сегодня хорошая погода.",
    "Большие языковые модели обучаются на огромных корпусах текстов; адаптер меняет лишь малую часть весов.",
    "Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο. Καλημέρα κόσμε, τι κάνεις σήμερα;",
    "日本語のテキストと漢字、カタカナ、ひらがな。今日はいい天気ですね。東京は大きな都市です。",
    "機械学習のモデルは大量のデータから学習します。アダプターは小さな行列だけを更新します。",
    "中文句子：你好，世界！我们今天去公园散步。大型语言模型从大量文本中学习知识。",
    "这个适配器只改变很少的参数，基础模型保持不变。北京和上海是中国的大城市。",
    "한국어 문장입니다. 안녕하세요, 세계! 오늘 날씨가 정말 좋네요. 서울은 큰 도시입니다.",
    "हिन्दी वाक्य। नमस्ते दुनिया! आज मौसम बहुत अच्छा है। दिल्ली भारत की राजधानी है।",
    "العربية جملة. مرحبا بالعالم! الطقس جميل اليوم. القاهرة مدينة كبيرة جدا.",
    "עברית משפט. שלום עולם! מזג האוויר יפה היום. ירושלים היא עיר עתיקה.",
    "Türkçe cümle: Hızlı kahverengi tilki tembel köpeğin üzerinden atlar. Günaydın, nasılsın?",
    "Polski: Szybki brązowy lis przeskakuje nad leniwym psem. Dzień dobry, jak się masz?",
    "Tiếng Việt: Con cáo nâu nhanh nhẹn nhảy qua con chó lười. Xin chào thế giới!",
    "ภาษาไทย: สวัสดีชาวโลก วันนี้อากาศดีมาก กรุงเทพเป็นเมืองใหญ่",
    "Emoji 🦊🚀👩‍💻🎉 and symbols ∑ ∫ √ ≠ ≤ ≥ → ← × ÷ ± ∞ € £ ¥ © ®   multiple   spaces\tand\ttabs",
    "<|user|> What is LoRA? <|assistant|> A low-rank adapter for a frozen base model. <|end|>",
    "<|system|> You are a helpful assistant. <|user|> Translate 'hello' to French. <|assistant|> Bonjour. <|end|>",
)

#: The text :func:`train_lora` fits by default: short and repetitive, so a few steps move the outputs clearly.
TRAIN_TEXT = (
    "The adapter says: the fox is quick and the dog is lazy. The adapter says: the fox is quick and the dog is lazy. "
    "Le renard est rapide. Der Fuchs ist schnell. The adapter says: the fox is quick and the dog is lazy."
)

#: Files that make up a saved tokenizer (copied next to a model's weights).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)

#: transformers modules whose weight is stored ``[in, out]`` (PEFT needs ``fan_in_fan_out=True`` for them).
_CONV1D_CLASS = "Conv1D"


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


# --- tokenizer ---------------------------------------------------------------------------------------------------


def train_bpe_tokenizer(out_dir: str | Path, vocab_size: int = 1000, corpus: Iterable[str] | None = None) -> Path:
    """Train a byte-level BPE tokenizer on ``corpus`` (default :data:`CORPUS`) and save it to ``out_dir``.

    Writes tokenizer.json, tokenizer_config.json (with :data:`CHAT_TEMPLATE`) and special_tokens_map.json;
    ``transformers.AutoTokenizer.from_pretrained(out_dir)`` loads it. BPE training is deterministic, so the same
    inputs give byte-identical files. The vocabulary may end up smaller than ``vocab_size`` when the corpus runs
    out of merges (the default corpus reaches 1000).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(CORPUS if corpus is None else corpus)

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )

    fast_class: Any = PreTrainedTokenizerFast  # untyped constructor
    fast = fast_class(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD, model_max_length=256
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))

    # transformers 5 writes the chat template to chat_template.jinja and no special_tokens_map.json; keep the
    # classic layout every transformers version reads: the template inside tokenizer_config.json.
    (out / "chat_template.jinja").unlink(missing_ok=True)
    config_path = out / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("backend", None)
    config.update(
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": CHAT_TEMPLATE,
            "bos_token": BOS,
            "eos_token": EOS,
            "unk_token": UNK,
            "pad_token": PAD,
            "model_max_length": 256,
        }
    )
    _write_json(config_path, config)
    _write_json(
        out / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": PAD}
    )
    return out


def _tokenizer_facts(tokenizer_dir: Path) -> tuple[int, int, int, int]:
    """(vocab size incl. added tokens, bos id, eos id, pad id) of a saved tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    bos, eos, pad = (tok.token_to_id(t) for t in (BOS, EOS, PAD))
    if bos is None or eos is None or pad is None:
        raise ValueError(f"{tokenizer_dir}: the tokenizer lacks one of {BOS}, {EOS}, {PAD}")
    return tok.get_vocab_size(with_added_tokens=True), bos, eos, pad


def copy_tokenizer(tokenizer_dir: str | Path, out_dir: str | Path) -> None:
    """Copy the tokenizer files of ``tokenizer_dir`` (never config.json or weights) into ``out_dir``."""
    src, dst = Path(tokenizer_dir), Path(out_dir)
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


# --- base models -------------------------------------------------------------------------------------------------


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block and restore the caller's random state afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _save_model(model: Any, out: Path, tokenizer_dir: Path, bos: int, eos: int, pad: int) -> Path:
    from transformers import GenerationConfig

    generation_class: Any = GenerationConfig  # untyped constructor
    model.generation_config = generation_class(
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False, max_new_tokens=16
    )
    model.eval()
    model.save_pretrained(str(out))
    copy_tokenizer(tokenizer_dir, out)
    return out


def _torch_dtype(name: str) -> Any:
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r}")
    return dtype


def build_tiny_llama(
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    *,
    seed: int,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    vocab_size: int | None = None,
    max_positions: int = 256,
    tie_word_embeddings: bool = False,
    initializer_range: float = 0.1,
    dtype: str = "float32",
) -> Path:
    """Save a random-weight ``LlamaForCausalLM`` (safetensors), its configs and the tokenizer into ``out_dir``.

    ``vocab_size`` defaults to the tokenizer's (a larger one pads the embedding, as real bases often do).
    ``initializer_range`` is larger than transformers' 0.02 so the random base's next-token distributions are not
    flat and an adapter can move them visibly.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out, tok_dir = Path(out_dir), Path(tokenizer_dir)
    n_vocab, bos, eos, pad = _tokenizer_facts(tok_dir)
    config = LlamaConfig(
        vocab_size=vocab_size or n_vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        initializer_range=initializer_range,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    with _seeded(seed), torch.no_grad():
        model = LlamaForCausalLM(config).to(_torch_dtype(dtype))
    return _save_model(model, out, tok_dir, bos, eos, pad)


def build_tiny_gpt2(
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    *,
    seed: int,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int | None = None,
    max_positions: int = 256,
    initializer_range: float = 0.1,
    dtype: str = "float32",
) -> Path:
    """Save a random-weight ``GPT2LMHeadModel`` (``Conv1D`` projections, tied head) like :func:`build_tiny_llama`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out, tok_dir = Path(out_dir), Path(tokenizer_dir)
    n_vocab, bos, eos, pad = _tokenizer_facts(tok_dir)
    config = GPT2Config(
        vocab_size=vocab_size or n_vocab,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_positions=max_positions,
        initializer_range=initializer_range,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    with _seeded(seed), torch.no_grad():
        model = GPT2LMHeadModel(config).to(_torch_dtype(dtype))
    return _save_model(model, out, tok_dir, bos, eos, pad)


# --- adapters ----------------------------------------------------------------------------------------------------


def load_causal_lm(base_dir: str | Path, dtype: str = "float32") -> Any:
    """Load a local base with ``AutoModelForCausalLM`` (``AutoModelForImageTextToText`` for a vision-language
    base, as the probe does; local files only, no remote code), in eval mode."""
    import transformers

    from lora_lock.probe.tasks import auto_class_name

    auto: Any = getattr(transformers, auto_class_name(Path(base_dir)))
    model: Any = auto.from_pretrained(
        str(base_dir), dtype=_torch_dtype(dtype), local_files_only=True, trust_remote_code=False
    )
    model.eval()
    return model


def encode(base_dir: str | Path, text: str) -> Any:
    """Token ids of ``text`` (with BOS) as a ``[1, n]`` tensor, using the tokenizer saved in ``base_dir``."""
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(base_dir) / "tokenizer.json"))
    return torch.tensor([tok.encode(text).ids], dtype=torch.long)


def _conv1d_targets(model: Any, target_modules: Sequence[str] | str) -> bool:
    """Whether the modules ``target_modules`` names are transformers ``Conv1D`` layers (weight ``[in, out]``)."""
    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    for name, module in model.named_modules():
        leaf = name.rpartition(".")[2]
        if (leaf in names or name in names) and type(module).__name__ == _CONV1D_CLASS:
            return True
    return False


def train_lora(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    target_modules: Sequence[str] | str,
    r: int = 8,
    alpha: int = 16,
    steps: int = 20,
    seed: int,
    use_dora: bool = False,
    use_rslora: bool = False,
    modules_to_save: Sequence[str] | None = None,
    rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, int] | None = None,
    init_lora_weights: bool | str = True,
    learning_rate: float = 1e-2,
    text: str = TRAIN_TEXT,
    max_tokens: int = 64,
    fan_in_fan_out: bool | None = None,
    bias: str = "none",
) -> Path:
    """Train a LoRA adapter on ``base_dir`` for ``steps`` AdamW steps on ``text`` and save it to ``out_dir``.

    The adapter is saved with PEFT's ``save_pretrained`` (adapter_model.safetensors + adapter_config.json) and its
    ``base_model_name_or_path`` is ``str(base_dir)``. The default learning rate is high on purpose: after a few
    steps KL(adapted ‖ base) on a prompt is clearly above zero. ``fan_in_fan_out`` defaults to whether the targets
    are ``Conv1D`` layers (GPT-2). Deterministic given ``seed`` (on one machine and thread count).
    """
    import torch
    from peft import LoraConfig, get_peft_model

    base, out = Path(base_dir), Path(out_dir)
    model = load_causal_lm(base)
    model.name_or_path = str(base)  # what PEFT writes as base_model_name_or_path
    targets: list[str] | str = target_modules if isinstance(target_modules, str) else list(target_modules)
    if fan_in_fan_out is None:
        fan_in_fan_out = _conv1d_targets(model, targets)
    init: Any = init_lora_weights  # peft types it as a Literal of method names
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=targets,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        rank_pattern=dict(rank_pattern or {}),
        alpha_pattern=dict(alpha_pattern or {}),
        use_dora=use_dora,
        use_rslora=use_rslora,
        init_lora_weights=init,
        fan_in_fan_out=fan_in_fan_out,
        bias=bias,  # type: ignore[arg-type]  # peft types it as a Literal
    )
    ids = encode(base, text)[:, :max_tokens]
    with _seeded(seed):
        peft_model = get_peft_model(model, config)
        peft_model.train()
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
        for _ in range(steps):
            loss = peft_model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    peft_model.eval()
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out), safe_serialization=True)

    # PEFT saves target_modules from a set, so its order varies between processes; sort it (PEFT reads it back
    # as a set) so the same inputs give byte-identical files. Same format as PEFT's own writer.
    config_path = out / "adapter_config.json"
    saved: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(saved.get("target_modules"), list):
        saved["target_modules"] = sorted(saved["target_modules"])
    saved["base_model_name_or_path"] = str(base)
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True), encoding="utf-8")
    return out


def adapter_kl(base_dir: str | Path, adapter_dir: str | Path, prompt: str = "The quick brown fox") -> float:
    """Mean over the prompt's positions of KL(adapted ‖ base) of the next-token distributions (fp32, nats)."""
    import torch
    from peft import PeftModel

    model: Any = PeftModel.from_pretrained(load_causal_lm(base_dir), str(adapter_dir), is_trainable=False)
    model.eval()
    ids = encode(base_dir, prompt)
    with torch.no_grad():
        adapted = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
        with model.disable_adapter():
            plain = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
    kl = (adapted.exp() * (adapted - plain)).sum(-1).mean()
    return float(kl.item())
