"""Seq2SeqRecipe: the generative defaults every text-to-text recipe shares, for either backend of this layer.

A recipe says which text goes in and which comes out; this class turns them into features, batches, a loss and
generated text through the backend the model's config names (encoder-decoder or decoder-only). Plugins import it
from :mod:`accel_tasks.recipe`.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import numpy as np

from accel_tasks import log
from accel_tasks.errors import ConfigError
from accel_tasks.generation import generation_kwargs
from accel_tasks.recipe_contract import Recipe
from accel_tasks.recipe_types import EvalOutput, preview
from accel_tasks.text2text import backends as text2text

if TYPE_CHECKING:
    import datasets
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

    from accel_tasks.recipe_contract import Batch, Processor


@dataclass
class Seq2SeqOptions:
    """Task options every text-to-text recipe shares."""

    source_prefix: str = ""
    """Text put before every source (T5: "summarize: ")."""
    max_source_length: int = 512
    """Source tokens kept; longer sources are truncated (decoder-only: also to fit the model's context)."""
    max_target_length: int = 128
    """Target tokens kept for training (encoder-decoder; a decoder-only completion is never cut); also the default
    generation.max_new_tokens."""
    prompt_template: str = "{source}"
    """Decoder-only models: the instruction with the source, as {field} names (the recipe's fields are listed in
    its --help); the user turn of the tokenizer's chat template, or plain text followed by the answer."""
    system_prompt: str = ""
    """Decoder-only models: a system turn before the instruction (chat templates), or a first paragraph (plain)."""
    chat_template: bool = True
    """Decoder-only models: render prompts with the tokenizer's chat template where it has one; false: plain text."""
    train_on_prompt: bool = False
    """Decoder-only models: compute the loss on the prompt tokens too (default: on the completion only)."""


# The longest packed row train.packing_length=None makes (the model's context is used when it is shorter).
PACKING_LENGTH = 2048


class Seq2SeqRecipe(Recipe):
    """Text in, text out, scored on generated text, with an encoder-decoder or a decoder-only model.

    Subclasses say which text goes in and which comes out (``source_texts``, ``target_texts``, ``reference_texts``)
    and, for decoder-only models, the name of the source in ``task.prompt_template`` (``source_field``) and the
    run's other template values (``prompt_values``). The text-to-text layer (accel_tasks.text2text) does the rest
    for the backend the model's config names: features, batches, loss, generation, decoding.
    """

    Options = Seq2SeqOptions
    auto_model_class = "AutoModelForSeq2SeqLM"
    supports_label_smoothing = True
    # The field of task.prompt_template that holds the source, and the run's other template fields (their values
    # come from prompt_values).
    source_field: ClassVar[str] = "source"
    prompt_value_names: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def source_texts(self, batch: dict[str, list]) -> list[str]:
        """Input texts of a batch of raw examples (before the prefix)."""

    @abstractmethod
    def target_texts(self, batch: dict[str, list]) -> list[str]:
        """The text to learn for each raw example."""

    def reference_texts(self, examples: datasets.Dataset) -> list:
        """What predictions are scored against; defaults to the training targets."""
        return self.target_texts(examples[:])

    def prompt_values(self) -> dict[str, str]:
        """Values of the template fields named in ``prompt_value_names`` (e.g. language names), for this run."""
        return {}

    def validate_options(self) -> None:
        for key in ("max_source_length", "max_target_length"):
            value = getattr(self.options, key)
            if value < 1:
                raise ConfigError(
                    f"task.{key}={value} must be at least 1 token (an empty {key.split('_')[1]} cannot be learned)"
                )
        text2text.check_template(self.prompt_spec(), (self.source_field, *self.prompt_value_names))

    def metric_probe(self) -> Optional[EvalOutput]:
        return EvalOutput(predictions=["a small test"], references=["a small test"], records=[])

    # -- the model and its backend ------------------------------------------------------------------
    def auto_model_class_for(self, config: PretrainedConfig) -> str:
        """AutoModelForSeq2SeqLM or AutoModelForCausalLM, from the model's config."""
        from accel_tasks.models.loading import generative_model_class

        return generative_model_class(config, self.name or type(self).__name__)

    def load_model(self) -> tuple[PreTrainedModel, Processor]:
        """The model of the family its config names, then task.max_*_length capped to what it can hold."""
        model, processor = super().load_model()
        self.cap_to_positions(model, "task.max_source_length", "task.max_target_length", "generation.max_new_tokens")
        if not model.config.is_encoder_decoder:
            text2text.prepare_decoder_only(processor, model, self.options.chat_template)
        return model, processor

    def export_pipeline_tag(self) -> Optional[str]:
        """A causal LM serves the hub's text-generation pipeline, whatever the task it was tuned for."""
        if self.model is not None and not self.model.config.is_encoder_decoder:
            return "text-generation"
        return super().export_pipeline_tag()

    def prompt_spec(self) -> text2text.PromptSpec:
        values = self.prompt_values() or {name: name for name in self.prompt_value_names}
        return text2text.PromptSpec(
            template=self.options.prompt_template,
            system_prompt=self.options.system_prompt or "",
            source_field=self.source_field,
            values=text2text.values_of(values),
        )

    def text_backend(self) -> text2text.Backend:
        """The backend for this model and the current settings, made once per settings object.

        Why keyed on the config object: every setting the backend uses lives in ``self.cfg``, which is read-only and
        replaced by a new object whenever the recipe decides a setting (translation's languages in prepare_raw), so
        an identity check is exact and costs nothing on the per-batch path (collate, loss, generate call this).
        """
        cached = getattr(self, "_backend", None)
        if cached is None or cached[0] is not self.cfg or cached[1] is not self.processor:
            max_new_tokens = self.generation_kwargs().get("max_new_tokens") or self.options.max_target_length
            spec = self.prompt_spec()
            backend = text2text.make_backend(self.model, self.processor, self.options, spec, max_new_tokens)
            self._backend = cached = (self.cfg, self.processor, backend)
        return cached[2]

    def preprocess_fingerprint(self) -> str:
        """The recipe's code and the text-to-text layer's: either changing makes new features."""
        return hashlib.sha256((super().preprocess_fingerprint() + text2text.code_fingerprint()).encode()).hexdigest()[
            :16
        ]

    # -- data ------------------------------------------------------------------------------------------
    def prepare_raw(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        """Show one example as the model reads it; drop (and count) training examples with nothing to learn."""
        self.show_example(dataset[:1], split)
        if split != "train" or not self.with_references or self.text_backend().is_encoder_decoder:
            return dataset
        keep = []
        for start in range(0, len(dataset), 1000):
            fits = self.text_backend().fits(self.target_texts(dataset[start : start + 1000]))
            keep.extend(start + i for i, ok in enumerate(fits) if ok)
        if len(keep) < len(dataset):
            log.warning(
                f"{split}: dropped {len(dataset) - len(keep)} of {len(dataset)} examples whose completion does not "
                "fit the model's context beside the prompt (no token left to learn)"
            )
            dataset = dataset.select(keep)
        return dataset

    def prepare_stream(self, stream: datasets.IterableDataset, split: str) -> datasets.IterableDataset:
        """prepare_raw for a stream: the example shown from its first row, examples dropped lazily as read."""
        try:
            head = list(stream.take(1))
        except Exception:  # a first block that cannot be read: training meets it and says so in one line
            head = []
        self.show_example({key: [row[key] for row in head] for key in (head[0] if head else {})}, split)
        if split != "train" or self.text_backend().is_encoder_decoder:
            return stream
        return stream.filter(self.completion_fits, batched=True)

    def completion_fits(self, batch: dict[str, list]) -> list[bool]:
        return self.text_backend().fits(self.target_texts(batch))

    def show_example(self, rows: dict[str, list], split: str) -> None:
        """Before training (or, eval-only, before scoring): one line with one example as the model reads it."""
        if (split == "train") == (self.cfg.mode == "train") and rows and next(iter(rows.values()), None):
            sources = self.source_texts(rows)
            target = self.target_texts(rows)[0] if split == "train" else None
            prefix = self.options.source_prefix or ""
            log.info(f"{split} example: {self.text_backend().describe(prefix + sources[0], target)}")

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        prefix = self.options.source_prefix or ""
        sources = [prefix + text for text in self.source_texts(batch)]
        backend = self.text_backend()
        wants_targets = self.with_references and (backend.is_encoder_decoder or split == "train")
        return backend.features(sources, self.target_texts(batch) if wants_targets else None)

    def pack_train_features(self, features: datasets.Dataset, capacity: Optional[int]) -> datasets.Dataset:
        """Decoder-only: best-fit rows of ``capacity`` tokens (None: the model's context, at most 2048), one line
        with the packing efficiency."""
        import datasets

        backend = self.text_backend()
        if backend.is_encoder_decoder:
            raise ConfigError(
                "train.packing needs a decoder-only model (an encoder-decoder model reads its source apart from its "
                "target); set train.packing=false"
            )
        capacity = capacity or min(backend.limits.context or PACKING_LENGTH, PACKING_LENGTH)
        packed, efficiency = backend.pack(features[:], capacity)
        log.info(
            f"packing: {len(features)} training examples into {len(packed['input_ids'])} rows of {capacity} tokens, "
            f"efficiency {efficiency:.1%} (real tokens / row capacity)"
        )
        return datasets.Dataset.from_dict(packed)

    def collate(self, features: list[dict[str, Any]]) -> Batch:
        return self.text_backend().collate(features, self.pad_to_multiple_of)

    # -- training and generation --------------------------------------------------------------------
    def training_loss(self, model: PreTrainedModel, batch: Batch) -> torch.Tensor:
        """The backend's loss: cross-entropy of the labels (label-smoothed with train.label_smoothing); a decoder-only
        model computes its output layer only where there are labels."""
        return self.text_backend().loss(model, batch, self.cfg.train.label_smoothing)

    def generation_kwargs(self) -> dict[str, Any]:
        """Settings from ``generation.*``; max_new_tokens defaults to task.max_target_length."""
        return generation_kwargs(self.cfg.generation, max_new_tokens=self.options.max_target_length)

    def predict(self, model: PreTrainedModel, batch: Batch, *, synced_gpus: bool = False) -> dict[str, torch.Tensor]:
        """The generated tokens (the new ones only: a decoder-only prompt is cut off)."""
        return {"generated_tokens": self.text_backend().generate(model, batch, self.generation_kwargs(), synced_gpus)}

    def decode(self, token_ids: np.ndarray) -> list[str]:
        return self.text_backend().decode(token_ids)

    def postprocess(
        self, outputs: dict[str, np.ndarray], examples: datasets.Dataset, features: datasets.Dataset
    ) -> EvalOutput:
        predictions = self.decode(outputs["generated_tokens"])
        rows = examples[:]
        references = self.reference_texts(examples) if self.with_references else None
        ids = rows["id"] if "id" in rows else list(range(len(examples)))
        records = [
            {"id": example_id, "input": preview(source), "prediction": prediction}
            for example_id, source, prediction in zip(ids, self.source_texts(rows), predictions)
        ]
        for record, reference in zip(records, references or ()):
            record["reference"] = reference
        return EvalOutput(predictions=predictions, references=references, records=records)
