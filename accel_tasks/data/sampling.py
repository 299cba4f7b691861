"""Batch order by length: training's length-grouped sampler and the lengths both it and eval ordering use.

Why: dynamic padding pads every batch to its longest row, so batches of mixed lengths spend much of their
compute on padding. HF Trainer's ``group_by_length`` answers with shuffled mega-batches sorted by length;
this is the same order (same rules, so a user switching from Trainer gets the batches they expect),
seeded per epoch so that a resumed run replays exactly the batches an uninterrupted one would see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    import datasets

# HF's mega-batch: up to 50 batches, and at least four batches' worth of rows per mega-batch.
MAX_MEGA_BATCH_MULT = 50


def feature_lengths(features: datasets.Dataset, column: str) -> Optional[np.ndarray]:
    """Length of each feature's ``column`` (token ids, audio samples); None when the column is absent."""
    if column not in features.column_names:
        return None
    return np.fromiter((len(x) for x in features[column]), dtype=np.int64, count=len(features))


def length_grouped_indices(lengths: Sequence[int], batch_size: int, seed: int) -> list[int]:
    """A random permutation cut into mega-batches, each sorted longest first; the longest row of all goes first.

    Mirrors transformers' ``get_length_grouped_indices``: batches drawn in order from this list hold rows
    of similar length, the epoch stays random at the mega-batch level, and a too-large batch fails at once.
    """
    import torch

    count = len(lengths)
    mult = min(count // (batch_size * 4), MAX_MEGA_BATCH_MULT) or 1
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(count, generator=generator).tolist()
    size = mult * batch_size
    megabatches = [sorted(indices[i : i + size], key=lambda k: lengths[k], reverse=True) for i in range(0, count, size)]
    if not megabatches:
        return []
    longest = max(range(len(megabatches)), key=lambda m: lengths[megabatches[m][0]])
    megabatches[0][0], megabatches[longest][0] = megabatches[longest][0], megabatches[0][0]
    return [index for megabatch in megabatches for index in megabatch]


class LengthGroupedSampler:
    """``train.group_by_length``: a torch Sampler whose order depends only on (seed, epoch).

    ``batch_size`` is the global batch (per-process batch x processes): accelerate deals consecutive batches
    to the processes, so neighbours in one sorted mega-batch land on different ranks at the same step.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by accelerate's prepared loader at each epoch (and again before a resume's skip)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(length_grouped_indices(self.lengths, self.batch_size, self.seed + self.epoch))


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions when each batch is padded to its longest row (what dynamic padding costs)."""
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches if batch)
    real = sum(lengths[i] for batch in batches for i in batch)
    return 1.0 - real / padded if padded else 0.0
