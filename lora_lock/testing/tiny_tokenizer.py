"""The tiny BPE tokenizer every tiny model shares: its special tokens, chat template and training corpus, and the
helpers that train, copy, inspect and apply it (``tokenizers`` and ``transformers`` are imported inside the
functions, so importing this module stays cheap)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
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


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


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


def encode(base_dir: str | Path, text: str) -> Any:
    """Token ids of ``text`` (with BOS) as a ``[1, n]`` tensor, using the tokenizer saved in ``base_dir``."""
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(base_dir) / "tokenizer.json"))
    return torch.tensor([tok.encode(text).ids], dtype=torch.long)
