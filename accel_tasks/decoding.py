"""Greedy decoding that drops finished rows: a ``custom_generate`` loop for ``generate``.

Greedy generation runs every row of a batch until its longest output ends. :func:`compacting_greedy` removes rows
which have finished from the decoder's inputs, cache and encoder outputs, so later steps run on the rows still
generating; its tokens are the ones plain greedy ``generate`` returns (tests compare them). It serves only where
that holds: greedy search, no synced GPUs, logits processors and stopping criteria that look at each row on its own.

Why a module of its own, below the Recipe contract: a recipe's ``predict`` calls it (recipe.py), and the evaluation
package, which imports the contract, must not be imported by it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch

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
    if synced_gpus or config is None:
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
    once they are a quarter of the batch. Encoder-decoder and decoder-only models alike (a decoder-only batch is
    left-padded, so every row's prompt ends at the same column). Falls back to the plain loop's behaviour (no
    compaction) where a processor, criterion or model input is not known to be row-wise.
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
        model_kwargs = model._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=model.config.is_encoder_decoder
        )
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
