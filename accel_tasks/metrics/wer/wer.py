"""Word error rate as an offline evaluate module, computed with jiwer 4 (`jiwer.process_words`).

Deliberate difference from the hub `wer` module: compute() returns a dict, not a bare float:
{"wer": float, "substitutions": int, "deletions": int, "insertions": int, "hits": int}, so the error counts
behind the rate are available (read result["wer"] where hub code used the float).
An empty (or whitespace-only) reference is an error naming its index: WER divides by the reference length.
"""

import inspect
from typing import Any, Optional

import datasets
import evaluate
import jiwer

_OPTIONS = ("concatenate_texts",)

_DESCRIPTION = """\
Word error rate: (substitutions + deletions + insertions) / (substitutions + deletions + hits), from a
word-level Levenshtein alignment of each prediction with its reference, summed over the corpus.
Words are split on whitespace after collapsing repeated spaces and stripping the ends; no other normalisation.
"""

_CITATION = """\
@inproceedings{morris2004,
    author = {Morris, Andrew and Maier, Viktoria and Green, Phil},
    title = {From WER and RIL to MER and WIL: improved evaluation measures for connected speech recognition},
    year = {2004},
    booktitle = {Interspeech 2004},
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): transcriptions to score.
    references (list of str): reference transcriptions, none empty.
    concatenate_texts (bool): align all texts joined by a space as one sequence instead of pair by pair.
        Default False.
Returns:
    wer (float, 0 is perfect, can exceed 1), substitutions, deletions, insertions, hits (ints, corpus totals).
Example:
    >>> wer = evaluate.load("/path/to/accel_tasks/metrics/wer")
    >>> wer.compute(predictions=["a x c"], references=["a b c"])
    {'wer': 0.3333333333333333, 'substitutions': 1, 'deletions': 0, 'insertions': 0, 'hits': 2}
"""


def _split_load_options(kwargs: dict, options: tuple, metric: str) -> dict:
    """Pop this metric's options out of evaluate.load()'s init kwargs, which evaluate 0.4 would drop silently."""
    found = {key: kwargs.pop(key) for key in list(kwargs) if key in options}
    known = set(inspect.signature(evaluate.EvaluationModule.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"{metric}: unknown option(s) {unknown}; valid options are {list(options)}")
    return found


def _check_texts(predictions: list, references: list, metric: str) -> None:
    """Fail on inputs jiwer would reject obscurely (or divide by zero on), naming the first bad index."""
    if not references:
        raise ValueError(f"{metric}: no references to score; pass at least one prediction/reference pair")
    for index, reference in enumerate(references):
        if reference is None or not reference.strip():
            raise ValueError(
                f"{metric}: reference {index} is empty; {metric.upper()} is undefined for an empty reference, "
                "so drop that example or give it a non-empty transcription"
            )
    for index, prediction in enumerate(predictions):
        if prediction is None:
            raise ValueError(f"{metric}: prediction {index} is None; use '' for an empty transcription")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WER(evaluate.Metric):
    """Corpus WER plus the edit counts behind it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._load_options = _split_load_options(kwargs, _OPTIONS, "wer")
        super().__init__(*args, **kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string", id="sequence"),
                    "references": datasets.Value("string", id="sequence"),
                }
            ),
            codebase_urls=["https://github.com/jitsi/jiwer/"],
            reference_urls=["https://en.wikipedia.org/wiki/Word_error_rate"],
        )

    def _compute(self, predictions: list, references: list, concatenate_texts: Optional[bool] = None) -> dict:
        if concatenate_texts is None:
            concatenate_texts = self._load_options.get("concatenate_texts", False)
        _check_texts(predictions, references, "wer")
        if concatenate_texts:
            predictions, references = [" ".join(predictions)], [" ".join(references)]
        output = jiwer.process_words(list(references), list(predictions))
        return {
            "wer": float(output.wer),
            "substitutions": int(output.substitutions),
            "deletions": int(output.deletions),
            "insertions": int(output.insertions),
            "hits": int(output.hits),
        }
