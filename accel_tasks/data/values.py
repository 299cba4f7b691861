"""The values of a raw split's text columns, checked before the model loads: a null or a non-string value where a
recipe reads text is refused with the rows named.

Why refuse and not coerce: a null summary became an empty target and a number in a document a TypeError deep in
tokenisation (under several processes, on every rank); trained on silently, a column of nulls even ran to the end
with a falling loss. Which columns hold text is the recipe's answer (``Recipe.string_columns``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from accel_tasks.config import DataConfig
from accel_tasks.errors import ConfigError, list_rows

if TYPE_CHECKING:
    import datasets


def check_text_values(dataset: Any, columns: Mapping[str, str], where: str) -> None:
    """Every value of each text column (column -> the option naming it) is a string; else one line naming the
    rows (1-based, in the order of the data) and what they hold. Streams are checked as they are read instead."""
    import datasets

    if not isinstance(dataset, datasets.Dataset):
        return
    for column, option in columns.items():
        if column not in dataset.column_names:
            continue  # check_columns names a missing column
        bad = _rows_without_text(dataset, column)
        if bad:
            shown = list_rows([f"{row + 1} ({what})" for row, what in bad], quote=False)
            raise ConfigError(
                f"{where}: column {column!r} ({option}) holds no text in {len(bad)} of {len(dataset)} rows: "
                f"{'rows' if len(bad) > 1 else 'row'} {shown}; every row needs a string there: fix or remove them"
            )


def _rows_without_text(dataset: datasets.Dataset, column: str) -> list[tuple[int, str]]:
    """(row index, what it holds) for each value that is not a string: nulls found in Arrow without reading the
    strings; any other type (datasets stores a mixed column as Json) read row by row."""
    import pyarrow.compute as pc
    from datasets import Value

    feature = dataset.features[column]
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        nulls = pc.indices_nonzero(pc.is_null(dataset.with_format("arrow")[column])).to_pylist()
        return [(row, "null") for row in nulls]
    return [(row, _describe(value)) for row, value in enumerate(dataset[column]) if not isinstance(value, str)]


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 20 else text[:17] + '...'}"


def split_source(data_cfg: DataConfig, split: str) -> str:
    """'the train data (data.train_file 'x.jsonl')': a split named with where it came from, for messages."""
    path = getattr(data_cfg, f"{split}_file", None)
    if path:
        return f"the {split} data (data.{split}_file {path!r})"
    if data_cfg.name:
        return f"the {split} data ({getattr(data_cfg, f'{split}_split', split)!r} split of data.name={data_cfg.name!r})"
    return f"the {split} data (the bundled sample)"
