"""Start/end logits of every window -> one answer text per example, vectorised with numpy.

Per feature, the top-k start and end positions among its *context* tokens are crossed into a k x k
candidate matrix; impossible spans (end before start, longer than `max_answer_length`) are masked with
array operations, and the best span over all features of an example is mapped back to context
characters. Cost is a handful of numpy calls over (features, k, k) arrays instead of a Python double
loop per feature (see bench/qa_postprocess.py).

Candidate choice: positions that are not context tokens (offset None, question, special and padding
tokens, or beyond a feature's length) are masked *before* the top-k, so a model that puts its largest
logits on the question still gets the best context span. (The HF example takes the top-k over all
positions first and drops invalid ones after; the two agree whenever the top-k are context tokens.)

SQuAD v2: the null score of an example is the minimum over its features of start+end logit at the CLS
token (the feature's `cls_index` column when present, else position 0); `null_odds` = null score minus
the best non-null span score, and its no-answer probability is sigmoid(null_odds) (null_threshold.py). The
prediction is "" when that probability exceeds sigmoid(null_score_diff_threshold): the same as
`null_odds > null_score_diff_threshold` wherever float64 tells the two probabilities apart, and exactly the rule
the squad_v2 metric applies to the probabilities, so its scores are those of the answers written out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from accel_tasks.recipes.qa.errors import QADataError
from accel_tasks.recipes.qa.null_threshold import no_answer_probability
from accel_tasks.recipes.qa.offsets import ContextOffsets, read_offsets


@dataclass(frozen=True)
class BestSpans:
    """SQuAD v2: each example's best non-null span, before the no-answer rule (text "" and score -inf without one)."""

    texts: list[str]
    scores: np.ndarray
    start_chars: np.ndarray
    end_chars: np.ndarray
    null_scores: np.ndarray


@dataclass
class QAPredictions:
    """Predictions per example, in the order of the examples given to `postprocess_qa_predictions`.

    `scores` is the start+end logit sum of the chosen answer (the null score when v2 chose no answer;
    NaN when an example had no valid span). `null_odds` (v2 only) is null score minus best span score
    (+inf without any valid span); larger means "more likely unanswerable". `spans` (v2 only) keeps the best
    span of each example whatever the rule chose, so the rule can be applied again at another threshold
    (:func:`choose_null_answers`); `null_threshold` is the null_score_diff_threshold applied. `nbest` (when
    requested) holds up to n_best_size non-null spans per example, best first.
    """

    ids: list[str]
    texts: list[str]
    scores: np.ndarray
    start_chars: np.ndarray
    end_chars: np.ndarray
    is_null: np.ndarray
    null_odds: np.ndarray | None = None
    nbest: list[list[dict]] | None = None
    spans: BestSpans | None = None
    null_threshold: float = 0.0

    @property
    def version_2_with_negative(self) -> bool:
        return self.null_odds is not None

    @property
    def no_answer_probabilities(self) -> np.ndarray:
        """v2: sigmoid(null_odds) per example, float64 (1.0 without a valid span)."""
        if self.null_odds is None:
            raise QADataError("no-answer probabilities exist for SQuAD v2 predictions only")
        return no_answer_probability(self.null_odds)

    @property
    def no_answer_threshold(self) -> float:
        """v2: the squad_v2 metric's ``no_answer_threshold`` that makes the answers it scores these answers."""
        return float(no_answer_probability(self.null_threshold))

    def metric_predictions(self) -> list[dict]:
        """Inputs for the `squad` (v1) or `squad_v2` metric.

        v2: each example's best span with its no-answer probability, so that the metric's sweep (best_exact,
        best_f1 and their thresholds) tries every threshold both ways, as the official evaluate-v2.0 script does
        over na_probs. Scored with ``no_answer_threshold`` (:attr:`no_answer_threshold`), the metric's exact and f1
        are those of the answers chosen here. (Passing the chosen answers instead, as BERT's run_squad did, leaves
        the sweep nothing to gain above the applied threshold: a question answered "" scores 0 either way.)
        """
        if self.spans is None:
            return [{"id": i, "prediction_text": t} for i, t in zip(self.ids, self.texts)]
        return [
            {"id": i, "prediction_text": t, "no_answer_probability": p}
            for i, t, p in zip(self.ids, self.spans.texts, self.no_answer_probabilities.tolist())
        ]

    def records(self) -> list[dict]:
        """Rows for predictions.jsonl: id, prediction_text, score (+ null_odds and no_answer_probability for v2,
        + nbest when computed).

        Non-finite numbers become None so every row is strict JSON.
        """
        rows = []
        probabilities = self.no_answer_probabilities.tolist() if self.null_odds is not None else None
        for n, (qid, text, score) in enumerate(zip(self.ids, self.texts, self.scores.tolist())):
            row: dict[str, Any] = {"id": qid, "prediction_text": text, "score": _finite_or_none(score)}
            if probabilities is not None:
                row["null_odds"] = _finite_or_none(float(self.null_odds[n]))
                row["no_answer_probability"] = probabilities[n]
            if self.nbest is not None:
                row["nbest"] = self.nbest[n]
            rows.append(row)
        return rows


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def squad_references(examples: Any) -> list[dict]:
    """References for the squad/squad_v2 metrics: `{"id", "answers": {"text", "answer_start"}}` per example."""
    return [
        {"id": str(qid), "answers": {"text": list(a["text"]), "answer_start": list(a["answer_start"])}}
        for qid, a in zip(_column(examples, "id"), _column(examples, "answers"))
    ]


def _column(table: Any, name: str) -> list:
    """A column as a Python list; a `datasets.Dataset` is read through Arrow rather than row by row."""
    names = getattr(table, "column_names", None) or list(table.keys())
    if name not in names:
        raise QADataError(
            f"postprocessing needs a {name!r} column (has: {', '.join(names)}); build eval features "
            "with prepare_eval_features and keep example_id and offset_mapping for postprocessing"
        )
    if hasattr(table, "with_format"):
        return table.with_format("arrow")[name].to_pylist()
    return list(table[name])


def _feature_example_index(features: Any, example_ids: list[str]) -> np.ndarray:
    position = {qid: n for n, qid in enumerate(example_ids)}
    feature_ids = [str(e) for e in _column(features, "example_id")]
    unknown = sorted({e for e in feature_ids if e not in position})
    if unknown:
        raise QADataError(
            f"features refer to example ids not among the examples: {unknown[:5]}; pass the same "
            "split to preprocessing and postprocessing"
        )
    index = np.fromiter((position[e] for e in feature_ids), dtype=np.int64, count=len(feature_ids))
    missing = np.setdiff1d(np.arange(len(example_ids)), index)
    if missing.size:
        raise QADataError(
            f"{missing.size} example(s) have no features (first: {[example_ids[m] for m in missing[:5]]}); "
            "predictions must cover every eval feature (use gather_for_metrics)"
        )
    return index


def _check_arguments(
    start_logits: np.ndarray, end_logits: np.ndarray, n_features: int, n_best_size: int, max_answer_length: int
) -> None:
    if start_logits.ndim != 2 or start_logits.shape != end_logits.shape:
        raise QADataError(
            f"start/end logits must be 2-d arrays of one shape (features, positions); got "
            f"{start_logits.shape} and {end_logits.shape}"
        )
    if start_logits.shape[0] != n_features:
        raise QADataError(
            f"{start_logits.shape[0]} rows of logits for {n_features} features; gather the logits of "
            "every eval feature in feature order (gather_for_metrics drops the duplicated tail)"
        )
    if start_logits.shape[1] < 1:
        raise QADataError("logits have no positions; the model output is empty")
    if n_best_size < 1 or max_answer_length < 1:
        raise QADataError(f"n_best_size ({n_best_size}) and max_answer_length ({max_answer_length}) must be >= 1")


@dataclass(frozen=True)
class SpanRules:
    """How answer spans are chosen (the recipe's task.* options of the same names).

    `n_best_size`: start and end candidates per window crossed into spans; `max_answer_length`: longest span in
    tokens; `version_2_with_negative`: SQuAD v2, an example may be unanswerable, decided by
    `null_score_diff_threshold` (see the module docstring).
    """

    n_best_size: int = 20
    max_answer_length: int = 30
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0


def postprocess_qa_predictions(
    examples: Any,
    features: Any,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    rules: SpanRules = SpanRules(),
    return_nbest: bool = False,
) -> QAPredictions:
    """Best answer span per example from window logits.

    `examples` needs `id` and `context`; `features` (a Dataset or dict of columns from
    `prepare_eval_features`) needs `example_id` and `offset_mapping`, optionally `cls_index`.
    Logits are (features, positions), padded past each feature's length with any value (those positions
    are never chosen); a feature longer than the logits is an error.
    """
    start_logits = np.asarray(start_logits)
    end_logits = np.asarray(end_logits)
    example_ids = [str(i) for i in _column(examples, "id")]
    contexts = list(_column(examples, "context"))
    if not example_ids:
        return _no_predictions(rules, return_nbest)
    offsets = read_offsets(features)
    lengths = offsets.lengths
    n_features = lengths.size
    _check_arguments(start_logits, end_logits, n_features, rules.n_best_size, rules.max_answer_length)
    width = start_logits.shape[1]
    if n_features and lengths.max() > width:
        raise QADataError(
            f"a feature has {int(lengths.max())} tokens but the logits only {width} positions; "
            "pad logits to the longest feature instead of truncating them"
        )
    feature_example = _feature_example_index(features, example_ids)
    spans = _span_candidates(start_logits, end_logits, offsets.mask(width), rules)

    # Best span per feature, then best feature per example (ties: earliest feature).
    rows = np.arange(n_features)
    best_flat = np.argmax(spans.scores, axis=1)
    feature_best = spans.scores[rows, best_flat]
    feature_start = spans.start_idx[rows, best_flat // spans.k]
    feature_end = spans.end_idx[rows, best_flat % spans.k]
    order = np.lexsort((-feature_best, feature_example))
    first = np.ones(n_features, dtype=bool)
    first[1:] = feature_example[order][1:] != feature_example[order][:-1]
    chosen = order[first]  # one feature per example, in example order (every example has a feature)

    best_score = feature_best[chosen]
    has_span = np.isfinite(best_score)
    start_char = np.full(len(example_ids), -1, dtype=np.int64)
    end_char = np.full(len(example_ids), -1, dtype=np.int64)
    span_feature = chosen[has_span]
    start_char[has_span], end_char[has_span] = offsets.chars(
        span_feature, feature_start[span_feature], feature_end[span_feature]
    )
    predictions = QAPredictions(
        ids=example_ids,
        texts=[],
        scores=np.where(has_span, best_score, np.nan),
        start_chars=start_char,
        end_chars=end_char,
        is_null=~has_span,
    )
    starts, ends = predictions.start_chars.tolist(), predictions.end_chars.tolist()
    predictions.texts = [contexts[n][s:e] if s >= 0 else "" for n, (s, e) in enumerate(zip(starts, ends))]
    if rules.version_2_with_negative:
        null_score = _null_scores(features, start_logits, end_logits, feature_example, len(example_ids))
        best = BestSpans(predictions.texts, best_score, start_char, end_char, null_score)
        predictions = choose_null_answers(replace(predictions, spans=best), rules.null_score_diff_threshold)
    if return_nbest:
        predictions.nbest = _nbest(spans, feature_example, offsets, contexts, rules.n_best_size)
    return predictions


def _no_predictions(rules: SpanRules, return_nbest: bool) -> QAPredictions:
    """The predictions of no examples."""
    empty = np.zeros(0)
    return QAPredictions(
        ids=[],
        texts=[],
        scores=empty,
        start_chars=empty.astype(np.int64),
        end_chars=empty.astype(np.int64),
        is_null=empty.astype(bool),
        null_odds=empty if rules.version_2_with_negative else None,
        nbest=[] if return_nbest else None,
        spans=BestSpans([], empty, empty.astype(np.int64), empty.astype(np.int64), empty)
        if rules.version_2_with_negative
        else None,
        null_threshold=rules.null_score_diff_threshold,
    )


@dataclass
class _Spans:
    """Per feature, the top-k start and end positions and the (features, k * k) scores of the spans they make."""

    scores: np.ndarray
    start_idx: np.ndarray
    end_idx: np.ndarray
    k: int


def _span_candidates(start_logits: np.ndarray, end_logits: np.ndarray, valid: np.ndarray, rules: SpanRules) -> _Spans:
    """Top-k context positions per feature, crossed into a (features, k, k) candidate matrix. Scores are
    summed in float64; a masked position is -inf, so its spans are -inf without a separate mask."""
    n_features, width = start_logits.shape
    dtype = np.promote_types(start_logits.dtype, np.float32)
    masked_start = np.where(valid, start_logits.astype(dtype, copy=False), -np.inf)
    masked_end = np.where(valid, end_logits.astype(dtype, copy=False), -np.inf)
    k = min(rules.n_best_size, width)
    start_idx = np.argpartition(masked_start, width - k, axis=1)[:, width - k :]
    end_idx = np.argpartition(masked_end, width - k, axis=1)[:, width - k :]
    start_score = np.take_along_axis(masked_start, start_idx, axis=1).astype(np.float64)
    end_score = np.take_along_axis(masked_end, end_idx, axis=1).astype(np.float64)
    span_length = end_idx.astype(np.int32)[:, None, :] - start_idx.astype(np.int32)[:, :, None]
    candidates = start_score[:, :, None] + end_score[:, None, :]
    candidates[(span_length < 0) | (span_length >= rules.max_answer_length)] = -np.inf
    return _Spans(candidates.reshape(n_features, k * k), start_idx, end_idx, k)


def _null_scores(
    features: Any, start_logits: np.ndarray, end_logits: np.ndarray, feature_example: np.ndarray, n_examples: int
) -> np.ndarray:
    """SQuAD v2: per example, the minimum over its features of the start+end logit at the CLS token."""
    n_features, width = start_logits.shape
    cls = _cls_positions(features, n_features, width)
    rows = np.arange(n_features)
    feature_null = start_logits[rows, cls].astype(np.float64) + end_logits[rows, cls].astype(np.float64)
    null_score = np.full(n_examples, np.inf)
    np.minimum.at(null_score, feature_example, feature_null)
    return null_score


def choose_null_answers(predictions: QAPredictions, threshold: float) -> QAPredictions:
    """SQuAD v2: the predictions with the null answer where the no-answer probability exceeds sigmoid(``threshold``)
    (see the module docstring); every example's best span is kept in ``spans``, so any threshold can be applied."""
    spans = predictions.spans
    if spans is None:
        raise QADataError("choosing null answers needs SQuAD v2 predictions (SpanRules(version_2_with_negative=True))")
    has_span = np.isfinite(spans.scores)
    null_odds = np.where(has_span, spans.null_scores - np.where(has_span, spans.scores, 0.0), np.inf)
    is_null = ~has_span | (no_answer_probability(null_odds) > no_answer_probability(threshold))
    return replace(
        predictions,
        texts=["" if null else text for null, text in zip(is_null.tolist(), spans.texts)],
        scores=np.where(is_null, spans.null_scores, spans.scores),
        start_chars=np.where(is_null, -1, spans.start_chars),
        end_chars=np.where(is_null, -1, spans.end_chars),
        is_null=is_null,
        null_odds=null_odds,
        null_threshold=float(threshold),
    )


def _cls_positions(features: Any, n_features: int, width: int) -> np.ndarray:
    names = getattr(features, "column_names", None) or list(features.keys())
    if "cls_index" not in names:
        return np.zeros(n_features, dtype=np.int64)
    cls = np.asarray(_column(features, "cls_index"), dtype=np.int64)
    if cls.size and (cls.min() < 0 or cls.max() >= width):
        raise QADataError(f"cls_index values must lie in [0, {width}) for logits of {width} positions")
    return cls


def _nbest(
    spans: _Spans,
    feature_example: np.ndarray,
    offsets: ContextOffsets,
    contexts: Sequence[str],
    n_best_size: int,
) -> list[list[dict]]:
    """Up to n_best_size spans per example: per-feature top-n, then the top-n of each example's union."""
    candidates, start_idx, end_idx, k = spans.scores, spans.start_idx, spans.end_idx, spans.k
    n_features, width = candidates.shape
    n = min(n_best_size, width)
    top = np.argpartition(candidates, width - n, axis=1)[:, width - n :]
    score = np.take_along_axis(candidates, top, axis=1).ravel()
    feature = np.repeat(np.arange(n_features), n)
    top = top.ravel()
    keep = np.isfinite(score)
    score, feature, top = score[keep], feature[keep], top[keep]
    example = feature_example[feature]
    order = np.lexsort((feature, -score, example))
    example_sorted = example[order]
    group_start = np.searchsorted(example_sorted, example_sorted, side="left")
    order = order[np.arange(order.size) - group_start < n_best_size]
    feature, top, score, example = feature[order], top[order], score[order], example[order]
    starts, ends = offsets.chars(feature, start_idx[feature, top // k], end_idx[feature, top % k])
    starts, ends = starts.tolist(), ends.tolist()
    result: list[list[dict]] = [[] for _ in contexts]
    for ex, s, e, sc in zip(example.tolist(), starts, ends, score.tolist()):
        result[ex].append({"text": contexts[ex][s:e], "score": sc, "start_char": s, "end_char": e})
    return result
