"""QA postprocessing: vectorised `postprocess_qa_predictions` versus a per-feature Python loop.

The loop is the algorithm of the HF question-answering example (n-best start x n-best end per feature,
skip invalid spans, keep the best per example; v2 null score = min CLS score), with the same candidate
rule as the vectorised code (the n-best are taken among context tokens), written as a competent engineer
would: one numpy argsort per logits matrix, the n-best context positions read with early exit (no
conversion of whole rows to lists), each start stopping at its first valid end and a feature stopping
once no start can win. `--naive` adds the earlier baseline (every argsort row as a list, filtered whole,
all k x k pairs tried) for reference.

Fairness: all sides get the same inputs (one seed); every side is timed the same number of calls per
round (best of --repeats); the running order is reversed every round; outputs are asserted equal to the
loop's on every call; per-round ratios and their median are printed. The vectorised side is timed with
the features as Python lists (as the loop gets them) and as a `datasets.Dataset` (as the recipe passes them).

HF's own `postprocess_qa_predictions` (examples/pytorch/question-answering/utils_qa.py) is not in the
transformers wheel, so it is not timed here.

    OMP_NUM_THREADS=1 python bench/qa_postprocess.py [--features 10000] [--seq-len 384] [--n-best 20]
        [--pairs 4] [--repeats 3] [--naive]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict
from functools import partial
from typing import Any

import numpy as np

from accel_tasks.recipes.qa import SpanRules, postprocess_qa_predictions

QUESTION_TOKENS = 16
PAD_VALUE = -1e4


def make_inputs(n_features: int, seq_len: int, seed: int) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """Examples with 1-3 overlapping windows each; random logits padded with -1e4 past each window."""
    rng = np.random.default_rng(seed)
    room = seq_len - QUESTION_TOKENS - 3
    ids, contexts, feature_ids, offsets = [], [], [], []
    while len(feature_ids) < n_features:
        n_windows = int(rng.integers(1, 4))
        n_tokens = room + (n_windows - 1) * (room // 2) - int(rng.integers(0, room // 2))
        qid = f"q{len(ids)}"
        ids.append(qid)
        contexts.append("".join(f"w{t:04d} " for t in range(n_tokens)))  # token t = chars [6t, 6t+5)
        first = 0
        while first < n_tokens and len(feature_ids) < n_features:
            last = min(first + room, n_tokens)
            feature_ids.append(qid)
            offsets.append([None] * (QUESTION_TOKENS + 2) + [[6 * t, 6 * t + 5] for t in range(first, last)] + [None])
            if last == n_tokens:
                break
            first += room // 2
    width = max(len(o) for o in offsets)
    start = rng.normal(size=(len(offsets), width)).astype(np.float32)
    end = rng.normal(size=(len(offsets), width)).astype(np.float32)
    for row, o in enumerate(offsets):
        start[row, len(o) :] = PAD_VALUE
        end[row, len(o) :] = PAD_VALUE
    return ({"id": ids, "context": contexts}, {"example_id": feature_ids, "offset_mapping": offsets}, start, end)


def top_context_positions(descending: np.ndarray, offsets: list, k: int) -> list[int]:
    """The first k context positions (offset not None, inside the feature) of a best-first position order.

    Reads the order in chunks of 2k as Python ints and stops at the k-th context token, so usually only
    the first chunk of the row is ever converted.
    """
    n = len(offsets)
    chosen: list[int] = []
    chunk = 2 * k
    for first in range(0, len(descending), chunk):
        for j in descending[first : first + chunk].tolist():
            if j < n and offsets[j] is not None:
                chosen.append(j)
                if len(chosen) == k:
                    return chosen
    return chosen


def loop_postprocess(
    examples: dict,
    features: dict,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int,
    max_answer_length: int,
    version_2_with_negative: bool,
    null_score_diff_threshold: float = 0.0,
) -> dict[str, tuple[str, float]]:
    """Baseline: a per-feature Python loop over n-best starts x n-best ends, written to be quick.

    One argsort per logits matrix (numpy, rows best-first), then per feature: the n-best context starts
    and ends read with early exit; starts in descending score order, each start stops at its first valid
    end (ends are in descending order, so that one is its best), and a start stops the feature once even
    the best end cannot beat the example's best span. Same candidate rule and result as the HF algorithm
    (every valid pair among the n-best, best sum kept, first one on ties).
    """
    per_example = defaultdict(list)
    for index, example_id in enumerate(features["example_id"]):
        per_example[example_id].append(index)
    all_offsets = features["offset_mapping"]
    start_order = np.argsort(start_logits, axis=1)[:, ::-1]
    end_order = np.argsort(end_logits, axis=1)[:, ::-1]
    result = {}
    for example_id, context in zip(examples["id"], examples["context"]):
        best_score, best_span = -math.inf, None
        null_score = math.inf
        for index in per_example[example_id]:
            offsets = all_offsets[index]
            starts_logit, ends_logit = start_logits[index], end_logits[index]
            if version_2_with_negative:
                null_score = min(null_score, float(starts_logit[0]) + float(ends_logit[0]))
            starts = top_context_positions(start_order[index], offsets, n_best_size)
            ends = top_context_positions(end_order[index], offsets, n_best_size)
            if not ends:
                continue
            end_scores = [float(ends_logit[e]) for e in ends]
            for s in starts:
                start_score = float(starts_logit[s])
                if start_score + end_scores[0] <= best_score:
                    break  # later starts score lower still
                for e, end_score in zip(ends, end_scores):
                    if s <= e < s + max_answer_length:
                        if start_score + end_score > best_score:
                            best_score, best_span = start_score + end_score, (offsets[s][0], offsets[e][1])
                        break
        if best_span is None:
            result[example_id] = ("", float("nan"))
        elif version_2_with_negative and null_score - best_score > null_score_diff_threshold:
            result[example_id] = ("", null_score)
        else:
            result[example_id] = (context[best_span[0] : best_span[1]], best_score)
    return result


def naive_loop_postprocess(
    examples: dict,
    features: dict,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int,
    max_answer_length: int,
    version_2_with_negative: bool,
    null_score_diff_threshold: float = 0.0,
) -> dict[str, tuple[str, float]]:
    """The earlier baseline (--naive only): every row's argsort as a list, filtered whole, all k x k pairs tried."""
    per_example = defaultdict(list)
    for index, example_id in enumerate(features["example_id"]):
        per_example[example_id].append(index)
    all_offsets = features["offset_mapping"]
    result = {}
    for example_id, context in zip(examples["id"], examples["context"]):
        best: tuple[float, int, int] | None = None
        null_score = None
        for index in per_example[example_id]:
            offsets = all_offsets[index]
            starts_logit, ends_logit = start_logits[index], end_logits[index]
            feature_null = float(starts_logit[0]) + float(ends_logit[0])
            null_score = feature_null if null_score is None else min(null_score, feature_null)
            start_indexes = [
                j for j in np.argsort(starts_logit)[::-1].tolist() if j < len(offsets) and offsets[j] is not None
            ][:n_best_size]
            end_indexes = [
                j for j in np.argsort(ends_logit)[::-1].tolist() if j < len(offsets) and offsets[j] is not None
            ][:n_best_size]
            for s in start_indexes:
                for e in end_indexes:
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    score = float(starts_logit[s]) + float(ends_logit[e])
                    if best is None or score > best[0]:
                        best = (score, offsets[s][0], offsets[e][1])
        if best is None:
            result[example_id] = ("", float("nan"))
        elif version_2_with_negative and null_score - best[0] > null_score_diff_threshold:
            result[example_id] = ("", null_score)
        else:
            result[example_id] = (context[best[1] : best[2]], best[0])
    return result


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    """Best of `repeats` calls (the same count for every side), and the last output."""
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def check_same(label: str, predictions: Any, expected: dict[str, tuple[str, float]]) -> None:
    if isinstance(predictions, dict):  # another loop
        assert list(predictions) == list(expected), label
        for qid, (text, score) in expected.items():
            got_text, got_score = predictions[qid]
            assert got_text == text and (got_score == score or (math.isnan(got_score) and math.isnan(score))), (
                label,
                qid,
            )
        return
    assert predictions.ids == list(expected), label
    assert predictions.texts == [expected[i][0] for i in predictions.ids], label
    np.testing.assert_array_equal(
        predictions.scores, np.array([expected[i][1] for i in predictions.ids]), err_msg=label
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=10_000)
    parser.add_argument("--seq-len", type=int, default=384)
    parser.add_argument("--n-best", type=int, default=20)
    parser.add_argument("--max-answer-length", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=4, help="rounds; the running order is reversed every round (>= 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side per round, best kept (every side)")
    parser.add_argument(
        "--naive",
        action="store_true",
        help="also time the earlier baseline (whole argsort rows as lists, every k x k pair)",
    )
    args = parser.parse_args()
    if args.pairs < 3:
        parser.error("--pairs must be at least 3")

    import datasets

    examples, features, start, end = make_inputs(args.features, args.seq_len, args.seed)
    feature_ds = datasets.Dataset.from_dict(features)
    print(
        f"{len(features['example_id'])} features x {start.shape[1]} positions, {len(examples['id'])} examples, "
        f"n_best={args.n_best}, max_answer_length={args.max_answer_length}; {args.pairs} rounds, order reversed "
        f"each round, best of {args.repeats} calls per side per round; one input set (seed {args.seed}) for all sides"
    )
    summary = []
    for v2 in (False, True):
        common = {
            "n_best_size": args.n_best,
            "max_answer_length": args.max_answer_length,
            "version_2_with_negative": v2,
        }
        rules = SpanRules(**common)
        sides = {
            "loop": partial(loop_postprocess, examples, features, start, end, **common),
            "vectorised/list": partial(postprocess_qa_predictions, examples, features, start, end, rules),
            "vectorised/Dataset": partial(postprocess_qa_predictions, examples, feature_ds, start, end, rules),
        }
        if args.naive:
            sides["naive loop"] = partial(naive_loop_postprocess, examples, features, start, end, **common)
        label = "v2" if v2 else "v1"
        expected = loop_postprocess(examples, features, start, end, **common)  # untimed: the reference outputs
        ratios: dict[str, list[float]] = {name: [] for name in sides if name != "loop"}
        for pair in range(args.pairs):
            order = list(sides) if pair % 2 == 0 else list(sides)[::-1]
            times = {}
            for name in order:
                times[name], out = timed(sides[name], args.repeats)
                check_same(f"{label} {name}", out, expected)
            for name in ratios:
                # vectorised sides: loop / vectorised (speed-up); the naive loop: naive / loop (its slowdown)
                ratios[name].append(
                    times["loop"] / times[name] if name.startswith("vectorised") else times[name] / times["loop"]
                )
            shown = "  ".join(f"{name} {times[name]:.3f} s" for name in sides)
            speedups = "  ".join(
                f"loop/{name.split('/')[1]} {ratios[name][-1]:.2f}x" for name in ratios if name.startswith("vectorised")
            )
            naive = f"  naive/loop {ratios['naive loop'][-1]:.2f}x" if args.naive else ""
            print(
                f"{label} round {pair + 1} ({order[0]} first): {shown} | {speedups}{naive} | outputs equal", flush=True
            )
        for name, values in ratios.items():
            what = f"loop/{name}" if name.startswith("vectorised") else "naive loop/loop"
            line = (
                f"{label} {what}: per round {', '.join(f'{v:.2f}' for v in values)}; "
                f"median {statistics.median(values):.2f}x"
            )
            summary.append(line)
            print(line, flush=True)
    print("summary:")
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    main()
