"""data.streaming keeps memory flat as the data grows: peak RSS of the same training run on a file and on a
10x larger one.

Two jsonl files are made from the bundled summarization sample (``make_rows`` of bench/preprocess_cache.py:
distinct rows, the document's first sentence as summary): 10x ``--rows`` rows (default 5,000) and, as the small
file, every 10th of them (the same mix of lengths: only the size differs).
Each pair then runs, in fresh processes one after the other (``python -m accel_tasks.run``, the real CLI,
one torch thread, an empty datasets cache each): streaming from the small file, streaming from the large
file, map-style from the small file, map-style from the large file, all with the same ``--steps``
(default 100) of batch 16 on the bundled tiny model, then a 8-row eval. Measured per run: peak RSS of the
process (``wait4``'s ru_maxrss) and the training loop's time per step (``train_runtime_s / train_steps``
from metrics.json: reading, shuffling and tokenizing on the fly count for streaming; the up-front
preprocessing of map-style data does not, it happens before the loop).

    ACCEL_TASKS_NUM_THREADS=1 .venv/bin/python bench/streaming_memory.py
    .venv/bin/python bench/streaming_memory.py --rows 20000 --pairs 3 --steps 200

Last line: ``median streaming peak RSS large/small: X (goal <= 1.1); map-style large/small: Y; step time
streaming/map-style (large file): Z``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocess_cache import make_rows, write_jsonl  # noqa: E402  (a sibling bench script, not a package)

SAMPLE_VALIDATION = REPO / "accel_tasks" / "samples" / "summarization" / "validation.jsonl"


def one_run(train: Path, streaming: bool, steps: int, work: Path, name: str) -> dict:
    """One training run in a fresh process; its peak RSS (MiB) and seconds per training step."""
    out = work / name
    cache = work / f"{name}-cache"
    args = [
        sys.executable,
        "-m",
        "accel_tasks.run",
        "recipe=summarization",
        f"data.train_file={train}",
        f"data.validation_file={SAMPLE_VALIDATION}",
        "data.max_eval_samples=8",
        f"data.streaming={str(streaming).lower()}",
        f"train.max_steps={steps}",
        "train.batch_size=16",
        "train.log_every=1000",
        "train.eval_at_start=false",
        "train.eval_every=0",
        "train.save_every=0",
        "train.report_to=[none]",
        "generation.max_new_tokens=4",
        f"output_dir={out}",
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(cache),
        "TOKENIZERS_PARALLELISM": "false",
        "ACCEL_TASKS_NUM_THREADS": os.environ.get("ACCEL_TASKS_NUM_THREADS", "1"),
    }
    process = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} failed:\n{output[-4000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"rss_mib": usage.ru_maxrss / 1024, "step_s": metrics["train_runtime_s"] / metrics["train_steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000, help="rows of the small file; the large one has 10x")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of every run (batch 16)")
    parser.add_argument("--pairs", type=int, default=2, help="repeats of the four runs, alternating")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="streaming-bench-") as tmp:
        work = Path(tmp)
        rows = make_rows(opts.rows * 10)
        # Every 10th row of the large file: the same mix of lengths (make_rows' later rows are longer),
        # so only the size differs.
        small = write_jsonl(work / "small.jsonl", rows[::10])
        large = write_jsonl(work / "large.jsonl", rows)
        print(
            f"files: {small.name} {opts.rows} rows ({small.stat().st_size / 2**20:.1f} MiB), "
            f"{large.name} {len(rows)} rows ({large.stat().st_size / 2**20:.1f} MiB); "
            f"{opts.steps} steps of batch 16 each",
            flush=True,
        )
        ratios: dict[str, list[float]] = {"stream": [], "map": [], "time": []}
        for pair in range(1, opts.pairs + 1):
            runs = {}
            for name, train, streaming in (
                ("stream-small", small, True),
                ("stream-large", large, True),
                ("map-small", small, False),
                ("map-large", large, False),
            ):
                runs[name] = one_run(train, streaming, opts.steps, work, f"{name}-{pair}")
                print(
                    f"  pair {pair} {name}: peak RSS {runs[name]['rss_mib']:.0f} MiB, "
                    f"{1000 * runs[name]['step_s']:.1f} ms/step",
                    flush=True,
                )
            ratios["stream"].append(runs["stream-large"]["rss_mib"] / runs["stream-small"]["rss_mib"])
            ratios["map"].append(runs["map-large"]["rss_mib"] / runs["map-small"]["rss_mib"])
            ratios["time"].append(runs["stream-large"]["step_s"] / runs["map-large"]["step_s"])
            print(
                f"pair {pair}: streaming peak RSS large/small {ratios['stream'][-1]:.3f}; "
                f"map-style large/small {ratios['map'][-1]:.3f}; "
                f"step time streaming/map-style {ratios['time'][-1]:.3f}",
                flush=True,
            )
        print(
            f"median streaming peak RSS large/small: {statistics.median(ratios['stream']):.3f} (goal <= 1.1); "
            f"map-style large/small: {statistics.median(ratios['map']):.3f}; "
            f"step time streaming/map-style (large file): {statistics.median(ratios['time']):.3f}"
        )


if __name__ == "__main__":
    main()
