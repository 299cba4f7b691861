"""SQuAD v1.1 as an offline evaluate module: the hub `squad` inputs and output keys, scored by the official
v1.1 evaluation rules (normalise, then the best exact match and token F1 over the gold answers).

As in the official script, a question with no prediction scores 0 (with a warning). Unlike it, duplicate ids and
questions without a gold answer are errors: they mean the inputs are wrong (use squad_v2 for unanswerable questions).
"""

import collections
import warnings

import evaluate

from accel_tasks.metrics.module_support import (
    MetricCard,
    ShippedMetric,
    normalize_answer,
    require_some,
    squad_features,
    unique_ids,
)

_CARD = MetricCard(
    metric="squad",
    description="""\
Stanford Question Answering Dataset v1.1 metric: exact match and token-level F1 of the predicted answer text
against every gold answer, keeping the best, averaged over questions and reported on a 0-100 scale.
""",
    inputs_description="""
Args:
    predictions (list of dict): {"id": str, "prediction_text": str}.
    references (list of dict): {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}}.
Returns:
    exact_match (float, 0-100), f1 (float, 0-100).
Example:
    >>> squad = evaluate.load("/path/to/accel_tasks/metrics/squad")
    >>> squad.compute(predictions=[{"id": "q1", "prediction_text": "1976"}],
    ...               references=[{"id": "q1", "answers": {"text": ["1976"], "answer_start": [97]}}])
    {'exact_match': 100.0, 'f1': 100.0}
""",
    citation="""\
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of EMNLP 2016",
    year = "2016",
    pages = "2383--2392",
}
""",
    features=squad_features,
    codebase_urls=("https://rajpurkar.github.io/SQuAD-explorer/",),
    reference_urls=("https://rajpurkar.github.io/SQuAD-explorer/",),
)


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    """Official v1.1: equal after normalisation."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Official v1.1: F1 of the bags of normalised tokens."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


class Squad(ShippedMetric, evaluate.Metric, card=_CARD):
    """SQuAD v1.1 exact match and F1, hub-compatible inputs and keys."""

    def _compute(self, predictions: list, references: list) -> dict:
        require_some(references, "references", "squad")
        pred_items = unique_ids(predictions, "prediction", "squad")
        pred_text = {qid: item["prediction_text"] for qid, item in pred_items.items()}
        refs = unique_ids(references, "reference", "squad")

        exact_match = f1 = 0.0
        missing = []
        for qid, ref in refs.items():
            ground_truths = list(ref["answers"]["text"])
            if not ground_truths:
                raise ValueError(
                    f"squad: question {qid!r} has no gold answer; SQuAD v1.1 needs at least one "
                    "(use squad_v2 for unanswerable questions)"
                )
            if qid not in pred_text:
                missing.append(qid)
                continue
            prediction = pred_text[qid]
            exact_match += max(exact_match_score(prediction, gt) for gt in ground_truths)
            f1 += max(f1_score(prediction, gt) for gt in ground_truths)
        if missing:
            warnings.warn(f"squad: {len(missing)} question(s) have no prediction and score 0, e.g. {missing[:3]}")
        total = len(refs)
        return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}
