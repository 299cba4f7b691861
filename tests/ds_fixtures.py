"""Tiny seq2seq world for the DeepSpeed / multi-process tests: data, a word-level tokenizer, a BART with weights.

Everything is built offline in a few hundred milliseconds. The model is saved WITH weights (and without
dropout) so every run, DeepSpeed or not, ZeRO-3 ``zero.Init`` or not, starts from the same numbers and the
loss trajectories can be compared step by step.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "my aunt", "the pilot", "our team", "the baker", "a child", "the mayor"]
VERBS = ["sees", "likes", "paints", "finds", "moves", "sells", "keeps", "wants"]
OBJECTS = ["a red box", "the old map", "two green apples", "the blue boat", "a small house", "the long road"]
PLACES = ["in the park", "at home", "near the river", "on monday", "after lunch", "by the sea"]

# Eval examples whose source is longer than this get a short forced generation, the others a long one (see
# FORCED_RECIPE): with group_by_length the 4 long examples fill the first batch (rank 0) and short ones the
# second (rank 1), so under 2 processes the ranks generate different numbers of tokens in the same step.
LONG_SOURCE_TOKENS = 28
SHORT_FORCED_TOKENS = 3
LONG_FORCED_TOKENS = 12
FILLER_WORDS = 4000


# The run settings of a short run on this world (4 steps, a checkpoint at 2): the multi-node and FSDP2 tests share them.
STEPS = 4
WORLD_ARGS = [
    "train.batch_size=2",
    f"train.max_steps={STEPS}",
    "train.log_every=1",
    "train.lr=3e-3",
    "train.warmup_steps=1",
    "train.save_every=2",
    "eval.batch_size=4",
    "task.max_target_length=16",
]


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)} ."


def make_examples(count: int, seed: int, sentences: tuple[int, int]) -> list[dict]:
    """Documents of a few sentences; the summary is the first sentence."""
    rng = random.Random(seed)
    examples = []
    for index in range(count):
        parts = [sentence(rng) for _ in range(rng.randint(*sentences))]
        examples.append({"id": f"{seed}-{index}", "text": " ".join(parts), "summary": parts[0]})
    return examples


def eval_examples() -> list[dict]:
    """11 examples (not a multiple of 2 processes x batch 4): 4 long documents and 7 short ones, interleaved."""
    long_docs = make_examples(4, seed=7, sentences=(5, 6))
    short_docs = make_examples(7, seed=8, sentences=(1, 2))
    mixed = []
    for index in range(11):
        source = long_docs if index % 3 == 0 and long_docs else short_docs
        mixed.append(source.pop(0) if source else (long_docs or short_docs).pop(0))
    return mixed


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def build_tokenizer(texts: list[str], out_dir: Path):
    """Word-level tokenizer with </s> appended: loadable with AutoTokenizer, no sentencepiece needed."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out_dir)
    return fast


def build_model_dir(out_dir: Path, texts: list[str], d_model: int = 32, seed: int = 0) -> Path:
    """A 1+1-layer BART (random weights, saved) and its tokenizer.

    BART rather than Marian: Marian's sinusoidal position table is trainable after a plain
    ``from_pretrained`` but frozen when built under ZeRO-3 ``zero.Init`` (transformers 5.24), so the two
    runs would train different parameter sets and their losses could not be compared exactly.
    """
    import torch
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(texts, out_dir)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=d_model,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    torch.manual_seed(seed)
    model = BartForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        num_beams=1,
        do_sample=False,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


FORCED_RECIPE = f'''"""Summarization whose generation length is forced per example, so ranks finish \
generating at different steps.

Each example ends after {SHORT_FORCED_TOKENS} tokens if its source is long, {LONG_FORCED_TOKENS} if short: a \
logits processor
bans EOS before that length and forces it there. The length of an example never depends on the batch it
lands in (a padded duplicate batch mixes long and short examples), so 1- and 2-process runs agree.
"""
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from accel_tasks.recipes.summarization import SummarizationRecipe


class ForcedLength(LogitsProcessor):
    def __init__(self, lengths, eos_token_id):
        self.lengths = lengths
        self.eos = eos_token_id

    def __call__(self, input_ids, scores):
        generated = input_ids.shape[1] - 1  # the decoder start token is not generated
        scores = scores.clone()
        done = generated >= self.lengths
        scores[~done, self.eos] = float("-inf")
        forced = torch.full_like(scores[0], float("-inf"))
        forced[self.eos] = 0.0
        scores[done] = forced
        return scores


class ForcedLengthSummarization(SummarizationRecipe):
    name = "forced_length_summarization"

    def predict(self, model, batch, *, synced_gpus=False):
        source_lengths = batch["attention_mask"].sum(dim=1)
        lengths = torch.where(source_lengths > {LONG_SOURCE_TOKENS}, {SHORT_FORCED_TOKENS}, {LONG_FORCED_TOKENS})
        processors = LogitsProcessorList([ForcedLength(lengths, self.processor.eos_token_id)])
        kwargs = dict(self.generation_kwargs(), max_new_tokens={LONG_FORCED_TOKENS} + 1)
        generated = model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            synced_gpus=synced_gpus,
            logits_processor=processors,
            **kwargs,
        )
        return {{"generated_tokens": generated}}
'''


def build_world(root: Path) -> dict[str, Path]:
    """Train/eval files, the model directory and the forced-length recipe file under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    train = make_examples(40, seed=1, sentences=(2, 4))
    evals = eval_examples()
    # Filler words that never occur: they make the (tied) embedding 4,000 x 32 = 128,000 elements, above
    # DeepSpeed's default stage3_param_persistence_threshold (100,000), so ZeRO-3 really partitions it and
    # every forward pass needs an all-gather (smaller parameters stay whole on every rank).
    texts = [row["text"] for row in train + evals] + [" ".join(f"filler{i}" for i in range(FILLER_WORDS))]
    paths = {
        "train": write_jsonl(root / "train.jsonl", train),
        "validation": write_jsonl(root / "validation.jsonl", evals),
        "model": build_model_dir(root / "tiny_bart", texts),
        "recipe": root / "forced_recipe.py",
    }
    paths["recipe"].write_text(FORCED_RECIPE)
    return paths
