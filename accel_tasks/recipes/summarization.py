"""Summarization: document in, summary out, scored with ROUGE."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from accel_tasks.errors import ConfigError
from accel_tasks.recipe import EvalOutput, Seq2SeqOptions, Seq2SeqRecipe
from accel_tasks.recipes import PRESETS_DIR, SAMPLES_DIR

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
    prompt_template: str = "Summarize this document:\n{document}\nSummary:"
    """Decoder-only models: the instruction with the document ({document}); the user turn of the tokenizer's chat
    template, or plain text followed by the summary."""


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
    pipeline_tag = "summarization"
    example_score_name = "ROUGE-L"
    source_field = "document"

    def required_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        text, summary = self.columns(column_names)
        required = {text: "task.text_column"}
        if self.with_references:
            required[summary] = "task.summary_column"
        return required

    def string_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        """Documents and summaries are text in every row: a null or a number is refused before the model loads."""
        return self.required_columns(split, column_names)

    def has_references(self, dataset: datasets.Dataset) -> bool:
        try:
            return self.columns(dataset.column_names)[1] in dataset.column_names
        except ConfigError:  # no known text/summary pair: documents alone
            return False

    def columns(self, column_names: list[str]) -> tuple[str, str]:
        """(text column, summary column) among ``column_names``: the options, else known columns of data.name or
        of plain files. A pure answer (nothing is stored): every hook that needs the columns asks for them.

        Without references only the text column has to be found (a file of documents to summarise).
        """
        known = KNOWN_COLUMNS.get(self.cfg.data.name or "")
        if known is None:
            known = next((pair for pair in FALLBACK_COLUMNS if set(pair) <= set(column_names)), None)
        if known is None and not self.with_references:
            known = next(((text, summary) for text, summary in FALLBACK_COLUMNS if text in column_names), None)
        if known is None and not (
            self.options.text_column and (self.options.summary_column or not self.with_references)
        ):
            wanted = "text and summary columns apart" if self.with_references else "text column"
            fix = (
                "task.text_column=<col> task.summary_column=<col>" if self.with_references else "task.text_column=<col>"
            )
            raise ConfigError(f"cannot tell the {wanted} among {', '.join(column_names)}; set {fix}")
        known = known or (None, None)
        return self.options.text_column or known[0], self.options.summary_column or known[1]

    def source_texts(self, batch: dict[str, list]) -> list[str]:
        return [text or "" for text in batch[self.columns(list(batch))[0]]]

    def target_texts(self, batch: dict[str, list]) -> list[str]:
        return [text or "" for text in batch[self.columns(list(batch))[1]]]

    def postprocess(
        self, outputs: dict[str, np.ndarray], examples: datasets.Dataset, features: datasets.Dataset
    ) -> EvalOutput:
        result = super().postprocess(outputs, examples, features)
        result.predictions = [split_sentences(p) for p in result.predictions]
        if result.scorable:
            result.references = [split_sentences(r) for r in result.references]
        return result

    def default_metric_kwargs(self, metric: str) -> dict[str, Any]:
        return {"use_stemmer": True} if metric == "rouge" else {}

    @classmethod
    def example_scores(cls, records: list[dict]) -> Optional[list[Optional[float]]]:
        """ROUGE-L F-measure of each summary against its reference (stemmed, as the run's rouge metric scores it)."""
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        return [
            None
            if record.get("reference") is None
            else scorer.score(record["reference"], record["prediction"])["rougeL"].fmeasure
            for record in records
        ]
