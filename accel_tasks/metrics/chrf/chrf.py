"""chrF / chrF++ as an offline evaluate module: the hub `chrf` inputs and output keys, via sacrebleu's CHRF.

Options may be given to `compute(...)` or to `evaluate.load(path, word_order=2, ...)`, where they become defaults.
"""

import inspect
from typing import Any, Optional

import datasets
import evaluate
from sacrebleu.metrics import CHRF

_OPTIONS = ("char_order", "word_order", "beta", "lowercase", "whitespace", "eps_smoothing")

_DESCRIPTION = """\
chrF (Popovic, 2015) is an F-score over character n-grams; chrF++ (word_order=2) adds word uni- and bigrams.
Computed with sacrebleu's CHRF at corpus level.
"""

_CITATION = """\
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovic, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
    pages = "392--395",
}
"""

_KWARGS_DESCRIPTION = """
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
"""


def _split_load_options(kwargs: dict, options: tuple, metric: str) -> dict:
    """Pop this metric's options out of evaluate.load()'s init kwargs, which evaluate 0.4 would drop silently."""
    found = {key: kwargs.pop(key) for key in list(kwargs) if key in options}
    known = set(inspect.signature(evaluate.EvaluationModule.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"{metric}: unknown option(s) {unknown}; valid options are {list(options)}")
    return found


def _reference_streams(references: list) -> list:
    """Transpose per-example references into sacrebleu's per-reference streams, checking they are rectangular."""
    if isinstance(references[0], str):
        references = [[ref] for ref in references]
    width = len(references[0])
    if width == 0:
        raise ValueError("chrf: example 0 has no reference; give every prediction at least one")
    for index, refs in enumerate(references):
        if len(refs) != width:
            raise ValueError(
                f"chrf: example {index} has {len(refs)} references but example 0 has {width}; "
                "sacrebleu's chrF needs the same number of references for every prediction"
            )
    return [[refs[i] for refs in references] for i in range(width)]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ChrF(evaluate.Metric):
    """Corpus chrF(++), hub-compatible inputs and keys."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._load_options = _split_load_options(kwargs, _OPTIONS, "chrf")
        super().__init__(*args, **kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Sequence(datasets.Value("string", id="sequence"), id="references"),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Value("string", id="sequence"),
                    }
                ),
            ],
            codebase_urls=["https://github.com/mjpost/sacreBLEU#chrf--chrf"],
            reference_urls=["https://aclanthology.org/W15-3049", "https://aclanthology.org/W17-4770"],
        )

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
        given = {
            "char_order": char_order,
            "word_order": word_order,
            "beta": beta,
            "lowercase": lowercase,
            "whitespace": whitespace,
            "eps_smoothing": eps_smoothing,
        }
        opts = {
            "char_order": CHRF.CHAR_ORDER,
            "word_order": CHRF.WORD_ORDER,
            "beta": CHRF.BETA,
            "lowercase": False,
            "whitespace": False,
            "eps_smoothing": False,
        }
        opts.update(self._load_options)
        opts.update({key: value for key, value in given.items() if value is not None})
        for key in ("char_order", "word_order", "beta"):
            if isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < 0:
                raise ValueError(f"chrf: {key} must be a non-negative integer, got {opts[key]!r}")
        if opts["char_order"] + opts["word_order"] == 0:
            raise ValueError("chrf: char_order and word_order are both 0; set char_order (default 6) or word_order")
        if not predictions:
            raise ValueError("chrf: no predictions to score; pass at least one prediction/reference pair")

        output = CHRF(**opts).corpus_score(predictions, _reference_streams(references))
        return {
            "score": output.score,
            "char_order": output.char_order,
            "word_order": output.word_order,
            "beta": output.beta,
        }
