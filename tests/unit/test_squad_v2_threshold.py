"""SQuAD v2 null-threshold tuning: the no-answer probability, best_f1 and its threshold on hand-made predictions,
checked against the rules of the official evaluate-v2.0 script written out here, and the tuned threshold applied
again giving best_f1 (what task.null_score_diff_threshold=auto does in an eval-only run)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from accel_tasks.metrics import load_metric
from accel_tasks.recipes.qa import BestSpans, QAPredictions, choose_null_answers
from accel_tasks.recipes.qa.null_threshold import (
    SATURATED,
    no_answer_probability,
    null_score_diff_threshold_for,
    tune_null_threshold,
)

pytest.importorskip("evaluate")


@pytest.fixture(scope="module")
def squad_v2():
    return load_metric("squad_v2", keep_in_memory=True)


def test_the_probability_is_the_softmax_of_the_null_score_against_the_best_span():
    null, best = 1.5, -0.5  # null_odds 2
    softmax = math.exp(null) / (math.exp(null) + math.exp(best))
    assert no_answer_probability(null - best) == pytest.approx(softmax, rel=1e-15)
    odds = np.array([-np.inf, -800.0, -2.0, 0.0, 2.0, 40.0, np.inf])
    expected = [0.0, 0.0, 1 / (1 + math.e**2), 0.5, 1 / (1 + math.e**-2), 1.0, 1.0]
    assert no_answer_probability(odds).tolist() == pytest.approx(expected, rel=1e-15, abs=0.0)
    # One value at a time: an element of an array is exactly that value alone (thresholds are compared by ==).
    rng = np.random.default_rng(0)
    values = rng.normal(scale=8.0, size=1001)
    assert no_answer_probability(values).tolist() == [float(no_answer_probability(v)) for v in values]
    assert np.all(np.diff(no_answer_probability(np.sort(values))) >= 0)


def predictions(cases: list[tuple[str, str, float]]) -> QAPredictions:
    """(id, best span text, null_odds) per example, as the span head would leave them (null score 0)."""
    ids = [case[0] for case in cases]
    spans = BestSpans(
        texts=[case[1] for case in cases],
        scores=np.array([-case[2] for case in cases]),
        start_chars=np.zeros(len(cases), dtype=np.int64),
        end_chars=np.array([len(case[1]) for case in cases]),
        null_scores=np.zeros(len(cases)),
    )
    empty = np.zeros(len(cases))
    raw = QAPredictions(
        ids, list(spans.texts), empty, empty.astype(np.int64), empty.astype(np.int64), empty > 0, spans=spans
    )
    return choose_null_answers(raw, 0.0)


def references(gold: dict[str, list[str]]) -> list[dict]:
    return [{"id": qid, "answers": {"text": texts, "answer_start": [0] * len(texts)}} for qid, texts in gold.items()]


def official_best_f1(preds: dict[str, str], na_probs: dict[str, float], gold: dict[str, list[str]]) -> float:
    """The official script's best_f1, by its definition rather than its sweep: for each threshold it can report
    (0.0 and each probability), "no answer" where na_prob > threshold, scored with its F1 rules; the best mean."""
    from accel_tasks.metrics.squad_v2.squad_v2 import compute_f1

    def f1_at(threshold: float) -> float:
        total = 0.0
        for qid, answers in gold.items():
            answer = "" if na_probs[qid] > threshold else preds[qid]
            total += max(compute_f1(a, answer) for a in answers) if answers else float(answer == "")
        return 100.0 * total / len(gold)

    return max(f1_at(t) for t in [0.0, *na_probs.values()])


# Both ways: "paris" is right at null_odds 1.5, above the default 0, so the best threshold is above 0;
# "london" answers an unanswerable question at -0.5, so everything below it is better left unanswered.
GOLD = {"a": ["Paris"], "b": ["the blue whale"], "c": [], "d": [], "e": ["1976"], "f": ["Rome"]}
CASES = [
    ("a", "Paris", 1.5),
    ("b", "blue whale species", -2.0),  # F1 0.8
    ("c", "London", -0.5),  # an unanswerable question answered
    ("d", "Oslo", 3.0),
    ("e", "1975", 0.25),  # wrong: F1 0
    ("f", "Rome", -3.0),
]


def test_best_f1_and_its_threshold_follow_the_official_rules_both_ways(squad_v2):
    pred = predictions(CASES)
    assert pred.texts == ["", "blue whale species", "London", "", "", "Rome"]  # threshold 0
    tuned = tune_null_threshold(pred.metric_predictions(), pred.null_odds, references(GOLD))
    inputs = pred.metric_predictions()
    official = official_best_f1(
        {p["id"]: p["prediction_text"] for p in inputs}, {p["id"]: p["no_answer_probability"] for p in inputs}, GOLD
    )
    # By hand, sweeping up by null_odds from "all unanswered" (c, d right: 2): f -3 +1 = 3, b -2 +0.8 = 3.8,
    # c -0.5 -1 = 2.8, e 0.25 +0 = 2.8, a 1.5 +1 = 3.8 (not better), d 3 -1 = 2.8: best 3.8 / 6 first at b (-2).
    assert tuned.best_f1 == pytest.approx(official) == pytest.approx(100 * 3.8 / 6)
    assert tuned.null_score_diff_threshold == -2.0 and tuned.probability == no_answer_probability(-2.0)

    result = squad_v2.compute(
        predictions=inputs, references=references(GOLD), no_answer_threshold=pred.no_answer_threshold
    )
    # The metric: the same best_f1 and threshold (on the probability scale); at the applied threshold, the scores of
    # the answers chosen (f: 1, b: 0.8, c: 0, a, d, e unanswered: d right) = 2.8 / 6, never above best_f1.
    assert result["best_f1"] == tuned.best_f1 and result["best_f1_thresh"] == tuned.probability
    assert result["f1"] == pytest.approx(100 * 2.8 / 6) and result["best_f1"] >= result["f1"]

    # The tuned threshold applied again (eval-only with auto): the metric's f1 is best_f1, and it is that of the
    # answers written out.
    again = choose_null_answers(pred, tuned.null_score_diff_threshold)
    assert again.texts == ["", "blue whale species", "", "", "", "Rome"]
    rescored = squad_v2.compute(
        predictions=again.metric_predictions(),
        references=references(GOLD),
        no_answer_threshold=again.no_answer_threshold,
    )
    assert rescored["f1"] == result["best_f1"]
    assert rescored["f1"] == pytest.approx(
        official_best_f1(dict(zip(again.ids, again.texts)), {q: 0.0 for q in GOLD}, GOLD)
    )


def test_the_threshold_above_zero_is_found_because_the_metric_sees_every_best_span(squad_v2):
    gold = {"a": ["Paris"], "b": [], "c": ["Rome"]}
    pred = predictions([("a", "Paris", 1.5), ("b", "Oslo", 3.0), ("c", "Rome", -1.0)])
    tuned = tune_null_threshold(pred.metric_predictions(), pred.null_odds, references(gold))
    assert tuned.best_f1 == 100.0 and tuned.null_score_diff_threshold == 1.5
    assert choose_null_answers(pred, tuned.null_score_diff_threshold).texts == ["Paris", "", "Rome"]
    # The answers already chosen at 0 (BERT's run_squad passed those): "a" is "" and the sweep cannot win it back.
    chosen = [
        {"id": qid, "prediction_text": text, "no_answer_probability": p}
        for qid, text, p in zip(pred.ids, pred.texts, pred.no_answer_probabilities.tolist())
    ]
    assert squad_v2.compute(predictions=chosen, references=references(gold))["best_f1"] == pytest.approx(200 / 3)


def test_saturated_probabilities_and_never_answering_map_to_finite_thresholds():
    odds = np.array([40.0, 50.0, np.inf, -3.0])  # sigmoid(40) == sigmoid(50) == 1.0 in float64
    assert null_score_diff_threshold_for(1.0, odds) == 50.0
    assert null_score_diff_threshold_for(float(no_answer_probability(-3.0)), odds) == -3.0
    # The sweep's start ("never answer", reported as 0.0) and 1.0 with only infinite null_odds there.
    assert null_score_diff_threshold_for(0.0, odds) == -SATURATED and no_answer_probability(-SATURATED) == 0.0
    assert null_score_diff_threshold_for(1.0, np.array([np.inf, 0.0])) == SATURATED
    # Everything unanswered is best (every question unanswerable): the tuned threshold answers none.
    pred = predictions([("a", "Paris", -4.0), ("b", "Oslo", 2.0)])
    tuned = tune_null_threshold(pred.metric_predictions(), pred.null_odds, references({"a": [], "b": []}))
    assert (tuned.best_f1, tuned.probability, tuned.null_score_diff_threshold) == (100.0, 0.0, -SATURATED)
    assert choose_null_answers(pred, tuned.null_score_diff_threshold).texts == ["", ""]


def test_an_example_without_a_valid_span_stays_unanswered_at_any_threshold():
    pred = predictions([("a", "", math.inf), ("b", "Oslo", 50.0)])
    assert pred.no_answer_probabilities.tolist() == [1.0, 1.0]
    assert choose_null_answers(pred, SATURATED).texts == ["", "Oslo"]  # 1.0 > sigmoid(1000) = 1.0 is false
    assert choose_null_answers(pred, 0.0).records()[0] == {
        "id": "a", "prediction_text": "", "score": 0.0, "null_odds": None, "no_answer_probability": 1.0
    }  # fmt: skip
