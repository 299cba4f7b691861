"""Read eval features' `offset_mapping` into a context-token mask and a character lookup, fast.

Postprocessing needs, for every feature, which positions are context tokens (all of them) and the
character span of a few chosen positions. Touching every offset from Python would cost more than the
whole vectorised search, so:
- a `datasets.Dataset` is read through Arrow (no Python objects per token);
- Python lists whose context tokens form one contiguous run per feature (what `prepare_eval_features`
  produces) are reduced to (first, last) context positions with C-level list operations, and
  characters are looked up only for the chosen positions;
- anything else is flattened once (general fallback).
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from itertools import chain, compress, repeat
from typing import Any, Sequence

import numpy as np

from accel_tasks.recipes.qa.errors import QADataError


class ContextOffsets(ABC):
    """Per-feature context positions and their character spans."""

    lengths: np.ndarray

    @abstractmethod
    def mask(self, width: int) -> np.ndarray:
        """(features, width) bool: True where the position is a context token."""

    @abstractmethod
    def chars(self, feature: np.ndarray, start_pos: np.ndarray, end_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Character start of `start_pos` and character end of `end_pos` in each given feature."""


class FlatOffsets(ContextOffsets):
    """All tokens flattened: validity and character arrays, one entry per token of every feature."""

    def __init__(self, lengths: np.ndarray, valid: np.ndarray, values: np.ndarray) -> None:
        if values.size != 2 * int(valid.sum()):
            raise QADataError("every non-None entry of offset_mapping must be a (start_char, end_char) pair")
        self.lengths = lengths
        self.valid = valid
        self.token_start = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        pairs = values.reshape(-1, 2)
        self.start_chars = np.full(valid.size, -1, dtype=np.int64)
        self.end_chars = np.full(valid.size, -1, dtype=np.int64)
        self.start_chars[valid] = pairs[:, 0]
        self.end_chars[valid] = pairs[:, 1]

    def mask(self, width: int) -> np.ndarray:
        grid = np.zeros((self.lengths.size, width), dtype=bool)
        # Row-major order of the in-length cells is exactly the order of the flattened tokens.
        grid[np.arange(width)[None, :] < self.lengths[:, None]] = self.valid
        return grid

    def chars(self, feature: np.ndarray, start_pos: np.ndarray, end_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        base = self.token_start[feature]
        return self.start_chars[base + start_pos], self.end_chars[base + end_pos]


class RunOffsets(ContextOffsets):
    """Python lists whose context tokens are one contiguous run per feature; characters read on demand."""

    def __init__(self, offsets: Sequence[Sequence[Any]], first: np.ndarray, last: np.ndarray) -> None:
        self.offsets = offsets
        self.lengths = np.fromiter(map(len, offsets), dtype=np.int64, count=len(offsets))
        self.first, self.last = first, last

    def mask(self, width: int) -> np.ndarray:
        positions = np.arange(width)[None, :]
        return (positions >= self.first[:, None]) & (positions <= self.last[:, None])

    def chars(self, feature: np.ndarray, start_pos: np.ndarray, end_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self.offsets
        starts = [rows[f][p][0] for f, p in zip(feature.tolist(), start_pos.tolist())]
        ends = [rows[f][p][1] for f, p in zip(feature.tolist(), end_pos.tolist())]
        return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)


def _context_run(offsets: Sequence[Any]) -> tuple[int, int] | None:
    """(first, last) context position when the non-None entries are contiguous, else None."""
    n = len(offsets)
    first = 0
    while first < n and offsets[first] is None:
        first += 1
    last = n - 1
    while last >= first and offsets[last] is None:
        last -= 1
    # list.count runs in C; a gap of None inside the run makes the counts disagree.
    return (first, last) if last - first + 1 == n - offsets.count(None) else None


def _from_arrow(features: Any) -> FlatOffsets:
    import pyarrow as pa
    import pyarrow.compute as pc

    outer = features.with_format("arrow")["offset_mapping"]
    outer = outer.combine_chunks() if isinstance(outer, pa.ChunkedArray) else outer
    lengths = pc.fill_null(pc.list_value_length(outer), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    inner = outer.flatten()
    valid = inner.is_valid().to_numpy(zero_copy_only=False)
    return FlatOffsets(lengths, valid, inner.flatten().to_numpy(zero_copy_only=False).astype(np.int64))


def _from_lists(offsets: Sequence[Sequence[Any]]) -> ContextOffsets:
    offsets = [o if isinstance(o, list) else list(o) for o in offsets]
    runs = [_context_run(o) for o in offsets]
    if all(run is not None for run in runs):
        first = np.fromiter((r[0] for r in runs), dtype=np.int64, count=len(runs))
        last = np.fromiter((r[1] for r in runs), dtype=np.int64, count=len(runs))
        return RunOffsets(offsets, first, last)
    lengths = np.fromiter(map(len, offsets), dtype=np.int64, count=len(offsets))
    flat = list(chain.from_iterable(offsets))
    valid = np.fromiter(map(operator.is_not, flat, repeat(None)), dtype=bool, count=len(flat))
    values = np.fromiter(chain.from_iterable(compress(flat, map(operator.is_not, flat, repeat(None)))), dtype=np.int64)
    return FlatOffsets(lengths, valid, values)


def read_offsets(features: Any) -> ContextOffsets:
    """Context mask and character lookup from a Dataset or a dict/Mapping with an `offset_mapping` column."""
    names = getattr(features, "column_names", None) or list(features.keys())
    if "offset_mapping" not in names:
        raise QADataError(
            f"postprocessing needs an 'offset_mapping' column (has: {', '.join(names)}); build eval "
            "features with prepare_eval_features and keep example_id and offset_mapping"
        )
    if hasattr(features, "with_format"):
        return _from_arrow(features)
    return _from_lists(features["offset_mapping"])
