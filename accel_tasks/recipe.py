"""The Recipe contract: everything task-specific, nothing about devices, processes or loops.

A recipe never iterates over batches and never touches the Accelerator; the loop never knows a task.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from .config import NoOptions

_logger = logging.getLogger("accel_tasks")


@dataclass
class EvalOutput:
    """What postprocessing hands back: metric inputs and one predictions.jsonl record per example."""

    predictions: list
    references: list
    records: list[dict]


class Recipe(ABC):
    """Base class of every recipe; subclasses fill in the hooks for their task."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    default_metrics: ClassVar[tuple[str, ...]] = ()
    # Name of the transformers Auto class used to load or build the model.
    auto_model_class: ClassVar[str] = "AutoModel"
    # Name of the transformers Auto class for the tokenizer / processor.
    processor_class: ClassVar[str] = "AutoTokenizer"
    # Directory with the bundled offline sample: {train,validation}.jsonl and model/ (config + tokenizer).
    sample_dir: ClassVar[Optional[Path]] = None
    # Feature column whose length orders eval batches when eval.group_by_length is on.
    length_column: ClassVar[str] = "input_ids"

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.options = cfg.task
        self.model = None
        self.processor = None
        # The loop replaces this with its main-process console log; recipes report counts through it.
        self.log = _logger.info

    @classmethod
    def preset_path(cls) -> Optional[Path]:
        """The YAML preset beside the recipe's module (``summarization.py`` -> ``summarization.yaml``)."""
        path = Path(inspect.getfile(cls)).with_suffix(".yaml")
        return path if path.is_file() else None

    @classmethod
    def smoke_settings_path(cls) -> Optional[Path]:
        """Settings for the bundled tiny model (``<sample_dir>/smoke.yaml``), used when no model is named."""
        if cls.sample_dir is None:
            return None
        path = cls.sample_dir / "smoke.yaml"
        return path if path.is_file() else None

    # -- checks that run before anything heavy ---------------------------------------------------
    def validate_options(self) -> None:
        """Raise ConfigError for task options that cannot work; runs before model or data load."""

    # -- model and data ---------------------------------------------------------------------------
    def model_config_overrides(self) -> dict[str, Any]:
        """Model config values the task decides (e.g. num_labels), applied when loading or building the model."""
        return {}

    def default_model_dir(self) -> Optional[Path]:
        """The model used when model.name_or_path is unset: the bundled sample's model/ unless a recipe says else."""
        return self.sample_dir / "model" if self.sample_dir else None

    def load_model(self) -> tuple[Any, Any]:
        from .modeling import load_model_and_processor

        default_dir = self.default_model_dir() if self.cfg.model.name_or_path is None else None
        self.model, self.processor = load_model_and_processor(
            self.cfg.model,
            self.auto_model_class,
            self.processor_class,
            default_dir=default_dir,
            config_overrides=self.model_config_overrides(),
        )
        return self.model, self.processor

    def load_data(self, splits: tuple[str, ...]) -> Any:
        """Raw examples as a DatasetDict holding ``splits`` (names: train / validation / test)."""
        from .data import load_raw_datasets

        return load_raw_datasets(self.cfg.data, splits, sample_dir=self.sample_dir)

    def required_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        """Columns a raw split must have, mapped to the option that names them (for the error hint).

        ``column_names`` are the split's columns, for recipes that pick known columns by name.
        """
        return {}

    def prepare_raw(self, dataset: Any, split: str) -> Any:
        """Last chance to fix up a raw split (filter, cast) before features are made."""
        return dataset

    def preprocess_fingerprint(self) -> str:
        """Part of the feature cache key: changes when the recipe's code changes."""
        import hashlib

        return hashlib.sha256(Path(inspect.getfile(type(self))).read_bytes()).hexdigest()[:16]

    @abstractmethod
    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        """Raw examples -> model features; called through ``datasets.map(batched=True)``."""

    def collate(self, features: list[dict]) -> dict[str, Any]:
        """Features -> padded tensors (dynamic padding by default)."""
        return self.processor.pad(features, return_tensors="pt")

    # -- training and evaluation ------------------------------------------------------------------
    def training_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(**batch).loss

    @abstractmethod
    def predict(self, model: Any, batch: dict[str, Any], *, synced_gpus: bool = False) -> dict[str, Any]:
        """What evaluation needs from the model for one batch, as tensors with the batch first.

        The loop pads these across processes and batches (-100 for integer tensors, -1e4 for float
        tensors) and restores input order before postprocess() sees them.
        """

    @abstractmethod
    def postprocess(self, outputs: dict[str, np.ndarray], examples: Any, features: Any) -> EvalOutput:
        """Outputs of predict() for every eval feature, in input order -> metric inputs and records."""

    def metrics(self) -> list[str]:
        return list(self.cfg.eval.metrics or self.default_metrics)

    def metric_kwargs(self, metric: str) -> dict[str, Any]:
        """Keyword arguments for ``metric.compute``; ``eval.metric_args.<metric>`` wins over the recipe's."""
        user = self.cfg.eval.metric_args.get(metric) or self.cfg.eval.metric_args.get(Path(metric).name) or {}
        return {**self.default_metric_kwargs(metric), **dict(user)}

    def default_metric_kwargs(self, metric: str) -> dict[str, Any]:
        return {}

    def count_tokens(self, batch: dict[str, Any]) -> int:
        """Tokens in a batch for the tokens/s log; padding is not counted."""
        if "attention_mask" in batch:
            return int(batch["attention_mask"].sum())
        labels = batch.get("labels")
        return int((labels != -100).sum()) if labels is not None else 0


PAD_INT = -100
PAD_FLOAT = -1e4


def pad_value_for(array: Any) -> float:
    """The loop's padding convention for prediction outputs (see Recipe.predict)."""
    kind = getattr(array, "dtype", None)
    is_float = getattr(kind, "is_floating_point", None)
    if is_float is None:
        is_float = np.issubdtype(kind, np.floating)
    return PAD_FLOAT if is_float else PAD_INT
