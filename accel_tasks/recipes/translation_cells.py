"""Translation cells: a source or target cell as text, several references as metric input, and untruncated
source token counts.

Why a module of its own: these are plain functions of cell values, used by the recipe's map-style and streamed
paths alike; ``source_token_counts`` must be a module-level function so that datasets can cache its result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def text_of(value: Any) -> Optional[str]:
    """A source cell as a string; None when the cell is missing."""
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def text_list(value: Any) -> Optional[list[str]]:
    """A target cell as a list of strings (one translation, or several references); None when missing."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, str) else str(v) for v in value if v is not None]
    return [text_of(value)]


def metric_references(references: list[list[str]]) -> list:
    """Metric input: one string each when every example has one reference, else equal-length lists padded with None.

    sacreBLEU and chrF need the same number of references per example and skip None entries, whereas an empty
    string would count as a reference (and change BLEU's brevity penalty).
    """
    if all(len(refs) == 1 for refs in references):
        return [refs[0] for refs in references]
    width = max(len(refs) for refs in references)
    return [list(refs) + [None] * (width - len(refs)) for refs in references]


def source_token_counts(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, column: str, lang: Optional[str], prefix: str
) -> dict[str, list]:
    """Untruncated token count of each source (a module-level function, so datasets can cache the result)."""
    cells = (
        batch[column] if lang is None else [row.get(lang) if isinstance(row, dict) else None for row in batch[column]]
    )
    texts = [prefix + (text_of(cell) or "") for cell in cells]
    return {"source_tokens": [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]}
