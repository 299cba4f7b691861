"""SQuAD v2.0 as an offline evaluate module: the hub `squad_v2` inputs and output keys, scored exactly as the
official v2.0 evaluation script does (no-answer threshold, HasAns/NoAns splits, best thresholds).

Differences from the hub module, on purpose:
- `no_answer_probability` is kept as float64 (the hub stores float32, so its thresholds come back as e.g.
  0.699999988 instead of 0.7); the official script reads them from JSON as float64 too;
- a question without a prediction, or a repeated id, is an error naming the id (the official script crashes
  with a KeyError on the first and cannot see the second);
- `no_answer_threshold` may be given to `compute(...)` or to `evaluate.load(path, no_answer_threshold=...)`.
"""

import collections
from typing import Optional

import evaluate

from accel_tasks.metrics.module_support import (
    MetricCard,
    ShippedMetricWithOptions,
    normalize_answer,
    require_some,
    squad_features,
    unique_ids,
)

_CARD = MetricCard(
    metric="squad_v2",
    description="""\
Stanford Question Answering Dataset v2.0 metric. Questions with an empty list of gold answers are unanswerable:
only an empty prediction is right for them. A prediction counts as "no answer" when its no_answer_probability
is above no_answer_threshold. best_exact/best_f1 report the score at the best threshold over the probabilities.
""",
    inputs_description="""
Args:
    predictions (list of dict): {"id": str, "prediction_text": str, "no_answer_probability": float};
        use "" as prediction_text to predict "no answer".
    references (list of dict): {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}};
        empty lists mark an unanswerable question.
    no_answer_threshold (float): predict "no answer" when no_answer_probability > this. Default 1.0 (never).
Returns:
    exact, f1, total; HasAns_exact, HasAns_f1, HasAns_total (only if some question has an answer);
    NoAns_exact, NoAns_f1, NoAns_total (only if some question has none); best_exact, best_exact_thresh,
    best_f1, best_f1_thresh. Scores are on a 0-100 scale.
Example:
    >>> squad_v2 = evaluate.load("/path/to/accel_tasks/metrics/squad_v2")
    >>> squad_v2.compute(predictions=[{"id": "q1", "prediction_text": "1976", "no_answer_probability": 0.0}],
    ...                  references=[{"id": "q1", "answers": {"text": ["1976"], "answer_start": [97]}}])["exact"]
    100.0
""",
    citation="""\
@inproceedings{rajpurkar-etal-2018-know,
    title = "Know What You Don{'}t Know: Unanswerable Questions for {SQ}u{AD}",
    author = "Rajpurkar, Pranav and Jia, Robin and Liang, Percy",
    booktitle = "Proceedings of ACL 2018",
    year = "2018",
    pages = "784--789",
}
""",
    features=lambda: squad_features(no_answer_probability=True),
    codebase_urls=("https://rajpurkar.github.io/SQuAD-explorer/",),
    reference_urls=("https://rajpurkar.github.io/SQuAD-explorer/",),
    options=("no_answer_threshold",),
)


def get_tokens(text: str) -> list:
    if not text:
        return []
    return normalize_answer(text).split()


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    """Token F1; when either side is empty (no answer), 1 if both are, else 0."""
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def get_raw_scores(gold: dict, preds: dict) -> tuple:
    """Best exact/F1 over gold answers per question; an unanswerable question's only gold answer is ''."""
    exact_scores = {}
    f1_scores = {}
    for qid, answers in gold.items():
        gold_answers = [a for a in answers if normalize_answer(a)]
        if not gold_answers:
            gold_answers = [""]
        a_pred = preds[qid]
        exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold_answers)
        f1_scores[qid] = max(compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def apply_no_ans_threshold(scores: dict, na_probs: dict, qid_to_has_ans: dict, na_prob_thresh: float) -> dict:
    """Above the threshold the prediction is 'no answer': right (1.0) exactly when the question has none."""
    new_scores = {}
    for qid, score in scores.items():
        if na_probs[qid] > na_prob_thresh:
            new_scores[qid] = float(not qid_to_has_ans[qid])
        else:
            new_scores[qid] = score
    return new_scores


def make_eval_dict(exact_scores: dict, f1_scores: dict, qid_list: Optional[list] = None) -> dict:
    if not qid_list:
        total = len(exact_scores)
        return {
            "exact": 100.0 * sum(exact_scores.values()) / total,
            "f1": 100.0 * sum(f1_scores.values()) / total,
            "total": total,
        }
    total = len(qid_list)
    return {
        "exact": 100.0 * sum(exact_scores[k] for k in qid_list) / total,
        "f1": 100.0 * sum(f1_scores[k] for k in qid_list) / total,
        "total": total,
    }


def merge_eval(main_eval: dict, new_eval: dict, prefix: str) -> None:
    for key in new_eval:
        main_eval[f"{prefix}_{key}"] = new_eval[key]


def find_best_thresh(preds: dict, scores: dict, na_probs: dict, qid_to_has_ans: dict) -> tuple:
    """Sweep the threshold up through the sorted probabilities, starting from 'every answer is no-answer'."""
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        elif preds[qid]:
            diff = -1
        else:
            diff = 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def find_all_best_thresh(
    main_eval: dict, preds: dict, exact_raw: dict, f1_raw: dict, na_probs: dict, qid_to_has_ans: dict
) -> None:
    best_exact, exact_thresh = find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    best_f1, f1_thresh = find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    main_eval["best_exact"] = best_exact
    main_eval["best_exact_thresh"] = exact_thresh
    main_eval["best_f1"] = best_f1
    main_eval["best_f1_thresh"] = f1_thresh


class SquadV2(ShippedMetricWithOptions, evaluate.Metric, card=_CARD):
    """SQuAD v2.0 scores, hub-compatible inputs and keys."""

    def _compute(self, predictions: list, references: list, no_answer_threshold: Optional[float] = None) -> dict:
        threshold = self._resolve_options(locals(), {"no_answer_threshold": 1.0})["no_answer_threshold"]
        require_some(references, "references", "squad_v2")
        pred_items = unique_ids(predictions, "prediction", "squad_v2")
        refs = unique_ids(references, "reference", "squad_v2")
        gold = {qid: list(ref["answers"]["text"]) for qid, ref in refs.items()}
        missing = [qid for qid in gold if qid not in pred_items]
        if missing:
            raise ValueError(
                f"squad_v2: {len(missing)} question(s) have no prediction, e.g. {missing[:3]}; "
                "give one per reference id (prediction_text '' means 'no answer')"
            )
        for qid, item in pred_items.items():
            if item["no_answer_probability"] is None:
                raise ValueError(
                    f"squad_v2: prediction {qid!r} has no no_answer_probability; give a float (0.0 if unused)"
                )
        preds = {qid: item["prediction_text"] for qid, item in pred_items.items()}
        na_probs = {qid: item["no_answer_probability"] for qid, item in pred_items.items()}

        qid_to_has_ans = {qid: bool(answers) for qid, answers in gold.items()}
        has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
        no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]

        exact_raw, f1_raw = get_raw_scores(gold, preds)
        exact_thresh = apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, threshold)
        f1_thresh = apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, threshold)
        out_eval = make_eval_dict(exact_thresh, f1_thresh)
        if has_ans_qids:
            merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids), "HasAns")
        if no_ans_qids:
            merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids), "NoAns")
        find_all_best_thresh(out_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans)
        return out_eval
