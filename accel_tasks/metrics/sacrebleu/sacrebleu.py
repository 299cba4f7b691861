"""SacreBLEU as an offline evaluate module: the hub `sacrebleu` inputs and output keys, via sacrebleu.corpus_bleu.

Options may be given to `compute(...)` (as the hub module does with evaluate 0.4) or to
`evaluate.load(path, tokenize="zh", ...)`, where they become defaults for every compute call.
"""

from typing import Optional

import evaluate
import sacrebleu as scb
from sacrebleu.metrics import BLEU

from accel_tasks.metrics.module_support import (
    MetricCard,
    ShippedMetricWithOptions,
    multi_reference_features,
    reference_streams,
    require_some,
)

_CARD = MetricCard(
    metric="sacrebleu",
    description="""\
SacreBLEU (Post, 2018): corpus BLEU on detokenized text with a fixed, named tokenization, so scores are comparable.
""",
    inputs_description="""
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
""",
    citation="""\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    pages = "186--191",
}
""",
    features=lambda: multi_reference_features(references_id="references"),
    codebase_urls=("https://github.com/mjpost/sacreBLEU",),
    reference_urls=("https://aclanthology.org/W18-6319",),
    options=("smooth_method", "smooth_value", "force", "lowercase", "tokenize", "use_effective_order"),
)


class Sacrebleu(ShippedMetricWithOptions, evaluate.Metric, card=_CARD):
    """Corpus BLEU with sacrebleu's sufficient statistics, hub-compatible inputs and keys."""

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
        defaults = {"smooth_method": "exp", "force": False, "lowercase": False, "use_effective_order": False}
        opts = self._resolve_options(locals(), defaults)
        if opts["smooth_method"] not in BLEU.SMOOTH_DEFAULTS:
            raise ValueError(
                f"sacrebleu: unknown smooth_method {opts['smooth_method']!r}; use one of {sorted(BLEU.SMOOTH_DEFAULTS)}"
            )
        if opts.get("tokenize") is not None and opts["tokenize"] not in BLEU.TOKENIZERS:
            raise ValueError(f"sacrebleu: unknown tokenize {opts['tokenize']!r}; use one of {sorted(BLEU.TOKENIZERS)}")
        require_some(predictions, "predictions", "sacrebleu")

        output = scb.corpus_bleu(predictions, reference_streams(references, "sacrebleu", "sacrebleu"), **opts)
        return {
            "score": output.score,
            "counts": output.counts,
            "totals": output.totals,
            "precisions": output.precisions,
            "bp": output.bp,
            "sys_len": output.sys_len,
            "ref_len": output.ref_len,
        }
