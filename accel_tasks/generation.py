"""Generation and decoding, shared by every generative recipe (text-to-text and speech seq2seq).

Re-exported by :mod:`accel_tasks.recipe`; a module of its own so that recipe.py holds the contract itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from accel_tasks.config import GenerationOptions
from accel_tasks.recipe_types import PAD_INT

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    Batch = dict[str, torch.Tensor]


def smoothed_loss(model: PreTrainedModel, batch: Batch, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy with label smoothing (Trainer's label_smoothing_factor), padding (PAD_INT) ignored.

    Why not the model's loss: transformers models compute plain cross-entropy; smoothing is the trainer's job.
    """
    outputs = model(**batch)
    if not label_smoothing:
        return outputs.loss
    import torch.nn.functional as F

    logits = outputs.logits
    labels = batch["labels"].to(logits.device)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=PAD_INT,
        label_smoothing=label_smoothing,
    )


def positions_limit(model: PreTrainedModel) -> Optional[int]:
    """Longest input the model's learned or fixed position table holds; None for relative positions (T5)."""
    config = model.config
    if getattr(config, "relative_attention_num_buckets", None) is not None:
        return None
    limit = getattr(config, "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) and limit > 0 else None


def generation_kwargs(generation: GenerationOptions, **defaults: Any) -> dict[str, Any]:
    """``generate`` arguments from ``generation.*``; unset ones take ``defaults``, else the model's
    generation_config."""
    kwargs = {key: value for key, value in dict(generation).items() if value is not None}
    for key, value in defaults.items():
        if value is not None:
            kwargs.setdefault(key, value)
    return kwargs


def decode_generated(token_ids: np.ndarray, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Generated ids (padded with PAD_INT by the loop) -> stripped texts without special tokens."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    token_ids = np.where(np.asarray(token_ids) < 0, pad_id, token_ids)
    return [text.strip() for text in tokenizer.batch_decode(token_ids.tolist(), skip_special_tokens=True)]
