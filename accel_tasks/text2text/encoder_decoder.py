"""The encoder-decoder backend of the text-to-text layer (``AutoModelForSeq2SeqLM``: T5, BART, Marian, mBART ...).

The source goes to the encoder, the target is the decoder's labels; both are cut to their own length settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from accel_tasks.generation import decode_generated, smoothed_loss
from accel_tasks.recipe_types import PAD_INT
from accel_tasks.text2text.prompts import shown

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    Batch = dict[str, torch.Tensor]


class EncoderDecoder:
    """Features, batches, loss and generation of a seq2seq model for (source, target) texts."""

    is_encoder_decoder = True

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_source_length: int, max_target_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self._collators: dict[Optional[int], Any] = {}

    def features(self, sources: list[str], targets: Optional[list[str]]) -> dict[str, list]:
        """Encoder inputs, and the target tokens as labels when ``targets`` are given."""
        tokenizer = self.tokenizer
        features = tokenizer(sources, max_length=self.max_source_length, truncation=True)
        if targets is not None:
            labels = tokenizer(text_target=targets, max_length=self.max_target_length, truncation=True)
            features["labels"] = labels["input_ids"]
        return features

    def fits(self, targets: list[str]) -> list[bool]:
        """Every example fits: sources and targets are cut to their lengths."""
        return [True] * len(targets)

    def check_fits(self) -> None:
        """Nothing to check: the encoder and the decoder each hold their own text."""

    def describe(self, source: str, target: Optional[str]) -> str:
        row = self.features([source], None if target is None else [target])
        line = f'{len(row["input_ids"][0])} source tokens: "{shown(source)}"'
        if target is not None:
            line += f' -> {len(row["labels"][0])} target tokens: "{shown(target, 80)}"'
        return line

    def collate(self, features: list[dict[str, Any]], pad_to_multiple_of: Optional[int]) -> Batch:
        from transformers import DataCollatorForSeq2Seq

        collator = self._collators.get(pad_to_multiple_of)
        if collator is None:
            collator = self._collators[pad_to_multiple_of] = DataCollatorForSeq2Seq(
                self.tokenizer, label_pad_token_id=PAD_INT, pad_to_multiple_of=pad_to_multiple_of
            )
        return collator(features)

    def loss(self, model: PreTrainedModel, batch: Batch, label_smoothing: float) -> torch.Tensor:
        """The model's loss, or label-smoothed cross-entropy over the same logits."""
        return smoothed_loss(model, batch, label_smoothing)

    def generate(self, model: PreTrainedModel, batch: Batch, kwargs: dict[str, Any], synced_gpus: bool) -> torch.Tensor:
        """``generate``; greedy search takes rows that have finished out of the batch (same tokens, fewer FLOPs)."""
        from accel_tasks.decoding import compacting_greedy, compaction_applies

        kwargs = dict(kwargs)
        if compaction_applies(model, kwargs, synced_gpus):
            kwargs["custom_generate"] = compacting_greedy
        return model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], synced_gpus=synced_gpus, **kwargs
        )

    def decode(self, token_ids: np.ndarray) -> list[str]:
        return decode_generated(token_ids, self.tokenizer)
