"""Summarization: document in, summary out, scored with ROUGE."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError
from ..recipe import EvalOutput, Seq2SeqOptions, Seq2SeqRecipe
from . import PRESETS_DIR, SAMPLES_DIR

if TYPE_CHECKING:
    import datasets
    import numpy as np

# (text column, summary column) of well-known data sets, and of plain files.
KNOWN_COLUMNS = {
    "cnn_dailymail": ("article", "highlights"),
    "abisee/cnn_dailymail": ("article", "highlights"),
    "xsum": ("document", "summary"),
    "EdinburghNLP/xsum": ("document", "summary"),
    "samsum": ("dialogue", "summary"),
    "Samsung/samsum": ("dialogue", "summary"),
}
FALLBACK_COLUMNS = (("text", "summary"), ("document", "summary"), ("article", "highlights"), ("dialogue", "summary"))
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass
class SummarizationOptions(Seq2SeqOptions):
    text_column: Optional[str] = None
    """None: known columns of data.name, else the first of text/summary, document/summary, article/highlights."""
    summary_column: Optional[str] = None
    """The reference summary column; None: the known column of data.name or of plain files."""


def split_sentences(text: str) -> str:
    """One sentence per line, as ROUGE-Lsum expects, without nltk data downloads."""
    return "\n".join(s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip())


class SummarizationRecipe(Seq2SeqRecipe):
    name = "summarization"
    Options = SummarizationOptions
    default_metrics = ("rouge",)
    primary_metric = "rougeL"
    sample_dir = SAMPLES_DIR / "summarization"
    preset_file = PRESETS_DIR / "summarization.yaml"

    def required_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        text, summary = self.columns(column_names)
        return {text: "task.text_column", summary: "task.summary_column"}

    def columns(self, column_names: list[str]) -> tuple[str, str]:
        known = KNOWN_COLUMNS.get(self.cfg.data.name or "")
        if known is None:
            known = next((pair for pair in FALLBACK_COLUMNS if set(pair) <= set(column_names)), None)
        if known is None and not (self.options.text_column and self.options.summary_column):
            raise ConfigError(
                f"cannot tell the text and summary columns apart among {', '.join(column_names)}; "
                "set task.text_column=<col> task.summary_column=<col>"
            )
        known = known or (None, None)
        self.text_column = self.options.text_column or known[0]
        self.summary_column = self.options.summary_column or known[1]
        return self.text_column, self.summary_column

    def source_texts(self, batch: dict[str, list]) -> list[str]:
        return [text or "" for text in batch[self.text_column]]

    def target_texts(self, batch: dict[str, list]) -> list[str]:
        return [text or "" for text in batch[self.summary_column]]

    def postprocess(self, outputs: dict[str, np.ndarray], examples: datasets.Dataset, features: datasets.Dataset) -> EvalOutput:
        result = super().postprocess(outputs, examples, features)
        result.predictions = [split_sentences(p) for p in result.predictions]
        result.references = [split_sentences(r) for r in result.references]
        return result

    def default_metric_kwargs(self, metric: str) -> dict[str, Any]:
        return {"use_stemmer": True} if metric == "rouge" else {}
