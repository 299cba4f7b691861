"""Packing decoder-only training examples into rows of a token budget, each example attending only to itself.

Why: most of a decoder-only summarization example is prompt, lengths vary widely, and padded batches spend their
compute on padding; packed rows hold several examples end to end (TRL's ``packing=True``). Rows are filled by best
fit decreasing (longest example first, each into the row with the least room that still holds it), which packs
tighter than first fit and keeps every example whole. Positions restart at each example; the attention mask is
block-diagonal causal (measured on these machines: restarting position ids alone do NOT keep an example from seeing
the one before it under sdpa or eager in transformers 5.25, a 4D mask does; flash-attention kernels instead find the
examples from the restarting position ids). The first token of every example carries no label, so no example is
trained to predict from the one before it: a packed row's loss and gradients are those of its examples unpacked.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import TYPE_CHECKING, Any, Optional

from accel_tasks.errors import ConfigError
from accel_tasks.recipe_types import PAD_INT

if TYPE_CHECKING:
    import torch


def best_fit_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Example indices per row, by best fit decreasing; deterministic (ties by index) so a resumed run packs alike."""
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ConfigError(
            f"train.packing_length={capacity} is shorter than {len(too_long)} training examples (the longest has "
            f"{max(lengths)} tokens); raise train.packing_length or lower task.max_source_length"
        )
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row), sorted: the best fit is the first with enough room
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        at = bisect_left(free, (lengths[index], -1))
        if at < len(free):
            room, row = free.pop(at)
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(index)
        insort(free, (room - lengths[index], row))
    return rows


def pack_rows(features: dict[str, list], capacity: int) -> tuple[dict[str, list], float]:
    """Packed rows (input_ids, labels, position_ids) of training features, and the packing efficiency (real tokens /
    row capacity). Rows are ordered as best fit made them; the loader shuffles them."""
    ids, labels = features["input_ids"], features["labels"]
    rows = best_fit_rows([len(row) for row in ids], capacity)
    packed: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": []}
    for members in rows:
        row_ids: list[int] = []
        row_labels: list[int] = []
        row_positions: list[int] = []
        for index in members:
            row_ids += ids[index]
            row_labels += [PAD_INT] + list(labels[index][1:])  # the first token is never a target
            row_positions += list(range(len(ids[index])))
        packed["input_ids"].append(row_ids)
        packed["labels"].append(row_labels)
        packed["position_ids"].append(row_positions)
    tokens = sum(len(row) for row in ids)
    return packed, tokens / max(len(rows) * capacity, 1)


def packed_batch(features: list[dict[str, Any]], pad_id: int, pad_to_multiple_of: Optional[int]) -> dict[str, Any]:
    """Packed rows → tensors: right padding, restarting position ids, a 2D mask of the real tokens (what token counts
    read); the loss turns it into the block-diagonal mask (:func:`block_causal_mask`) just before the forward."""
    import torch

    length = max(len(f["input_ids"]) for f in features)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of

    def padded(row: list[int], value: int) -> list[int]:
        return list(row) + [value] * (length - len(row))

    return {
        "input_ids": torch.tensor([padded(f["input_ids"], pad_id) for f in features]),
        "labels": torch.tensor([padded(f["labels"], PAD_INT) for f in features]),
        # Padding counts on from its row's last position: one more segment, masked out below.
        "position_ids": torch.tensor(
            [list(f["position_ids"]) + list(range(length - len(f["position_ids"]))) for f in features]
        ),
        "attention_mask": torch.tensor([padded([1] * len(f["input_ids"]), 0) for f in features]),
    }


def block_causal_mask(position_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, 1, length, length) bool, True = attend: a real token sees the real tokens of its own example up to
    itself; a padding position sees only itself (a query with nothing to attend to would give NaN)."""
    import torch

    segments = torch.cumsum((position_ids == 0).long(), dim=1)
    same = segments[:, :, None] == segments[:, None, :]
    length = position_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    real_keys = attention_mask.bool()[:, None, :]
    itself = torch.eye(length, dtype=torch.bool, device=position_ids.device)
    return ((same & causal & real_keys) | itself)[:, None]
