"""Eval generation throughput: length-grouped batches versus plain in-order batches of the same size.

Both passes run the loop's own eval path (``accel_tasks.evaluation.eval_pass.run_eval``) on the same model, data and
batch size, once with ``eval.group_by_length=true`` and once with ``false``; greedy predictions must be
identical (exit 1 otherwise). Prints the best time of each and the ratio (target >= 1.3x on varied lengths).

    OMP_NUM_THREADS=1 python bench/eval_generation.py [--model DIR] [--examples 400] [--batch-size 32]

Data: sentences of the bundled English->German sample joined 1-6 at a time (3-48 words), so lengths vary
as in real test sets. Without ``--model`` the bundled tiny Marian is first trained for ``--train-steps`` on
train sentences joined 1-6 at a time: a trained model's output lengths follow its input lengths, as real
models' do, whereas a random model generates max_new_tokens tokens for every input.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "accel_tasks" / "samples" / "translation"
MAX_LENGTH = 96  # tokens; 6 joined sentences of <= 8 words fit


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def joined_rows(rows: list[dict], count: int, max_join: int, seed: int, prefix: str) -> list[dict]:
    """``count`` rows, each 1..max_join random sample sentences joined (source and target alike)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        parts = rng.sample(rows, rng.randint(1, max_join))
        out.append(
            {
                "id": f"{prefix}-{i:05d}",
                "translation": {lang: " ".join(p["translation"][lang] for p in parts) for lang in ("en", "de")},
            }
        )
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def train_model(sample: Path, work: Path, steps: int, threads: int) -> Path:
    """Train the sample's tiny model through the CLI on joined sentences; returns the exported model folder."""
    train = write_jsonl(work / "train.jsonl", joined_rows(read_jsonl(sample / "train.jsonl"), 8000, 6, 1, "train"))
    validation = write_jsonl(
        work / "val-small.jsonl", joined_rows(read_jsonl(sample / "validation.jsonl"), 50, 4, 2, "val")
    )
    out = work / "run"
    command = [
        sys.executable,
        "-m",
        "accel_tasks.run",
        "recipe=translation",
        f"output_dir={out}",
        f"model.name_or_path={sample / 'model'}",
        f"data.train_file={train}",
        f"data.validation_file={validation}",
        "task.source_lang=en",
        "task.target_lang=de",
        f"train.max_steps={steps}",
        "train.lr=2e-3",
        "train.warmup_steps=50",
        "train.batch_size=16",
        f"train.threads={threads}",
        "train.log_every=100",
        f"task.max_source_length={MAX_LENGTH}",
        f"task.max_target_length={MAX_LENGTH}",
        "generation.num_beams=1",
        f"generation.max_new_tokens={MAX_LENGTH}",
        "eval.metrics=[sacrebleu]",
    ]
    print(f"training the bundled tiny model for {steps} steps ...", flush=True)
    subprocess.run(command, cwd=REPO, check=True)
    return out / "model"


def eval_setup(
    model: Path, data: Path, batch_size: int, threads: int, work: Path
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """The same objects the loop builds for an eval-only run."""
    from accel_tasks.data.raw import check_columns
    from accel_tasks.engines.accelerator import build_accelerator, configure_threads
    from accel_tasks.features.cache import make_features
    from accel_tasks.preflight import resolve_config

    cfg, recipe_cls = resolve_config(
        [
            "recipe=translation",
            "mode=eval",
            f"model.name_or_path={model}",
            f"data.validation_file={data}",
            f"eval.batch_size={batch_size}",
            "generation.num_beams=1",
            f"generation.max_new_tokens={MAX_LENGTH}",
            f"task.max_source_length={MAX_LENGTH}",
            f"task.max_target_length={MAX_LENGTH}",
            "task.source_lang=en",
            "task.target_lang=de",
            f"train.threads={threads}",
        ],
        None,
    )
    configure_threads(cfg.train.threads)
    accelerator = build_accelerator(cfg, work / "eval")
    recipe = recipe_cls(cfg)
    recipe.validate_options()
    model_obj, _ = recipe.load_model()
    raw = recipe.load_data(("validation",))["validation"]
    check_columns(raw, recipe.required_columns("validation", raw.column_names), "validation")
    raw = recipe.prepare_raw(raw, "validation")
    features = make_features(recipe, raw, "validation", cfg.data)
    return cfg, accelerator, recipe, accelerator.prepare(model_obj), raw, features


def timed_eval(setup: tuple, grouped: bool) -> tuple[float, list[str]]:
    from accel_tasks.evaluation.eval_pass import run_eval

    cfg, accelerator, recipe, model, raw, features = setup
    cfg.eval.group_by_length = grouped
    start = time.perf_counter()
    _, result = run_eval(accelerator, recipe, model, raw, features, {}, cfg)
    return time.perf_counter() - start, result.predictions


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, help="a trained translation model folder (default: train the bundled one)"
    )
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="folder with {train,validation}.jsonl and model/")
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model or train_model(args.sample, work, args.train_steps, args.threads)
        data = write_jsonl(
            work / "eval.jsonl",
            joined_rows(read_jsonl(args.sample / "validation.jsonl"), args.examples, 6, args.seed, "eval"),
        )
        setup = eval_setup(model, data, args.batch_size, args.threads, work)
        features = setup[-1]
        lengths = [len(ids) for ids in features["input_ids"]]
        print(
            f"{len(features)} examples, source tokens {min(lengths)}-{max(lengths)} "
            f"(mean {statistics.mean(lengths):.1f}), "
            f"batch {args.batch_size}, greedy, {torch.get_num_threads()} thread(s)",
            flush=True,
        )
        times: dict[bool, list[float]] = {False: [], True: []}
        predictions: dict[bool, list[str]] = {}
        for _ in range(args.repeats):
            for grouped in (False, True):
                seconds, predictions[grouped] = timed_eval(setup, grouped)
                times[grouped].append(seconds)
    plain, grouped = min(times[False]), min(times[True])
    generated = [len(p.split()) for p in predictions[True]]
    print(
        f"in-order batches:       {plain:8.2f} s  ({len(lengths) / plain:6.1f} examples/s)  runs: {_fmt(times[False])}"
    )
    print(
        f"length-grouped batches: {grouped:8.2f} s  ({len(lengths) / grouped:6.1f} examples/s)  "
        f"runs: {_fmt(times[True])}"
    )
    print(
        f"speed-up: {plain / grouped:.2f}x  (predicted words {min(generated)}-{max(generated)}, "
        f"mean {statistics.mean(generated):.1f})"
    )
    differing = [i for i, (a, b) in enumerate(zip(predictions[False], predictions[True])) if a != b]
    if differing:
        i = differing[0]
        print(
            f"predictions differ in {len(differing)} of {len(lengths)} examples; first, #{i}:\n"
            f"  in-order: {predictions[False][i]}\n"
            f"  grouped:  {predictions[True][i]}"
        )
        return 1
    print(f"predictions identical: {len(lengths)} of {len(lengths)}")
    return 0


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    raise SystemExit(main())
