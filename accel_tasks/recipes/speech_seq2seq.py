"""Speech recognition with an encoder-decoder model: Whisper, Speech2Text.

What makes it encoder-decoder: ``AutoModelForSpeechSeq2Seq`` with its own tokenizer (never rebuilt), Whisper's
language and task tokens (``task.language`` / ``task.task``, the same in the labels and in the exported generation
config), labels that must fit the decoder's positions (longer transcripts are dropped before training, or refused
with ``task.on_too_long=error``), SpecAugment while training (``task.spec_augment``), ``generate`` for predictions
and label smoothing (``train.label_smoothing``). Training transcripts stay raw by
default (the tokenizer knows case and punctuation). Data, features and scoring are the shared ones of
:class:`SpeechRecipe`. ``recipe=speech_recognition`` picks this class when the model is encoder-decoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from accel_tasks import log
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
    supports_spec_augment = True

    def validate_options(self) -> None:
        super().validate_options()
        if self.options.build_vocab:
            raise ConfigError(
                "task.build_vocab=true builds a CTC character vocabulary; this model is encoder-decoder and keeps "
                "its tokenizer"
            )

    def model_config_overrides(self) -> dict[str, Any]:
        """task.spec_augment and its mask shares, set on the config the model is built with (training runs only).

        Why on the config: transformers applies SpecAugment in the model's forward only while it trains
        (``model.training``), so evaluation and generation never see it, in this run or from the export.
        """
        from accel_tasks.models.loading import load_model_config

        opts = self.options
        if opts.spec_augment is None:
            return {}
        config = load_model_config(self.cfg.model, self.default_model_dir())
        if not hasattr(config, "apply_spec_augment"):
            raise ConfigError(
                f"task.spec_augment is set, but {config.model_type} models have no SpecAugment "
                "(config.apply_spec_augment); leave task.spec_augment unset"
            )
        masks = {"mask_time_prob": opts.mask_time_prob, "mask_feature_prob": opts.mask_feature_prob}
        return {"apply_spec_augment": opts.spec_augment, **{k: v for k, v in masks.items() if v is not None}}

    def adapt_model(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """Whisper's language and task tokens, the same in the labels and in generation (task.language / task.task,
        else what the model names); with task.spec_augment, say what the model will mask while training."""
        from accel_tasks.recipes.speech.models import prompt_language_and_task, set_language_and_task

        training = self.cfg.mode == "train"
        language, task = prompt_language_and_task(model, tokenizer, self.options.language, self.options.task, training)
        set_language_and_task(model, tokenizer, language, task)
        if not training:
            return
        self.decide({"task.language": language, "task.task": task})
        if language is None and getattr(model.generation_config, "lang_to_id", None):
            log.info(
                "task.language is unset and the model names none: the labels carry no language token and generate "
                "detects the language; set task.language=<language> to train and generate with one"
            )
        config = model.config
        if self.options.spec_augment:
            log.info(
                f"SpecAugment while training (not in eval or generation): mask_time_prob={config.mask_time_prob:g} "
                f"(spans of {config.mask_time_length} frames), mask_feature_prob={config.mask_feature_prob:g} "
                f"(spans of {config.mask_feature_length} mel bins)"
            )
            self.decide({f"task.{key}": getattr(config, key) for key in ("mask_time_prob", "mask_feature_prob")})

    def training_loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's loss, or label-smoothed cross-entropy with train.label_smoothing."""
        return smoothed_loss(model, batch, self.cfg.train.label_smoothing)

    def decoder_positions(self) -> Optional[int]:
        """The decoder's position table (Whisper: 448); the row filter drops or refuses longer training labels."""
        return getattr(self.model.config, "max_target_positions", None)

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
