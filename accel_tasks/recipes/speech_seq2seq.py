"""Speech recognition with an encoder-decoder model: Whisper, Speech2Text.

What makes it encoder-decoder: ``AutoModelForSpeechSeq2Seq`` with its own tokenizer (never rebuilt), Whisper's
language and task tokens (``task.language`` / ``task.task``), labels that must fit the decoder's positions,
``generate`` for predictions and label smoothing (``train.label_smoothing``). Training transcripts stay raw by
default (the tokenizer knows case and punctuation). Data, features and scoring are the shared ones of
:class:`SpeechRecipe`. ``recipe=speech_recognition`` picks this class when the model is encoder-decoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from accel_tasks.errors import ConfigError
from accel_tasks.recipe import decode_generated, generation_kwargs, smoothed_loss
from accel_tasks.recipes import PRESETS_DIR
from accel_tasks.recipes.speech.base import SpeechRecipe
from accel_tasks.recipes.speech.models import SEQ2SEQ

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class SpeechSeq2SeqRecipe(SpeechRecipe):
    model_type = SEQ2SEQ
    auto_model_class = "AutoModelForSpeechSeq2Seq"
    preset_file = PRESETS_DIR / "speech_recognition.yaml"
    normalize_targets_by_default = False
    missing_tokenizer_fix = "set model.tokenizer_name=<tokenizer>"
    supports_label_smoothing = True

    def validate_options(self) -> None:
        super().validate_options()
        if self.options.build_vocab:
            raise ConfigError(
                "task.build_vocab=true builds a CTC character vocabulary; this model is encoder-decoder and keeps "
                "its tokenizer"
            )

    def adapt_model(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """Whisper's language and task tokens, in the labels and in generation (task.language / task.task)."""
        from accel_tasks.recipes.speech.models import set_language_and_task

        set_language_and_task(model, tokenizer, self.options.language, self.options.task)

    def training_loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's loss, or label-smoothed cross-entropy with train.label_smoothing."""
        return smoothed_loss(model, batch, self.cfg.train.label_smoothing)

    def check_labels(self, labels: list, row_ids: list) -> None:
        """A decoder has a fixed number of positions; longer labels would fail deep inside the model."""
        from accel_tasks.recipes.speech.rawdata import shown_rows

        limit = getattr(self.model.config, "max_target_positions", None)
        if limit is None:
            return
        long = [row_id for row_id, row in zip(row_ids, labels) if len(row) > limit]
        if long:
            raise ConfigError(
                f"{len(long)} transcript(s) are longer than the decoder's {limit} positions once tokenised: rows "
                f"{shown_rows(long)}; lower task.max_duration_s or remove those rows"
            )

    def make_collator(self) -> Callable[[list[dict]], dict[str, Any]]:
        from accel_tasks.recipes.speech.audio_features import SpeechSeq2SeqCollator

        start = getattr(self.model.config, "decoder_start_token_id", None)
        return SpeechSeq2SeqCollator(
            self.processor, decoder_start_token_id=start, pad_to_multiple_of=self.pad_to_multiple_of
        )

    def predict(
        self, model: PreTrainedModel, batch: dict[str, torch.Tensor], *, synced_gpus: bool = False
    ) -> dict[str, torch.Tensor]:
        """``generate`` with generation.* settings (unset ones: the model's generation config)."""
        kwargs = generation_kwargs(self.cfg.generation)
        return {"generated_tokens": model.generate(**self.model_inputs(batch), synced_gpus=synced_gpus, **kwargs)}

    def decode_predictions(self, outputs: dict[str, np.ndarray], tokenizer: PreTrainedTokenizerBase) -> list[str]:
        return decode_generated(outputs["generated_tokens"], tokenizer)
