"""Regenerate the plugin's bundled sample: sentences with a sentiment, a word-level tokenizer, a tiny BERT config.

Deterministic (seeded); the word lists are self-written.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "accel_tasks_textcls" / "sample"
SUBJECTS = [
    "the film",
    "this book",
    "the meal",
    "our trip",
    "the concert",
    "that show",
    "the hotel",
    "my new phone",
    "the game",
    "the lecture",
]
POSITIVE = [
    "wonderful",
    "great",
    "excellent",
    "delightful",
    "superb",
    "lovely",
    "brilliant",
    "pleasant",
    "fantastic",
    "charming",
]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "poor", "horrible", "dull", "disappointing", "bad", "annoying"]
FILLERS = ["really", "quite", "truly", "rather", "very", "honestly", "simply", "frankly"]
ENDINGS = ["", " and I told my friends", " from start to finish", " in every way", " as expected", " this time"]


def sentence(rng: random.Random) -> dict:
    label = rng.choice(["positive", "negative"])
    word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
    text = f"{rng.choice(SUBJECTS)} was {rng.choice(FILLERS)} {word}{rng.choice(ENDINGS)}".capitalize() + "."
    return {"text": text, "label": label}


def main() -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, PreTrainedTokenizerFast

    rng = random.Random(13)
    rows = [sentence(rng) for _ in range(700)]
    SAMPLE.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", rows[:600]), ("validation", rows[600:])):
        with (SAMPLE / f"{split}.jsonl").open("w") as handle:
            for row in part:
                handle.write(json.dumps(row) + "\n")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator([r["text"] for r in rows], trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    fast.save_pretrained(SAMPLE / "model")
    BertConfig(
        vocab_size=len(fast),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        pad_token_id=0,
    ).save_pretrained(SAMPLE / "model")


if __name__ == "__main__":
    main()
