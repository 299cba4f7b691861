"""SQuAD v2: each example's no-answer probability, and the null_score_diff_threshold tuned on an eval split.

The probability. The span head scores "no answer" (the null score: start+end logits at CLS) and each span; the
probability that an example has no answer is the softmax of its null score against its best span's score,
``sigmoid(null_odds)`` with ``null_odds = null score - best span score`` (1.0 without any valid span). The official
evaluate-v2.0 script needs no more than a number per question that orders them (BERT's run_squad passed
null_odds itself); a probability keeps the squad_v2 metric's ``no_answer_probability`` a probability, and the
sigmoid ties it to ``null_score_diff_threshold`` one-to-one: a threshold ``t`` in the recipe's units is the
probability ``sigmoid(t)`` in the metric's, and the recipe applies it as the metric does (``p > sigmoid(t)``), so
the metric's exact / f1 are those of the answers written to predictions.jsonl.

The tuning. The official rule (``find_best_thresh`` of the shipped squad_v2 metric, the script's own code) sweeps
the threshold up through the sorted probabilities from "every question unanswered" and keeps the best F1; it
reports that threshold as a probability (best_f1_thresh). In the recipe's units it is the null_odds of the
question it was reached at (:func:`null_score_diff_threshold_for`): its sigmoid is that probability exactly, not
a logit of it rounded, so applying it in an eval-only run chooses the same answers and its f1 is the run's best_f1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

# sigmoid(+-1000.0) is exactly 1.0 / 0.0 in float64: the threshold of "always answer" / "never answer" when no
# finite null_odds has that probability (the sweep's start: every question unanswered).
SATURATED = 1000.0


def no_answer_probability(null_odds: Union[float, np.ndarray]) -> np.ndarray:
    """sigmoid(null_odds) in float64, without overflow: 1.0 for +inf (no valid span), 0.0 for -inf.

    Computed one value at a time with the math module: numpy's vectorised exp may round an element of an array
    differently from the same value alone, and a threshold is compared with the probabilities by ``==`` and ``>``.
    """
    odds = np.asarray(null_odds, dtype=np.float64)
    values = [_sigmoid(value) for value in odds.ravel().tolist()]
    return np.asarray(values, dtype=np.float64).reshape(odds.shape)


def _sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    small = math.exp(value)
    return small / (1.0 + small)


@dataclass(frozen=True)
class TunedThreshold:
    """The best F1 of an eval over every threshold, and that threshold on both scales.

    ``probability`` is what the squad_v2 metric reports as best_f1_thresh; ``null_score_diff_threshold`` is the
    same threshold in the units of task.null_score_diff_threshold (its sigmoid is ``probability``).
    """

    best_f1: float
    probability: float
    null_score_diff_threshold: float


def null_score_diff_threshold_for(probability: float, null_odds: np.ndarray) -> float:
    """A finite null_score_diff_threshold whose no-answer probability is ``probability`` exactly: the largest
    finite null_odds with that probability, else +-SATURATED (0.0 or 1.0 with no question there)."""
    null_odds = np.asarray(null_odds, dtype=np.float64)
    at = null_odds[np.isfinite(null_odds) & (no_answer_probability(null_odds) == probability)]
    if at.size:
        return float(at.max())
    return SATURATED if probability >= 0.5 else -SATURATED


def tune_null_threshold(
    metric_predictions: Sequence[dict], null_odds: np.ndarray, references: Sequence[dict]
) -> TunedThreshold:
    """best_f1 and its threshold by the official rules, from the squad_v2 metric's inputs (each example's best span
    and its no-answer probability, in example order) and the examples' null_odds in the same order.

    Why here and not read back from the metric: the metric's threshold is a probability, and several null_odds
    may share one (float64 rounds sigmoid to 1.0 beyond ~37); mapping it back needs the examples' null_odds,
    which only the recipe has. The figures are the metric's: same functions, same inputs, same order.
    """
    from accel_tasks.metrics.squad_v2.squad_v2 import find_best_thresh, get_raw_scores

    preds = {p["id"]: p["prediction_text"] for p in metric_predictions}
    na_probs = {p["id"]: p["no_answer_probability"] for p in metric_predictions}
    gold = {r["id"]: list(r["answers"]["text"]) for r in references}
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    _, f1_raw = get_raw_scores(gold, preds)
    best_f1, probability = find_best_thresh(preds, f1_raw, na_probs, has_answer)
    return TunedThreshold(best_f1, probability, null_score_diff_threshold_for(probability, null_odds))
