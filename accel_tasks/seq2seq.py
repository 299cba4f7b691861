"""Seq2SeqRecipe: the generative defaults written once (tokenise, collate, generate, decode).

Summarization, translation and other text-to-text recipes only say which text goes in and which comes out.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from .recipe import PAD_INT, EvalOutput, Recipe


@dataclass
class Seq2SeqOptions:
    source_prefix: str = ""
    max_source_length: int = 512
    max_target_length: int = 128


class Seq2SeqRecipe(Recipe):
    """Text in, text out, scored on generated text."""

    Options = Seq2SeqOptions
    auto_model_class = "AutoModelForSeq2SeqLM"

    @abstractmethod
    def source_texts(self, batch: dict[str, list]) -> list[str]:
        """Input texts of a batch of raw examples (before the prefix)."""

    @abstractmethod
    def target_texts(self, batch: dict[str, list]) -> list[str]:
        """The text to learn for each raw example."""

    def reference_texts(self, examples: Any) -> list:
        """What predictions are scored against; defaults to the training targets."""
        return self.target_texts(examples[:])

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        tokenizer = self.processor
        prefix = self.options.source_prefix or ""
        sources = [prefix + text for text in self.source_texts(batch)]
        features = tokenizer(sources, max_length=self.options.max_source_length, truncation=True)
        labels = tokenizer(text_target=self.target_texts(batch), max_length=self.options.max_target_length, truncation=True)
        features["labels"] = labels["input_ids"]
        return features

    def collate(self, features: list[dict]) -> dict[str, Any]:
        from transformers import DataCollatorForSeq2Seq

        collator = getattr(self, "_collator", None)
        if collator is None:
            collator = self._collator = DataCollatorForSeq2Seq(self.processor, label_pad_token_id=PAD_INT)
        return collator(features)

    def generation_kwargs(self) -> dict[str, Any]:
        """Settings from ``generation.*``; unset ones keep the model's generation_config."""
        kwargs = {k: v for k, v in dict(self.cfg.generation).items() if v is not None}
        kwargs.setdefault("max_new_tokens", self.options.max_target_length)
        return kwargs

    def predict(self, model: Any, batch: dict[str, Any], *, synced_gpus: bool = False) -> dict[str, Any]:
        generated = model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            synced_gpus=synced_gpus,
            **self.generation_kwargs(),
        )
        return {"generated_tokens": generated}

    def decode(self, token_ids: np.ndarray) -> list[str]:
        pad_id = self.processor.pad_token_id if self.processor.pad_token_id is not None else 0
        token_ids = np.where(token_ids < 0, pad_id, token_ids)
        return [text.strip() for text in self.processor.batch_decode(token_ids, skip_special_tokens=True)]

    def postprocess(self, outputs: dict[str, np.ndarray], examples: Any, features: Any) -> EvalOutput:
        predictions = self.decode(outputs["generated_tokens"])
        references = self.reference_texts(examples)
        ids = examples["id"] if "id" in examples.column_names else list(range(len(examples)))
        records = [
            {"id": example_id, "prediction": prediction, "reference": reference}
            for example_id, prediction, reference in zip(ids, predictions, references)
        ]
        return EvalOutput(predictions=predictions, references=references, records=records)
