"""Text classification: sentence in, label out, scored with accuracy and macro-F1."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accel_tasks.recipe import EvalOutput, Recipe, preview

HERE = Path(__file__).resolve().parent


@dataclass
class TextClassificationOptions:
    text_column: str = "text"
    """Column holding the text to classify."""
    label_column: str = "label"
    """Column holding the label (a name from labels, or its index)."""
    labels: list[str] = field(default_factory=lambda: ["negative", "positive"])
    """The label names in id order; an eval-only run takes them from the trained model instead."""
    max_length: int = 128
    """Tokens kept per text."""


class TextClassificationRecipe(Recipe):
    name = "text_classification"
    Options = TextClassificationOptions
    default_metrics = (str(HERE / "metrics" / "accuracy_f1"),)
    auto_model_class = "AutoModelForSequenceClassification"
    sample_dir = HERE / "sample"

    def model_config_overrides(self) -> dict[str, Any]:
        labels = list(self.options.labels)
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
        }

    def settings_from_model(self, model: Any) -> dict[str, Any]:
        """A trained classifier fixes its label order (config.id2label): eval-only scores against that order."""
        id2label = getattr(model.config, "id2label", None) or {}
        labels = [id2label[i] for i in sorted(id2label)]
        return {"labels": labels} if labels and len(labels) == model.config.num_labels else {}

    def peft_modules_to_save(self, model: Any) -> list[str]:
        """The classification head starts untrained: trained in full beside a LoRA adapter."""
        return [name for name, _ in model.named_children() if name in ("classifier", "score")]

    def required_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        required = {self.options.text_column: "task.text_column"}
        if self.with_references:
            required[self.options.label_column] = "task.label_column"
        return required

    def has_references(self, dataset: Any) -> bool:
        """mode=predict on texts without labels is allowed: predictions only."""
        return self.options.label_column in dataset.column_names

    def label_id(self, label: Any) -> int:
        labels = list(self.options.labels)
        if isinstance(label, int) and 0 <= label < len(labels):
            return label
        if label in labels:
            return labels.index(label)
        raise ValueError(f"label {label!r} is not one of task.labels={labels}; set task.labels to the data's labels")

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        features = self.processor(batch[self.options.text_column], max_length=self.options.max_length, truncation=True)
        if self.with_references:
            features["labels"] = [self.label_id(label) for label in batch[self.options.label_column]]
        return features

    def collate(self, features: list[dict]) -> dict[str, Any]:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.processor)(features)

    def predict(self, model: Any, batch: dict[str, Any], *, synced_gpus: bool = False) -> dict[str, Any]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return {"label_ids": model(**inputs).logits.argmax(dim=-1)}

    def postprocess(self, outputs: dict[str, np.ndarray], examples: Any, features: Any) -> EvalOutput:
        predictions = [int(p) for p in outputs["label_ids"]]
        labels = list(self.options.labels)
        records = [
            {"id": i, "input": preview(text), "prediction": labels[p]}
            for i, (text, p) in enumerate(zip(examples[self.options.text_column], predictions))
        ]
        if not self.with_references:
            return EvalOutput(predictions=predictions, references=None, records=records)
        references = [self.label_id(label) for label in examples[self.options.label_column]]
        for record, reference in zip(records, references):
            record["reference"] = labels[reference]
        return EvalOutput(predictions=predictions, references=references, records=records)
