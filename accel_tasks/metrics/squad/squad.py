"""SQuAD v1.1 as an offline evaluate module: the hub `squad` inputs and output keys, scored by the official
v1.1 evaluation rules (normalise, then the best exact match and token F1 over the gold answers).

As in the official script, a question with no prediction scores 0 (with a warning). Unlike it, duplicate ids and
questions without a gold answer are errors: they mean the inputs are wrong (use squad_v2 for unanswerable questions).
"""

import collections
import re
import string
import warnings

import datasets
import evaluate

_DESCRIPTION = """\
Stanford Question Answering Dataset v1.1 metric: exact match and token-level F1 of the predicted answer text
against every gold answer, keeping the best, averaged over questions and reported on a 0-100 scale.
"""

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of EMNLP 2016",
    year = "2016",
    pages = "2383--2392",
}
"""

_KWARGS_DESCRIPTION = """
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
"""

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Official SQuAD normalisation: lowercase, drop punctuation, drop articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


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


def _unique_ids(items: list, what: str) -> dict:
    """Map id -> item, refusing duplicates (the official script reads ids from a JSON object, so they are unique)."""
    by_id = {}
    for item in items:
        if item["id"] in by_id:
            raise ValueError(f"squad: {what} id {item['id']!r} appears more than once; ids must be unique")
        by_id[item["id"]] = item
    return by_id


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    """SQuAD v1.1 exact match and F1, hub-compatible inputs and keys."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
            codebase_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions: list, references: list) -> dict:
        if not references:
            raise ValueError("squad: no references to score; pass at least one prediction/reference pair")
        pred_text = {qid: item["prediction_text"] for qid, item in _unique_ids(predictions, "prediction").items()}
        refs = _unique_ids(references, "reference")

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
