"""chrF / chrF++ as an offline evaluate module: the hub `chrf` inputs and output keys, via sacrebleu's CHRF.

Options may be given to `compute(...)` or to `evaluate.load(path, word_order=2, ...)`, where they become defaults.
"""

from typing import Optional

import evaluate
from sacrebleu.metrics import CHRF

from accel_tasks.metrics.module_support import (
    MetricCard,
    ShippedMetricWithOptions,
    multi_reference_features,
    reference_streams,
    require_some,
)

_CARD = MetricCard(
    metric="chrf",
    description="""\
chrF (Popovic, 2015) is an F-score over character n-grams; chrF++ (word_order=2) adds word uni- and bigrams.
Computed with sacrebleu's CHRF at corpus level.
""",
    inputs_description="""
Args:
    predictions (list of str): the hypotheses.
    references (list of list of str): references per prediction, the same number for every prediction;
        a list of str means one reference each.
    char_order (int): character n-gram order. Default 6.
    word_order (int): word n-gram order; 2 gives chrF++. Default 0.
    beta (int): weight of recall relative to precision. Default 2.
    lowercase (bool): case-insensitive. Default False.
    whitespace (bool): keep whitespace in character n-grams. Default False.
    eps_smoothing (bool): epsilon smoothing as in chrF++.py, NLTK and Moses; False uses the effective order
        as sacrebleu does by default. Default False.
Returns:
    score (float, 0-100), char_order, word_order, beta.
Example:
    >>> chrf = evaluate.load("/path/to/accel_tasks/metrics/chrf")
    >>> chrf.compute(predictions=["the cat"], references=[["the cat"]])
    {'score': 100.0, 'char_order': 6, 'word_order': 0, 'beta': 2}
""",
    citation="""\
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovic, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
    pages = "392--395",
}
""",
    features=lambda: multi_reference_features(references_id="references"),
    codebase_urls=("https://github.com/mjpost/sacreBLEU#chrf--chrf",),
    reference_urls=("https://aclanthology.org/W15-3049", "https://aclanthology.org/W17-4770"),
    options=("char_order", "word_order", "beta", "lowercase", "whitespace", "eps_smoothing"),
)


class ChrF(ShippedMetricWithOptions, evaluate.Metric, card=_CARD):
    """Corpus chrF(++), hub-compatible inputs and keys."""

    def _compute(
        self,
        predictions: list,
        references: list,
        char_order: Optional[int] = None,
        word_order: Optional[int] = None,
        beta: Optional[int] = None,
        lowercase: Optional[bool] = None,
        whitespace: Optional[bool] = None,
        eps_smoothing: Optional[bool] = None,
    ) -> dict:
        defaults = {
            "char_order": CHRF.CHAR_ORDER,
            "word_order": CHRF.WORD_ORDER,
            "beta": CHRF.BETA,
            "lowercase": False,
            "whitespace": False,
            "eps_smoothing": False,
        }
        opts = self._resolve_options(locals(), defaults)
        for key in ("char_order", "word_order", "beta"):
            if isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < 0:
                raise ValueError(f"chrf: {key} must be a non-negative integer, got {opts[key]!r}")
        if opts["char_order"] + opts["word_order"] == 0:
            raise ValueError("chrf: char_order and word_order are both 0; set char_order (default 6) or word_order")
        require_some(predictions, "predictions", "chrf")

        output = CHRF(**opts).corpus_score(predictions, reference_streams(references, "chrf", "sacrebleu's chrF"))
        return {
            "score": output.score,
            "char_order": output.char_order,
            "word_order": output.word_order,
            "beta": output.beta,
        }
