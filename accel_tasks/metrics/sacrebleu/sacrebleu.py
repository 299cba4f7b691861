"""SacreBLEU as an offline evaluate module: the hub `sacrebleu` inputs and output keys, via sacrebleu.corpus_bleu.

Options may be given to `compute(...)` (as the hub module does with evaluate 0.4) or to
`evaluate.load(path, tokenize="zh", ...)`, where they become defaults for every compute call.
"""

import inspect
from typing import Any, Optional

import datasets
import evaluate
import sacrebleu as scb
from sacrebleu.metrics import BLEU

_OPTIONS = ("smooth_method", "smooth_value", "force", "lowercase", "tokenize", "use_effective_order")

_DESCRIPTION = """\
SacreBLEU (Post, 2018): corpus BLEU on detokenized text with a fixed, named tokenization, so scores are comparable.
"""

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    pages = "186--191",
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): detokenized translations.
    references (list of list of str): references per prediction, the same number for every prediction
        (sacrebleu needs full reference streams); a list of str means one reference each.
    smooth_method (str): 'exp' (default), 'floor', 'add-k' or 'none'.
    smooth_value (float): for 'floor' (default 0.1) and 'add-k' (default 1).
    force (bool): score even if the input looks tokenized. Default False.
    lowercase (bool): case-insensitive BLEU. Default False.
    tokenize (str): '13a' (default), 'intl', 'zh', 'char', 'none', 'ja-mecab', 'ko-mecab', 'spm', 'flores101',
        'flores200' (the last five need extra packages).
    use_effective_order (bool): ignore n-gram orders with no matches (for sentence-level BLEU). Default False.
Returns:
    score, counts, totals, precisions, bp, sys_len, ref_len (as sacrebleu's BLEUScore).
Example:
    >>> bleu = evaluate.load("/path/to/accel_tasks/metrics/sacrebleu")
    >>> bleu.compute(predictions=["hello there general kenobi"], references=[["hello there general kenobi"]])["score"]
    100.00000000000004
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
        raise ValueError("sacrebleu: example 0 has no reference; give every prediction at least one")
    for index, refs in enumerate(references):
        if len(refs) != width:
            raise ValueError(
                f"sacrebleu: example {index} has {len(refs)} references but example 0 has {width}; "
                "sacrebleu needs the same number of references for every prediction"
            )
    return [[refs[i] for refs in references] for i in range(width)]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Sacrebleu(evaluate.Metric):
    """Corpus BLEU with sacrebleu's sufficient statistics, hub-compatible inputs and keys."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._load_options = _split_load_options(kwargs, _OPTIONS, "sacrebleu")
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
            codebase_urls=["https://github.com/mjpost/sacreBLEU"],
            reference_urls=["https://aclanthology.org/W18-6319"],
        )

    def _compute(
        self,
        predictions: list,
        references: list,
        smooth_method: Optional[str] = None,
        smooth_value: Optional[float] = None,
        force: Optional[bool] = None,
        lowercase: Optional[bool] = None,
        tokenize: Optional[str] = None,
        use_effective_order: Optional[bool] = None,
    ) -> dict:
        given = {
            "smooth_method": smooth_method,
            "smooth_value": smooth_value,
            "force": force,
            "lowercase": lowercase,
            "tokenize": tokenize,
            "use_effective_order": use_effective_order,
        }
        opts = {"smooth_method": "exp", "force": False, "lowercase": False, "use_effective_order": False}
        opts.update(self._load_options)
        opts.update({key: value for key, value in given.items() if value is not None})
        if opts["smooth_method"] not in BLEU.SMOOTH_DEFAULTS:
            raise ValueError(
                f"sacrebleu: unknown smooth_method {opts['smooth_method']!r}; use one of {sorted(BLEU.SMOOTH_DEFAULTS)}"
            )
        if opts.get("tokenize") is not None and opts["tokenize"] not in BLEU.TOKENIZERS:
            raise ValueError(f"sacrebleu: unknown tokenize {opts['tokenize']!r}; use one of {sorted(BLEU.TOKENIZERS)}")
        if not predictions:
            raise ValueError("sacrebleu: no predictions to score; pass at least one prediction/reference pair")

        output = scb.corpus_bleu(predictions, _reference_streams(references), **opts)
        return {
            "score": output.score,
            "counts": output.counts,
            "totals": output.totals,
            "precisions": output.precisions,
            "bp": output.bp,
            "sys_len": output.sys_len,
            "ref_len": output.ref_len,
        }
