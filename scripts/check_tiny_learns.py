"""Check that the bundled tiny models learn the bundled sample tasks on a CPU in ~90 s.

A plain PyTorch loop (no accelerate), so a failure here points at the data or the model
assets rather than at the toolkit. For each recipe it builds MarianMT from the bundled
config (random init), scores greedy generations on the validation split, trains on the
train split for a fixed wall-clock budget, and scores again:
ROUGE-L (rouge_score) for summarization, BLEU (sacrebleu.corpus_bleu) for translation.

Usage::

    OMP_NUM_THREADS=2 python scripts/check_tiny_learns.py --recipe both --seconds 90
    # on a shared machine, compare by steps with one thread (wall time is meaningless there):
    OMP_NUM_THREADS=1 python scripts/check_tiny_learns.py --recipe translation --steps 1200

With ``--decoder-only`` it checks the ``model_decoder_only/`` assets instead: a tiny Llama
(``AutoModelForCausalLM.from_config``) trained on chat-formatted examples. The prompt is the
tokenizer's chat template applied to one user message (``Summarize this document:\\n{document}
\\nSummary:``; translation ``Translate this English text to German:\\n{en}\\nGerman:``) with
``add_generation_prompt=True``; the completion is the target followed by ``<|im_end|>``. Only the
completion carries labels (the prompt is -100); training rows are padded on the right, generation
rows on the left (the tokenizer's ``padding_side``), and the new tokens are decoded::

    OMP_NUM_THREADS=1 python scripts/check_tiny_learns.py --decoder-only --recipe summarization --steps 1500

Exit status 1 if a metric rose by less than ``--min-gain`` points.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

SAMPLES = Path(__file__).resolve().parents[1] / "accel_tasks" / "samples"
MAX_SOURCE, MAX_TARGET = 128, 64


@dataclass
class Task:
    """Where a recipe's sample lives and how to read and score it."""

    name: str
    source: Callable[[dict], str]
    target: Callable[[dict], str]
    score: Callable[[list[str], list[str]], float]
    metric: str
    instruction: str  # the user message of the decoder-only check; {} is the source


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure x 100 (the usual summarization report)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]
    return 100.0 * sum(scores) / max(len(scores), 1)


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU with sacrebleu defaults (13a tokenization, case-sensitive)."""
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references]).score


TASKS = {
    "summarization": Task(
        "summarization",
        lambda r: r["document"],
        lambda r: r["summary"],
        rouge_l,
        "ROUGE-L",
        "Summarize this document:\n{}\nSummary:",
    ),
    "translation": Task(
        "translation",
        lambda r: r["translation"]["en"],
        lambda r: r["translation"]["de"],
        bleu,
        "BLEU",
        "Translate this English text to German:\n{}\nGerman:",
    ),
}


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def encode(tokenizer, task: Task, records: Sequence[dict]) -> list[tuple[list[int], list[int]]]:
    """(source ids, target ids) per record, truncated like the recipes do."""
    src = tokenizer([task.source(r) for r in records], max_length=MAX_SOURCE, truncation=True)
    tgt = tokenizer(text_target=[task.target(r) for r in records], max_length=MAX_TARGET, truncation=True)
    return list(zip(src["input_ids"], tgt["input_ids"]))


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad sources with pad and labels with -100 (ignored by the loss)."""
    s_len = max(len(s) for s, _ in pairs)
    t_len = max(len(t) for _, t in pairs)
    input_ids = torch.full((len(pairs), s_len), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), t_len), -100, dtype=torch.long)
    for i, (s, t) in enumerate(pairs):
        input_ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(t)] = torch.tensor(t)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(), "labels": labels}


@torch.no_grad()
def evaluate(model, tokenizer, task: Task, records: Sequence[dict], batch_size: int = 50) -> tuple[float, list[str]]:
    """Greedy generation on ``records``; returns (score, predictions)."""
    model.eval()
    predictions: list[str] = []
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        enc = tokenizer(
            [task.source(r) for r in chunk],
            max_length=MAX_SOURCE,
            truncation=True,
            padding=True,
            return_tensors="pt",
        )
        out = model.generate(**enc, max_new_tokens=MAX_TARGET, num_beams=1, do_sample=False)
        predictions.extend(tokenizer.batch_decode(out, skip_special_tokens=True))
    model.train()
    references = [task.target(r) for r in records]
    return task.score(predictions, references), predictions


def chat_prompts(tokenizer, task: Task, records: Sequence[dict]) -> list[str]:
    """The chat template applied to the user message alone, ending with the assistant turn's header."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": task.instruction.format(task.source(r))}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for r in records
    ]


def encode_decoder_only(tokenizer, task: Task, records: Sequence[dict]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per record: prompt + completion, labels -100 on the prompt.

    The completion is the target and ``<|im_end|>`` (the eos token), cut to ``MAX_TARGET`` tokens.
    The documents fit the context whole, so the prompt is not cut.
    """
    prompts = tokenizer(chat_prompts(tokenizer, task, records), add_special_tokens=False)["input_ids"]
    targets = tokenizer([task.target(r) for r in records], add_special_tokens=False)["input_ids"]
    out = []
    for prompt, target in zip(prompts, targets):
        completion = target[: MAX_TARGET - 1] + [tokenizer.eos_token_id]
        out.append((prompt + completion, [-100] * len(prompt) + completion))
    return out


def collate_decoder_only(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad training rows: pad ids, attention mask 0, labels -100."""
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        labels[i, : len(lab)] = torch.tensor(lab)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@torch.no_grad()
def evaluate_decoder_only(
    model, tokenizer, generation_config, task: Task, records: Sequence[dict], batch_size: int = 50
) -> tuple[float, list[str]]:
    """Greedy generation from left-padded chat prompts; the new tokens are the prediction."""
    model.eval()
    predictions: list[str] = []
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        enc = tokenizer(
            chat_prompts(tokenizer, task, chunk), add_special_tokens=False, padding=True, return_tensors="pt"
        )
        out = model.generate(**enc, generation_config=generation_config)  # the bundled max_new_tokens
        predictions.extend(tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    model.train()
    references = [task.target(r) for r in records]
    return task.score(predictions, references), predictions


def train_for(
    model,
    batches: Callable[[], list[dict]],
    seconds: float,
    lr: float,
    warmup: int,
    max_steps: int | None = None,
    log_every: int = 100,
) -> dict:
    """AdamW with linear warm-up, then linear decay over the wall-clock (or step) budget."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    step, epoch, losses, tokens = 0, 0, [], 0
    while True:
        for batch in batches():
            elapsed = time.perf_counter() - start
            progress = step / max_steps if max_steps else elapsed / seconds
            if progress >= 1.0:
                # CPU seconds tell what the wall time would be on an otherwise idle machine.
                cpu = time.process_time() - cpu_start
                return {
                    "steps": step,
                    "epochs": epoch,
                    "seconds": round(elapsed, 1),
                    "cpu_seconds": round(cpu, 1),
                    "final_loss": round(sum(losses[-50:]) / max(len(losses[-50:]), 1), 4),
                    # tokens the model reads (padding excluded; a seq2seq row counts source + target)
                    "train_tokens": tokens,
                    "tokens_per_second": round(tokens / max(elapsed, 1e-9)),
                    "tokens_per_cpu_second": round(tokens / max(cpu, 1e-9)),
                }
            scale = min(1.0, (step + 1) / warmup) * max(0.05, 1.0 - progress)
            for group in opt.param_groups:
                group["lr"] = lr * scale
            tokens += int(batch["attention_mask"].sum())
            if model.config.is_encoder_decoder:
                tokens += int((batch["labels"] != -100).sum())
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if log_every and step % log_every == 0:
                recent = losses[-log_every:]
                print(
                    f"  step {step} loss {sum(recent) / len(recent):.3f} ({time.perf_counter() - start:.0f}s)",
                    file=sys.stderr,
                    flush=True,
                )
        epoch += 1


def check(
    task: Task,
    samples: Path,
    seconds: float,
    batch_size: int,
    lr: float,
    seed: int,
    max_steps: int | None = None,
    overrides: dict | None = None,
    decoder_only: bool = False,
    warmup: int | None = None,
) -> dict:
    """Build the model from the bundled config, score, train, score again."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model_dir = samples / task.name / ("model_decoder_only" if decoder_only else "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir, **(overrides or {}))
    train = read_jsonl(samples / task.name / "train.jsonl")
    validation = read_jsonl(samples / task.name / "validation.jsonl")
    if decoder_only:
        model = AutoModelForCausalLM.from_config(config)
        generation_config = GenerationConfig.from_pretrained(model_dir)
        pairs = encode_decoder_only(tokenizer, task, train)
        collate_rows = collate_decoder_only

        def score() -> tuple[float, list[str]]:
            return evaluate_decoder_only(model, tokenizer, generation_config, task, validation)

    else:
        model = AutoModelForSeq2SeqLM.from_config(config)
        pairs = encode(tokenizer, task, train)
        collate_rows = collate

        def score() -> tuple[float, list[str]]:
            return evaluate(model, tokenizer, task, validation)

    def batches() -> list[dict]:
        order = list(range(len(pairs)))
        rng.shuffle(order)
        return [
            collate_rows([pairs[j] for j in order[i : i + batch_size]], tokenizer.pad_token_id)
            for i in range(0, len(order), batch_size)
        ]

    before, _ = score()
    if warmup is None:
        warmup = min(100, max(10, len(pairs) // batch_size))
    stats = train_for(model, batches, seconds, lr, warmup, max_steps=max_steps)
    after, predictions = score()
    lengths = {}
    if decoder_only:
        prompt_lengths = [sum(1 for x in labels if x == -100) for _, labels in pairs]
        lengths = {
            "longest_prompt_tokens": max(prompt_lengths),
            "longest_completion_tokens": max(len(ids) - n for (ids, _), n in zip(pairs, prompt_lengths)),
        }
    return {
        "recipe": task.name,
        "model": model_dir.name,
        "metric": task.metric,
        "before": round(before, 2),
        "after": round(after, 2),
        "train_examples": len(train),
        "validation_examples": len(validation),
        "parameters": sum(p.numel() for p in model.parameters()),
        "lr": lr,
        "warmup": warmup,
        **lengths,
        **stats,
        "example": {"reference": task.target(validation[0]), "prediction": predictions[0]},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=[*TASKS, "both"], default="both")
    parser.add_argument("--samples", type=Path, default=SAMPLES)
    parser.add_argument("--seconds", type=float, default=90.0, help="training wall time per recipe")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default 2e-3; 1e-3 with --decoder-only, where 2e-3 left translation at BLEU 18-30)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "2")),
        help="torch threads; use 1 when other jobs share the cores",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps", type=int, default=None, help="train this many steps instead of --seconds (for comparisons)"
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="change a config value for an experiment, e.g. dropout=0.0",
    )
    parser.add_argument(
        "--decoder-only",
        action="store_true",
        help="check model_decoder_only/ (a tiny Llama on chat-formatted examples) instead of model/",
    )
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: min(100, one epoch))")
    parser.add_argument(
        "--min-gain", type=float, default=20.0, help="exit 1 unless the metric rises by at least this much"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lr = args.lr if args.lr is not None else (1e-3 if args.decoder_only else 2e-3)
    overrides = {}
    for item in args.override:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--override {item!r} needs KEY=VALUE, e.g. dropout=0.0")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"--override {item!r}: the value must be JSON, e.g. 0.0 or true") from err
    names = list(TASKS) if args.recipe == "both" else [args.recipe]
    ok = True
    for name in names:
        result = check(
            TASKS[name],
            args.samples,
            args.seconds,
            args.batch_size,
            lr,
            args.seed,
            max_steps=args.steps,
            overrides=overrides,
            decoder_only=args.decoder_only,
            warmup=args.warmup,
        )
        print(json.dumps(result, ensure_ascii=False), flush=True)
        ok &= (result["after"] - result["before"]) >= args.min_gain and not math.isnan(result["after"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
