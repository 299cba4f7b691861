"""Eval batches under a token budget and their split across processes.

Why: a fixed eval batch size is a compromise between the longest inputs (which must fit) and the shortest
(which would fit many times over). ``eval.max_tokens_per_batch`` cuts the length-sorted order into batches
whose padded size (rows x longest row) stays under a budget: many short inputs in one batch, few long ones.
Batches of varying size cannot go through accelerate's batch sharding (``gather_for_metrics`` trims by a
fixed total batch size), so :class:`BatchPlan` deals them to the processes itself and remembers which
example each gathered row is: every example is counted once and put back in input order.

Greedy decoding that drops finished rows is :mod:`accel_tasks.decoding`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    pass


def token_budget_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices longest first, cut into batches whose rows x longest row is at most ``max_tokens``.

    A row longer than the budget on its own gets a batch of its own (it has to be scored). The order inside
    and across batches is the stable longest-first order, so a too-large batch shows itself at once.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order.tolist():
        length = max(int(lengths[index]), 1)
        if current and (len(current) + 1) * max(longest, length) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


def padded_tokens(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """Positions the batches fill once each is padded to its longest row."""
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)


@dataclass
class BatchPlan:
    """Which batch each process runs at each step, so that every process runs the same number of steps.

    Batch ``k`` goes to process ``k % num_processes`` at step ``k // num_processes``. A process that has no
    batch left at the last step runs a filler batch (the first batch again) whose rows are dropped after the
    gather: collectives (and ``synced_gpus`` generation) need every process at every step.
    """

    batches: list[list[int]]
    num_processes: int

    @property
    def steps(self) -> int:
        return math.ceil(len(self.batches) / self.num_processes) if self.batches else 0

    def batch_for(self, process_index: int, step: int) -> tuple[list[int], bool]:
        """(feature indices, real) for one process at one step; real is False for a filler batch."""
        k = step * self.num_processes + process_index
        if k < len(self.batches):
            return self.batches[k], True
        return self.batches[0], False

    def local_batches(self, process_index: int) -> list[list[int]]:
        return [self.batch_for(process_index, step)[0] for step in range(self.steps)]

    def gathered_rows(self, step: int, padded_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """For a step's gather (each process's rows padded to ``padded_rows``, process 0 first):
        (positions in the gathered array that are real rows, the feature index of each)."""
        positions, indices = [], []
        for rank in range(self.num_processes):
            batch, real = self.batch_for(rank, step)
            if real:
                positions.extend(range(rank * padded_rows, rank * padded_rows + len(batch)))
                indices.extend(batch)
        return np.asarray(positions, dtype=np.int64), np.asarray(indices, dtype=np.int64)


class PlannedBatches:
    """A torch batch sampler over one process's batches of a :class:`BatchPlan` (fillers included)."""

    def __init__(self, plan: BatchPlan, process_index: int) -> None:
        self.batches = plan.local_batches(process_index)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def place_rows(parts: list[tuple[np.ndarray, np.ndarray]], count: int, fill: float) -> np.ndarray:
    """One array of ``count`` rows in feature order from (feature indices, rows) pieces of varying width.

    Raises when a feature is missing or appears twice: each example is counted exactly once.
    """
    width = max((rows.shape[1] for _, rows in parts if rows.ndim > 1), default=None)
    first = parts[0][1]
    shape = (count,) if first.ndim == 1 else (count, width, *first.shape[2:])
    out = np.full(shape, fill, dtype=first.dtype)
    seen = np.zeros(count, dtype=np.int64)
    for indices, rows in parts:
        if rows.ndim == 1:
            out[indices] = rows
        else:
            out[indices, : rows.shape[1]] = rows
        np.add.at(seen, indices, 1)
    if not (seen == 1).all():
        missing, repeated = int((seen == 0).sum()), int((seen > 1).sum())
        raise RuntimeError(f"eval rows: {missing} features missing and {repeated} counted more than once")
    return out
