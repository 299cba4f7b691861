"""Word error rate as an offline evaluate module, computed with jiwer 4 (`jiwer.process_words`).

Deliberate difference from the hub `wer` module: compute() returns a dict, not a bare float:
{"wer": float, "substitutions": int, "deletions": int, "insertions": int, "hits": int}, so the error counts
behind the rate are available (read result["wer"] where hub code used the float).
An empty (or whitespace-only) reference is an error naming its index: WER divides by the reference length.
"""

from typing import Optional

import evaluate
import jiwer

from accel_tasks.metrics.module_support import (
    MORRIS_2004_CITATION,
    MetricCard,
    ShippedMetricWithOptions,
    error_rate,
    text_features,
)

_CARD = MetricCard(
    metric="wer",
    description="""\
Word error rate: (substitutions + deletions + insertions) / (substitutions + deletions + hits), from a
word-level Levenshtein alignment of each prediction with its reference, summed over the corpus.
Words are split on whitespace after collapsing repeated spaces and stripping the ends; no other normalisation.
""",
    inputs_description="""
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
""",
    citation=MORRIS_2004_CITATION,
    features=text_features,
    codebase_urls=("https://github.com/jitsi/jiwer/",),
    reference_urls=("https://en.wikipedia.org/wiki/Word_error_rate",),
    options=("concatenate_texts",),
)


class WER(ShippedMetricWithOptions, evaluate.Metric, card=_CARD):
    """Corpus WER plus the edit counts behind it."""

    def _compute(self, predictions: list, references: list, concatenate_texts: Optional[bool] = None) -> dict:
        concatenate = self._resolve_options(locals(), {"concatenate_texts": False})["concatenate_texts"]
        return error_rate("wer", jiwer.process_words, " ", predictions, references, concatenate)
