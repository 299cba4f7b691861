"""ROUGE as an offline evaluate module: the hub `rouge` inputs and output keys, computed with rouge_score.

Differences from the hub module, on purpose:
- with `use_aggregator=True` the value is the exact mean F-measure over examples (a float), where the hub
  reports the median of 1000 unseeded bootstrap resamples, so the hub's number jitters around this one;
- options may also be given to `evaluate.load(path, use_stemmer=True, ...)`, where they become defaults.

`rougeLsum` splits sentences on "\\n" only (rouge_score's `split_summaries=False`), so no nltk data is needed;
the Porter stemmer that `use_stemmer=True` uses is code, not data.
"""

import re
from typing import Any, Callable, Optional

import evaluate
import numpy
from rouge_score import rouge_scorer

from accel_tasks.metrics.module_support import (
    MetricCard,
    ShippedMetricWithOptions,
    multi_reference_features,
    require_some,
)

_DEFAULT_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

_CARD = MetricCard(
    metric="rouge",
    description="""\
ROUGE (Lin, 2004) through Google Research's rouge_score package. rouge{n} counts n-gram overlap, rougeL is the
longest common subsequence, rougeLsum is the summary-level LCS over sentences separated by newlines.
""",
    inputs_description="""
Args:
    predictions (list of str): generated texts; put "\\n" between sentences for rougeLsum.
    references (list of str, or list of list of str): one reference per prediction, or several
        (the best-scoring reference counts, per rouge type, as rouge_score's score_multi does).
    rouge_types (list of str): default ["rouge1", "rouge2", "rougeL", "rougeLsum"]; any "rouge<n>" with n >= 1.
    use_aggregator (bool): True (default) returns the mean F-measure per type; False returns one F-measure per example.
    use_stemmer (bool): strip word suffixes with the Porter stemmer before matching. Default False.
    tokenizer (callable str -> list of str): replaces rouge_score's default tokenizer (lowercase, alphanumeric tokens).
Returns:
    {rouge_type: float} with the aggregator, {rouge_type: list of float} without.
Example:
    >>> rouge = evaluate.load("/path/to/accel_tasks/metrics/rouge")
    >>> rouge.compute(predictions=["hello there"], references=["hello there"])
    {'rouge1': 1.0, 'rouge2': 1.0, 'rougeL': 1.0, 'rougeLsum': 1.0}
""",
    citation="""\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    pages = "74--81",
}
""",
    features=multi_reference_features,
    codebase_urls=("https://github.com/google-research/google-research/tree/master/rouge",),
    reference_urls=("https://aclanthology.org/W04-1013",),
    options=("rouge_types", "use_aggregator", "use_stemmer", "tokenizer"),
)


class _CallableTokenizer:
    """Adapts a plain function to the `.tokenize()` object rouge_score expects (the hub accepts a function)."""

    def __init__(self, func: Callable[[str], list]) -> None:
        self.func = func

    def tokenize(self, text: str) -> list:
        return self.func(text)


def _check_rouge_types(rouge_types: Any) -> list:
    """Validate up front; rouge_score would only fail inside the first score() call."""
    if isinstance(rouge_types, str):
        rouge_types = [rouge_types]
    rouge_types = list(rouge_types)
    if not rouge_types:
        raise ValueError("rouge: rouge_types is empty; pass e.g. ['rouge1', 'rouge2', 'rougeL', 'rougeLsum']")
    for rouge_type in rouge_types:
        if not (rouge_type in ("rougeL", "rougeLsum") or re.fullmatch(r"rouge[1-9][0-9]*", str(rouge_type))):
            raise ValueError(
                f"rouge: unknown rouge type {rouge_type!r}; "
                "use 'rouge<n>' (n >= 1, e.g. 'rouge1'), 'rougeL' or 'rougeLsum'"
            )
    return rouge_types


class Rouge(ShippedMetricWithOptions, evaluate.Metric, card=_CARD):
    """ROUGE F-measures, hub-compatible inputs and keys."""

    def _compute(
        self,
        predictions: list,
        references: list,
        rouge_types: Optional[list] = None,
        use_aggregator: Optional[bool] = None,
        use_stemmer: Optional[bool] = None,
        tokenizer: Optional[Callable[[str], list]] = None,
    ) -> dict:
        defaults = {"rouge_types": _DEFAULT_TYPES, "use_aggregator": True, "use_stemmer": False, "tokenizer": None}
        opts = self._resolve_options(locals(), defaults)
        types = _check_rouge_types(opts["rouge_types"])
        require_some(predictions, "predictions", "rouge")

        tok = opts["tokenizer"]
        if tok is not None and not hasattr(tok, "tokenize"):
            tok = _CallableTokenizer(tok)
        scorer = rouge_scorer.RougeScorer(rouge_types=types, use_stemmer=bool(opts["use_stemmer"]), tokenizer=tok)

        per_example = []
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            if isinstance(reference, str):
                per_example.append(scorer.score(reference, prediction))
            elif len(reference) == 0:
                raise ValueError(f"rouge: example {index} has an empty list of references; give at least one")
            else:
                per_example.append(scorer.score_multi(list(reference), prediction))

        if opts["use_aggregator"]:
            return {key: float(numpy.mean([score[key].fmeasure for score in per_example])) for key in types}
        return {key: [float(score[key].fmeasure) for score in per_example] for key in types}
