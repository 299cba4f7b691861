"""The code the shipped metric scripts share: load-time options, metric info, features and input checks.

It lives here, outside the metric folders, because `evaluate.load` copies only the script itself into its
modules cache: a relative import would need a copy of this file beside every script, while an absolute import
of the installed package (`from accel_tasks.metrics.module_support import ...`) is an ordinary library import
that evaluate checks and Python resolves, so all seven scripts run this one copy, offline.

Nothing here subclasses `evaluate.EvaluationModule`: evaluate takes the first such class it finds in a script's
namespace as that script's metric, and these names are imported into every script ahead of its own class.
"""

from __future__ import annotations

import inspect
import re
import string
from dataclasses import dataclass
from typing import Any, Callable, Union

import datasets
import evaluate

FeaturesSpec = Union[datasets.Features, list]

MORRIS_2004_CITATION = """\
@inproceedings{morris2004,
    author = {Morris, Andrew and Maier, Viktoria and Green, Phil},
    title = {From WER and RIL to MER and WIL: improved evaluation measures for connected speech recognition},
    year = {2004},
    booktitle = {Interspeech 2004},
}
"""

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


@dataclass(frozen=True)
class MetricCard:
    """What a shipped metric tells evaluate about itself, so its class body holds only the scoring.

    `metric` starts every error message; `features` is called for each MetricInfo so no two modules share one
    Features object; `options` are the compute() options that evaluate.load() may also take as defaults.
    """

    metric: str
    description: str
    inputs_description: str
    citation: str
    features: Callable[[], FeaturesSpec]
    codebase_urls: tuple[str, ...]
    reference_urls: tuple[str, ...]
    options: tuple[str, ...] = ()


class ShippedMetric:
    """Mixin giving a metric its MetricInfo and help text from the card in its class line.

    Use as `class Name(ShippedMetric, evaluate.Metric, card=CARD)`; the card's description and inputs head the
    class docstring through evaluate's `add_start_docstrings`, as the decorator does in the hub scripts.
    """

    _card: MetricCard

    def __init_subclass__(cls, card: MetricCard | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if card is not None:
            cls._card = card
            evaluate.utils.file_utils.add_start_docstrings(card.description, card.inputs_description)(cls)

    def _info(self) -> evaluate.MetricInfo:
        card = self._card
        return evaluate.MetricInfo(
            description=card.description,
            citation=card.citation,
            inputs_description=card.inputs_description,
            features=card.features(),
            codebase_urls=list(card.codebase_urls),
            reference_urls=list(card.reference_urls),
        )


class ShippedMetricWithOptions(ShippedMetric):
    """A ShippedMetric whose compute() options (card.options) may also be given to evaluate.load() as defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._load_options = split_load_options(kwargs, self._card.options, self._card.metric)
        super().__init__(*args, **kwargs)

    def _resolve_options(self, given: dict, defaults: dict) -> dict:
        """compute() arguments beat load options, which beat defaults; None means 'not given', as in the hub API.

        `given` may be compute()'s locals(): only the card's options are read from it.
        """
        opts = dict(defaults)
        opts.update(self._load_options)
        opts.update({key: given[key] for key in self._card.options if given.get(key) is not None})
        return opts


def split_load_options(kwargs: dict, options: tuple, metric: str) -> dict:
    """Pop this metric's options out of evaluate.load()'s init kwargs, which evaluate 0.4 would drop silently."""
    found = {key: kwargs.pop(key) for key in list(kwargs) if key in options}
    known = set(inspect.signature(evaluate.EvaluationModule.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"{metric}: unknown option(s) {unknown}; valid options are {list(options)}")
    return found


def text_features() -> datasets.Features:
    """One string prediction and one string reference per example."""
    return datasets.Features(
        {
            "predictions": datasets.Value("string", id="sequence"),
            "references": datasets.Value("string", id="sequence"),
        }
    )


def multi_reference_features(references_id: str | None = None) -> list:
    """Several references per prediction first, then one string each: the hub's two accepted formats."""
    several = datasets.Features(
        {
            "predictions": datasets.Value("string", id="sequence"),
            "references": datasets.Sequence(datasets.Value("string", id="sequence"), id=references_id),
        }
    )
    return [several, text_features()]


def squad_features(no_answer_probability: bool = False) -> datasets.Features:
    """SQuAD-format predictions and references; v2 predictions also carry no_answer_probability (float64)."""
    prediction = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
    if no_answer_probability:
        prediction["no_answer_probability"] = datasets.Value("float64")
    answers = datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")})
    return datasets.Features(
        {"predictions": prediction, "references": {"id": datasets.Value("string"), "answers": answers}}
    )


def require_some(items: list, what: str, metric: str) -> None:
    """Fail clearly on an empty input, which the scorers would answer with an obscure error or a zero division."""
    if not items:
        raise ValueError(f"{metric}: no {what} to score; pass at least one prediction/reference pair")


def reference_streams(references: list, metric: str, scorer: str) -> list:
    """Transpose per-example references into sacrebleu's per-reference streams, checking they are rectangular."""
    if isinstance(references[0], str):
        references = [[ref] for ref in references]
    width = len(references[0])
    if width == 0:
        raise ValueError(f"{metric}: example 0 has no reference; give every prediction at least one")
    for index, refs in enumerate(references):
        if len(refs) != width:
            raise ValueError(
                f"{metric}: example {index} has {len(refs)} references but example 0 has {width}; "
                f"{scorer} needs the same number of references for every prediction"
            )
    return [[refs[i] for refs in references] for i in range(width)]


def check_texts(predictions: list, references: list, metric: str) -> None:
    """Fail on inputs jiwer would reject obscurely (or divide by zero on), naming the first bad index."""
    require_some(references, "references", metric)
    for index, reference in enumerate(references):
        if reference is None or not reference.strip():
            raise ValueError(
                f"{metric}: reference {index} is empty; {metric.upper()} is undefined for an empty reference, "
                "so drop that example or give it a non-empty transcription"
            )
    for index, prediction in enumerate(predictions):
        if prediction is None:
            raise ValueError(f"{metric}: prediction {index} is None; use '' for an empty transcription")


def error_rate(
    metric: str, align: Callable[[list, list], Any], joiner: str, predictions: list, references: list, concatenate: bool
) -> dict:
    """WER and CER differ only in jiwer's alignment unit (`align`) and in how concatenate_texts joins texts."""
    check_texts(predictions, references, metric)
    if concatenate:
        predictions, references = [joiner.join(predictions)], [joiner.join(references)]
    output = align(list(references), list(predictions))
    return {
        metric: float(getattr(output, metric)),
        "substitutions": int(output.substitutions),
        "deletions": int(output.deletions),
        "insertions": int(output.insertions),
        "hits": int(output.hits),
    }


def normalize_answer(text: str) -> str:
    """Official SQuAD normalisation: lowercase, drop punctuation, drop articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def unique_ids(items: list, what: str, metric: str) -> dict:
    """Map id -> item, refusing duplicates (the official script reads ids from a JSON object, so they are unique)."""
    by_id = {}
    for item in items:
        if item["id"] in by_id:
            raise ValueError(f"{metric}: {what} id {item['id']!r} appears more than once; ids must be unique")
        by_id[item["id"]] = item
    return by_id
