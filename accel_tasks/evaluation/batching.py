"""Eval batches under a token budget, their split across processes, and greedy decoding that drops finished rows.

Why: a fixed eval batch size is a compromise between the longest inputs (which must fit) and the shortest
(which would fit many times over). ``eval.max_tokens_per_batch`` cuts the length-sorted order into batches
whose padded size (rows x longest row) stays under a budget: many short inputs in one batch, few long ones.
Batches of varying size cannot go through accelerate's batch sharding (``gather_for_metrics`` trims by a
fixed total batch size), so :class:`BatchPlan` deals them to the processes itself and remembers which
example each gathered row is: every example is counted once and put back in input order.

Greedy generation runs every row of a batch until its longest output ends. :func:`compacting_greedy` is a
``custom_generate`` decoding loop for ``generate`` that removes rows which have finished from the decoder's
inputs, cache and encoder outputs, so later steps run on the rows still generating; its tokens are the ones
plain greedy ``generate`` returns (tests compare them). It serves only where that holds: greedy search, no
synced GPUs, logits processors and stopping criteria that look at each row on its own.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch


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


# -- greedy decoding that drops finished rows ------------------------------------------------------------

# Logits processors and stopping criteria whose result for a row depends on that row alone (its ids, the
# step, fixed settings): running them on a subset of rows gives each row what the full batch would.
ROW_WISE_PROCESSORS = frozenset(
    {
        "ForcedBOSTokenLogitsProcessor",
        "ForcedEOSTokenLogitsProcessor",
        "MinLengthLogitsProcessor",
        "MinNewTokensLengthLogitsProcessor",
        "NoRepeatNGramLogitsProcessor",
        "RepetitionPenaltyLogitsProcessor",
        "NoBadWordsLogitsProcessor",
        "SequenceBiasLogitsProcessor",
        "SuppressTokensLogitsProcessor",
        "SuppressTokensAtBeginLogitsProcessor",
        "InfNanRemoveLogitsProcessor",
        "ExponentialDecayLengthPenalty",
    }
)
ROW_WISE_CRITERIA = frozenset({"MaxLengthCriteria", "EosTokenCriteria", "MaxTimeCriteria", "StopStringCriteria"})

# Compact once at least this share of the rows still in the batch has finished (and at least one row):
# each compaction copies the cache, so doing it after every finished row costs more than it saves.
COMPACT_SHARE = 0.25


def compaction_applies(model: Any, generation_kwargs: dict[str, Any], synced_gpus: bool) -> bool:
    """Whether :func:`compacting_greedy` may run for this model and these settings (else plain ``generate``)."""
    from transformers.generation.utils import GenerationMixin

    config = getattr(model, "config", None)
    if synced_gpus or config is None or not getattr(config, "is_encoder_decoder", False):
        return False
    # A model with its own generate (Whisper, a PEFT wrapper) may not hand custom_generate on; the loop below
    # uses generate's own prefill and input preparation, which must be there.
    if getattr(type(model), "generate", None) is not GenerationMixin.generate:
        return False
    if not all(
        hasattr(model, name)
        for name in ("_prefill", "prepare_inputs_for_generation", "_update_model_kwargs_for_generation")
    ):
        return False
    base = getattr(model, "generation_config", None)

    def setting(name: str, default: Any) -> Any:
        """The value generate will use: the call's, else the model's generation_config (None there: the default)."""
        for value in (generation_kwargs.get(name), getattr(base, name, None)):
            if value is not None:
                return value
        return default

    return (
        setting("num_beams", 1) == 1
        and not setting("do_sample", False)
        and setting("num_return_sequences", 1) == 1
        and setting("use_cache", True)
        and not setting("return_dict_in_generate", False)
        and setting("penalty_alpha", None) is None
        and setting("prefill_chunk_size", None) is None
    )


def compacting_greedy(
    model: Any,
    input_ids: torch.LongTensor,
    logits_processor: Any,
    stopping_criteria: Any,
    generation_config: Any,
    synced_gpus: bool = False,
    streamer: Any = None,
    **model_kwargs: Any,
) -> torch.LongTensor:
    """Greedy search for ``generate(custom_generate=...)`` that drops rows which have finished.

    The same steps as transformers' ``_sample`` with ``do_sample=False``: prefill, then one token per step
    through the logits processors and stopping criteria, finished rows padded. Rows that have finished are
    taken out of every batch-shaped model input (decoder ids, attention masks, encoder outputs, the cache)
    once they are a quarter of the batch. Falls back to the plain loop's behaviour (no compaction) where a
    processor, criterion or model input is not known to be row-wise.
    """
    import torch

    if synced_gpus or streamer is not None or generation_config.do_sample or generation_config.return_dict_in_generate:
        raise ValueError(
            "compacting_greedy serves plain greedy search only (no sampling, streamer, dict output or synced GPUs)"
        )
    can_compact = all(type(p).__name__ in ROW_WISE_PROCESSORS for p in logits_processor) and all(
        type(c).__name__ in ROW_WISE_CRITERIA for c in stopping_criteria
    )
    pad_token_id = generation_config._pad_token_tensor
    batch_size = input_ids.shape[0]
    device = input_ids.device
    next_length = 1 if model_kwargs.get("use_cache", True) else None
    outputs = model._prefill(input_ids, generation_config, model_kwargs, is_first_iteration=True)
    decode_context = getattr(model, "_optimize_model_for_decode", contextlib.nullcontext)
    rules = _DecodeRules(logits_processor, stopping_criteria, pad_token_id, next_length, can_compact)
    with decode_context():
        input_ids, rows, finished = _greedy_steps(model, outputs, input_ids, model_kwargs, rules)
    final_length = input_ids.shape[1]
    out = torch.full(
        (batch_size, final_length),
        int(pad_token_id) if pad_token_id is not None else 0,
        dtype=input_ids.dtype,
        device=device,
    )
    for i, row in enumerate(rows.tolist()):
        finished[row] = input_ids[i]
    for row, ids in finished.items():
        out[row, : ids.shape[0]] = ids
    return out


@dataclass(frozen=True)
class _DecodeRules:
    """What every decode step applies: generate's logits processors and stopping criteria, the pad id of finished
    rows, the sequence length of a step's new input (None without a cache), and whether finished rows may be taken
    out of the batch (every processor and criterion row-wise)."""

    logits_processor: Any
    stopping_criteria: Any
    pad_token_id: Optional[torch.Tensor]
    next_length: Optional[int]
    can_compact: bool


def _greedy_steps(
    model: Any, outputs: Any, input_ids: torch.LongTensor, model_kwargs: dict[str, Any], rules: _DecodeRules
) -> tuple[torch.LongTensor, torch.Tensor, dict[int, torch.Tensor]]:
    """The decode steps after the prefill: (ids of the rows still in the batch, their batch positions, finished
    rows)."""
    import torch

    logits_processor, stopping_criteria, pad_token_id = (
        rules.logits_processor,
        rules.stopping_criteria,
        rules.pad_token_id,
    )
    next_length, can_compact = rules.next_length, rules.can_compact
    device = input_ids.device
    has_eos_stopping = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
    # Rows taken out, by batch position; rows[i] is the batch position of row i of the shrinking batch.
    finished: dict[int, torch.Tensor] = {}
    rows = torch.arange(input_ids.shape[0], device=device)
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.long, device=device)
    first = True
    while True:
        if not first:
            model_inputs = model.prepare_inputs_for_generation(
                input_ids, next_sequence_length=next_length, **model_kwargs
            )
            outputs = model(**model_inputs, return_dict=True)
        first = False
        model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder=True)
        logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=device)
        del outputs
        scores = logits_processor(input_ids, logits)
        next_tokens = torch.argmax(scores, dim=-1)
        if has_eos_stopping:
            next_tokens = next_tokens * unfinished + pad_token_id * (1 - unfinished)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        unfinished = unfinished & ~stopping_criteria(input_ids, None)
        if unfinished.max() == 0:
            break
        done = int((unfinished == 0).sum())
        if can_compact and done and done >= COMPACT_SHARE * len(rows):
            keep = torch.nonzero(unfinished, as_tuple=True)[0]
            compacted = _select_rows(model_kwargs, keep, len(rows))
            if compacted is None:
                can_compact = False
                continue
            for i in torch.nonzero(unfinished == 0, as_tuple=True)[0].tolist():
                finished[int(rows[i])] = input_ids[i]
            model_kwargs, rows, input_ids, unfinished = compacted, rows[keep], input_ids[keep], unfinished[keep]
    return input_ids, rows, finished


def _select_rows(model_kwargs: dict[str, Any], keep: torch.Tensor, batch_size: int) -> Optional[dict[str, Any]]:
    """``model_kwargs`` with only the ``keep`` rows of every batch-shaped input; None (nothing changed) if one
    is of a kind not known here."""
    import torch
    from transformers.cache_utils import Cache
    from transformers.utils import ModelOutput

    def known(value: Any) -> bool:
        if isinstance(value, Cache):
            return hasattr(value, "batch_select_indices")
        if isinstance(value, ModelOutput):  # tuples of per-layer states are not requested by eval generation
            return all(item is None or isinstance(item, torch.Tensor) for item in value.values())
        return value is None or isinstance(value, (torch.Tensor, bool, int, float, str))

    if not all(known(value) for value in model_kwargs.values()):
        return None

    def rows_of(item: Any) -> Any:
        return item[keep] if isinstance(item, torch.Tensor) and item.dim() and item.shape[0] == batch_size else item

    selected: dict[str, Any] = {}
    for key, value in model_kwargs.items():
        if isinstance(value, Cache):
            value.batch_select_indices(keep)
            selected[key] = value
        elif isinstance(value, ModelOutput):
            selected[key] = type(value)(**{name: rows_of(item) for name, item in value.items()})
        else:
            selected[key] = rows_of(value)
    return selected
