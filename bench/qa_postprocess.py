"""QA postprocessing: vectorised `postprocess_qa_predictions` versus a per-feature Python double loop.

The loop is the straightforward algorithm of the HF question-answering example (n-best start x n-best
end per feature, skip invalid spans, keep the best per example; v2 null score = min CLS score), with
the same candidate rule as the vectorised code: the n-best are taken among context tokens. Both get
identical inputs; outputs are asserted equal, then both times and the ratio are printed.

    OMP_NUM_THREADS=1 python bench/qa_postprocess.py [--features 10000] [--seq-len 384] [--n-best 20]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

import numpy as np

from accel_tasks.qa import postprocess_qa_predictions

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
        start[row, len(o):] = PAD_VALUE
        end[row, len(o):] = PAD_VALUE
    return ({"id": ids, "context": contexts}, {"example_id": feature_ids, "offset_mapping": offsets}, start, end)


def loop_postprocess(examples: dict, features: dict, start_logits: np.ndarray, end_logits: np.ndarray,
                     n_best_size: int, max_answer_length: int, version_2_with_negative: bool,
                     null_score_diff_threshold: float = 0.0) -> dict[str, tuple[str, float]]:
    """Reference: for every feature, loop over n-best starts x n-best ends (as in the HF example)."""
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
            start_indexes = [j for j in np.argsort(starts_logit)[::-1].tolist()
                             if j < len(offsets) and offsets[j] is not None][:n_best_size]
            end_indexes = [j for j in np.argsort(ends_logit)[::-1].tolist()
                           if j < len(offsets) and offsets[j] is not None][:n_best_size]
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
            result[example_id] = (context[best[1]:best[2]], best[0])
    return result


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=10_000)
    parser.add_argument("--seq-len", type=int, default=384)
    parser.add_argument("--n-best", type=int, default=20)
    parser.add_argument("--max-answer-length", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import datasets

    examples, features, start, end = make_inputs(args.features, args.seq_len, args.seed)
    feature_ds = datasets.Dataset.from_dict(features)
    print(f"{len(features['example_id'])} features x {start.shape[1]} positions, {len(examples['id'])} examples, "
          f"n_best={args.n_best}, max_answer_length={args.max_answer_length}")
    for v2 in (False, True):
        common = dict(n_best_size=args.n_best, max_answer_length=args.max_answer_length, version_2_with_negative=v2)
        loop_s, expected = timed(lambda: loop_postprocess(examples, features, start, end, **common), 1)
        ds_s, got = timed(lambda: postprocess_qa_predictions(examples, feature_ds, start, end, **common), 3)
        list_s, got_list = timed(lambda: postprocess_qa_predictions(examples, features, start, end, **common), 3)
        for predictions in (got, got_list):
            assert predictions.ids == list(expected)
            assert predictions.texts == [expected[i][0] for i in predictions.ids]
            np.testing.assert_array_equal(predictions.scores, np.array([expected[i][1] for i in predictions.ids]))
        label = "v2" if v2 else "v1"
        print(f"{label}: loop {loop_s:.3f} s | vectorised {ds_s:.3f} s (Dataset features) = {loop_s / ds_s:.1f}x | "
              f"{list_s:.3f} s (list features) = {loop_s / list_s:.1f}x | outputs equal")


if __name__ == "__main__":
    main()
