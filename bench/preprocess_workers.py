"""Preprocessing with data.preprocessing_num_workers=2 against 1 worker, on the same data, fresh cache each time.

The data are bench/preprocess_cache.py's ``--rows`` distinct summarization rows (default 24,000, made from the bundled
3,000-row sample). Each repeat runs one fresh process per worker count, in alternating order (1 then 2, then 2 then
1, ...), each with an empty datasets cache (its own ``HF_DATASETS_CACHE``), doing what a run does before training
through the functions the loop calls (``recipe.load_data``, ``features.make_features``: batched ``map`` with
``num_proc``), timed: the preprocessing (features) of the train and validation splits. The log lines of the runs are
printed, so "preprocessed" (not "loaded from cache") shows every timed pass tokenized.

    ACCEL_TASKS_NUM_THREADS=1 .venv/bin/python bench/preprocess_workers.py
    .venv/bin/python bench/preprocess_workers.py --rows 48000 --repeats 4 --workers 2

Last line: ``median preprocessing time 2 workers / 1 worker: X``. On 2 cores shared with other jobs the second
worker only pays when a core is free; the pool start (forked workers, shard files) is part of the time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocess_cache import run_worker, write_data  # noqa: E402  (the same data and worker as the cache bench)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=24000)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument(
        "--workers", type=int, default=2, help="data.preprocessing_num_workers of the B side (A: 1 worker)"
    )
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        work = Path(tmp)
        rows, train, validation = write_data(work, args.rows)
        print(
            f"data: {len(rows)} train rows ({train.stat().st_size / 1e6:.1f} MB), "
            f"{sum(1 for _ in validation.open())} validation rows; "
            f"1 worker against data.preprocessing_num_workers={args.workers}"
        )
        for repeat in range(args.repeats):
            order = (1, args.workers) if repeat % 2 == 0 else (args.workers, 1)
            result = {}
            for workers in order:
                result[workers] = run_worker(train, validation, work / f"cache-{repeat}-{workers}", workers)
                for line in result[workers]["log"]:
                    print(f"    {workers} worker(s): {line}")
                if any("loaded from cache" in line for line in result[workers]["log"]):
                    raise RuntimeError("a timed pass loaded its features from the cache: the caches are not fresh")
            one, many = result[1]["features_s"], result[args.workers]["features_s"]
            ratios.append(many / one)
            print(
                f"repeat {repeat + 1} (order {order[0]}, {order[1]}): 1 worker {one:.2f} s, "
                f"{args.workers} workers {many:.2f} s, "
                f"{args.workers}/1 {many / one:.3f}"
            )
    print(f"median preprocessing time {args.workers} workers / 1 worker: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
