"""Preprocessing cache: a second identical run tokenizes nothing; its preprocessing time over the first one's.

A data set of ``--rows`` distinct rows (default 24,000) is made from the bundled 3,000-row summarization sample:
row i is sample row i mod 3,000 with its sentences rotated by k = i div 3,000 places and, from the second pass on,
the first sentence of another sample row appended (its summary is the document's first sentence, as in the
sample). Each repeat starts with an empty datasets cache (its own ``HF_DATASETS_CACHE``) and runs two fresh
processes one after the other, each doing what a run
does before training, through the same functions the loop calls: build the recipe and its tokenizer, read the
jsonl files (``recipe.load_data``) and make the features (``features.make_features``, batched ``map`` cached
under a fingerprint of data, recipe code, task options and tokenizer). Timed per process: reading the raw
data, and making the features (the preprocessing); counted: the rows that reached ``recipe.preprocess``.

    OMP_NUM_THREADS=1 ACCEL_TASKS_NUM_THREADS=1 .venv/bin/python bench/preprocess_cache.py
    .venv/bin/python bench/preprocess_cache.py --rows 50000 --repeats 3 --num-proc 2

Last line: ``median second/first preprocessing time: X (goal <= 0.1)``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "accel_tasks" / "samples" / "summarization"
MARKER = "BENCH_RESULT "
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def make_rows(count: int) -> list[dict]:
    """``count`` distinct rows from the 3,000-row sample: pass k = i div 3,000 over the sample rotates each document's
    sentences by k places and (k > 0) appends the first sentence of another sample row; the summary stays the
    document's first sentence, as in the sample."""
    base = [json.loads(line) for line in (SAMPLE / "train.jsonl").read_text().splitlines() if line.strip()]
    first = [[s for s in _SENTENCE_END.split(row["document"].strip()) if s][0] for row in base]
    rows = []
    for i in range(count):
        k, index = divmod(i, len(base))
        sentences = [s for s in _SENTENCE_END.split(base[index]["document"].strip()) if s]
        shift = k % len(sentences)
        sentences = sentences[shift:] + sentences[:shift] + ([first[(index + 7 * k) % len(base)]] if k else [])
        rows.append({"id": f"bench-{i:06d}", "document": " ".join(sentences), "summary": sentences[0]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_data(work: Path, count: int) -> tuple[list[dict], Path, Path]:
    """The benchmark's files in ``work``: ``count`` distinct train rows, and as validation every 10th of the
    first min(1000, count) rows."""
    rows = make_rows(count)
    train = write_jsonl(work / "train.jsonl", rows)
    validation = write_jsonl(work / "validation.jsonl", make_rows(min(1000, count))[::10])
    return rows, train, validation


def worker(train: str, validation: str, num_proc: int) -> dict:
    """One 'run' up to its features, timed; what the loop does before training, minus the model weights' use."""
    from accel_tasks import log
    from accel_tasks.config import run_splits
    from accel_tasks.data.raw import check_columns
    from accel_tasks.features.cache import make_features
    from accel_tasks.preflight import resolve_config

    overrides = ["recipe=summarization", f"data.train_file={train}", f"data.validation_file={validation}"]
    if num_proc > 1:
        overrides.append(f"data.preprocessing_num_workers={num_proc}")
    cfg, recipe_cls = resolve_config(overrides, None)
    recipe = recipe_cls(cfg)
    recipe.load_model()
    rows_tokenized = 0
    original = recipe.preprocess

    def counting(batch: dict, split: str) -> dict:
        nonlocal rows_tokenized
        rows_tokenized += len(next(iter(batch.values())))
        return original(batch, split)

    recipe.preprocess = counting
    logged: list[str] = []
    start = time.perf_counter()
    raw = recipe.load_data(run_splits(cfg))
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    sizes = {}
    for split in run_splits(cfg):
        check_columns(raw[split], recipe.required_columns(split, raw[split].column_names), split)
        raw[split] = recipe.prepare_raw(raw[split], split)
        printed = io.StringIO()  # the feature-cache line goes to the console (accel_tasks.log): kept from there
        with contextlib.redirect_stdout(printed):
            sizes[split] = len(make_features(recipe, raw[split], split, cfg.data))
        logged += [line.removeprefix(log.PREFIX) for line in printed.getvalue().splitlines()]
    features_s = time.perf_counter() - start
    return {
        "read_s": read_s,
        "features_s": features_s,
        "rows_tokenized": rows_tokenized if num_proc <= 1 else None,
        "log": logged,
        "features": sizes,
    }


def run_worker(train: Path, validation: Path, cache: Path, num_proc: int) -> dict:
    env = dict(
        os.environ,
        HF_DATASETS_CACHE=str(cache),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    command = [sys.executable, __file__, "--worker", str(train), str(validation), "--num-proc", str(num_proc)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"worker failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARKER) :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=24000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-proc", type=int, default=1, help="data.preprocessing_num_workers of both runs")
    parser.add_argument("--worker", nargs=2, metavar=("TRAIN", "VALIDATION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(MARKER + json.dumps(worker(*args.worker, args.num_proc)), flush=True)
        return 0
    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        work = Path(tmp)
        rows, train, validation = write_data(work, args.rows)
        print(
            f"data: {len(rows)} train rows ({len({r['document'] for r in rows})} distinct documents, "
            f"{train.stat().st_size / 1e6:.1f} MB), {sum(1 for _ in validation.open())} validation rows; "
            f"preprocessing_num_workers={args.num_proc if args.num_proc > 1 else None}"
        )
        for repeat in range(args.repeats):
            cache = work / f"cache-{repeat}"
            first = run_worker(train, validation, cache, args.num_proc)
            second = run_worker(train, validation, cache, args.num_proc)
            ratio = second["features_s"] / first["features_s"]
            ratios.append(ratio)
            print(
                f"repeat {repeat + 1}: features first {first['features_s']:.3f} s, "
                f"second {second['features_s']:.4f} s, second/first {ratio:.4f}; "
                f"reading the jsonl first {first['read_s']:.3f} s, second {second['read_s']:.3f} s; "
                f"rows tokenized first {first['rows_tokenized']}, second {second['rows_tokenized']}"
            )
            for which, result in (("first", first), ("second", second)):
                for line in result["log"]:
                    print(f"    {which} run log: {line}")
    print(f"median second/first preprocessing time: {statistics.median(ratios):.4f} (goal <= 0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
