"""Speech recognition with a CTC model: wav2vec2 / HuBERT / WavLM / Wav2Vec2-BERT and a character vocabulary.

What makes it CTC: a frame classifier over the vocabulary (``AutoModelForCTC``) whose head must match the
tokenizer (its size and its blank, the pad token), a vocabulary that can be built from the training transcripts
(``task.build_vocab``), greedy frame decoding, and training transcripts normalised by default (the vocabulary is
built from them). Data, features and scoring are the shared ones of :class:`SpeechRecipe`.
``recipe=speech_recognition`` picks this class when the model is CTC.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from accel_tasks import log
from accel_tasks.errors import ConfigError
from accel_tasks.recipes import PRESETS_DIR
from accel_tasks.recipes.speech.base import SpeechRecipe
from accel_tasks.recipes.speech.models import CTC

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class SpeechCTCRecipe(SpeechRecipe):
    model_type = CTC
    auto_model_class = "AutoModelForCTC"
    preset_file = PRESETS_DIR / "speech_recognition.yaml"
    normalize_targets_by_default = True
    missing_tokenizer_fix = "set task.build_vocab=true to build one from the training transcripts"
    # Plain CTC loss; a smoothing request is refused with the reason in validate_options.
    supports_label_smoothing = False

    def validate_options(self) -> None:
        super().validate_options()
        opts = self.options
        if opts.language is not None or opts.task is not None:
            raise ConfigError(
                "task.language / task.task set an encoder-decoder model's language and task tokens; "
                "a CTC model has none"
            )
        if self.cfg.train.label_smoothing and self.cfg.mode == "train":
            raise ConfigError(
                "train.label_smoothing applies to encoder-decoder speech models (Whisper); this model is CTC: "
                "set it to 0"
            )

    # -- model -----------------------------------------------------------------------------------------
    def load_family_model(self, source: str, default_dir: Optional[Path]) -> tuple[Any, Any]:
        """With task.build_vocab, a head sized to a vocabulary built from the transcripts; else the model as is."""
        from accel_tasks.models.loading import lacks_tokenizer

        if self.options.build_vocab:
            return self._load_with_new_vocab(default_dir)
        if not self.cfg.model.tokenizer_name and lacks_tokenizer(source):
            raise ConfigError(
                f"the model at {source!r} has no tokenizer (no vocab.json, tokenizer.json or tokenizer_config.json); "
                "set task.build_vocab=true to build one from the training transcripts"
            )
        return super().load_family_model(source, default_dir)

    def _load_with_new_vocab(self, default_dir: Optional[Path]) -> tuple[Any, Any]:
        """CTC model whose head matches a vocabulary built from the training transcripts."""
        from accel_tasks.models.loading import load_model_and_processor, load_model_config
        from accel_tasks.recipes.speech.models import ctc_processor
        from accel_tasks.recipes.speech.vocab import build_ctc_vocab, make_ctc_tokenizer, write_vocab

        texts, which = self._training_transcripts()
        try:
            vocab = build_ctc_vocab(texts, self.target_normalizer())
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # A temporary folder: the tokenizer keeps the vocabulary in memory and the export saves it;
        # the user's model folder is never written to.
        with tempfile.TemporaryDirectory() as folder:
            write_vocab(vocab, folder)
            tokenizer = make_ctc_tokenizer(folder)
        digest = hashlib.sha256(json.dumps(vocab, sort_keys=True).encode()).hexdigest()[:12]
        tokenizer.name_or_path = f"ctc-vocab-{digest}"
        overrides = {
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "ctc_loss_reduction": "mean",
            "ctc_zero_infinity": True,
            # A pretrained CTC head of another size is replaced (ignored by the from-config path).
            "ignore_mismatched_sizes": True,
        }
        model, feature_extractor = load_model_and_processor(
            self.cfg.model,
            self.auto_model_class,
            "AutoFeatureExtractor",
            default_dir=default_dir,
            config_overrides=overrides,
        )
        symbols = "".join(ch for ch in vocab if len(ch) == 1)
        log.info(
            f"built a CTC vocabulary of {len(vocab)} symbols from {which} training transcripts: "
            f"{symbols!r} + [UNK] [PAD]"
        )
        model_type = load_model_config(self.cfg.model, default_dir).model_type
        return model, ctc_processor(model_type, feature_extractor, tokenizer)

    def _training_transcripts(self) -> tuple[list[str], str]:
        """The train split's transcripts (a stream: its first ``stream_head_rows``), and how to say how many."""
        import datasets

        from accel_tasks.recipes.speech.rawdata import TEXT_COLUMNS, pick_column

        train = self.load_data(("train",))["train"]
        text_column = pick_column(train.column_names, self.options.text_column, TEXT_COLUMNS)
        if text_column not in train.column_names:
            raise ConfigError(
                f"the train data has no column {text_column!r} (columns: {', '.join(train.column_names)}); "
                "set task.text_column=<column>"
            )
        streamed = isinstance(train, datasets.IterableDataset)  # data.streaming: the first rows stand for the split
        cells = (row[text_column] for row in train.take(self.stream_head_rows)) if streamed else train[text_column]
        texts = [text for text in cells if text is not None]
        return texts, f"the first {len(texts)} streamed" if streamed else f"{len(texts)}"

    def adapt_model(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """The head's outputs and blank must match the tokenizer, or training and decoding are silently wrong."""
        from accel_tasks.recipes.speech.models import freeze_unused_spec_augment

        vocab_size = getattr(model.config, "vocab_size", None)
        if vocab_size is not None and vocab_size < len(tokenizer):
            raise ConfigError(
                f"the model's CTC head has {vocab_size} outputs but its tokenizer has {len(tokenizer)} symbols; "
                "set task.build_vocab=true to build a matching vocabulary and head"
            )
        blank = getattr(model.config, "pad_token_id", None)
        if blank is not None and blank != tokenizer.pad_token_id:
            raise ConfigError(
                f"the model's CTC blank (pad_token_id={blank}) differs from the tokenizer's pad token id "
                f"{tokenizer.pad_token_id}; set task.build_vocab=true to rebuild both"
            )
        freeze_unused_spec_augment(model)

    def peft_modules_to_save(self, model: PreTrainedModel) -> list[str]:
        """A CTC head is sized to the vocabulary and starts untrained: trained in full beside the adapter."""
        return ["lm_head"] if hasattr(model, "lm_head") else []

    # -- data ------------------------------------------------------------------------------------------
    def check_train_transcripts(self, transcripts: Sequence[Any], which: str) -> None:
        """Characters the CTC vocabulary lacks would silently train as [UNK]; say which."""
        from accel_tasks.recipes.speech.models import split_processor
        from accel_tasks.recipes.speech.normalize import NoNormalization
        from accel_tasks.recipes.speech.rawdata import unknown_characters

        normalize = self.target_normalizer() or NoNormalization()
        texts = (normalize(str(text)) for text in transcripts if text is not None and str(text).strip())
        unknown = unknown_characters(texts, split_processor(self.processor)[1])
        if unknown:
            log.info(
                f"train: {len(unknown)} character(s) of {which} are not in the model's vocabulary and become "
                f"[UNK]: {''.join(sorted(unknown))!r}; set task.build_vocab=true to build a vocabulary from the "
                "transcripts"
            )

    def make_collator(self) -> Callable[[list[dict]], dict[str, Any]]:
        from accel_tasks.recipes.speech.audio_features import CTCCollator

        return CTCCollator(self.processor, pad_to_multiple_of=self.pad_to_multiple_of)

    # -- evaluation ------------------------------------------------------------------------------------
    def predict(
        self, model: PreTrainedModel, batch: dict[str, torch.Tensor], *, synced_gpus: bool = False
    ) -> dict[str, torch.Tensor]:
        """The most likely token of every frame, frames past each clip's end masked."""
        from accel_tasks.recipes.speech.decode import mask_frames

        inputs = self.model_inputs(batch)
        logits = model(**inputs).logits
        return {"frame_ids": mask_frames(model, logits.argmax(dim=-1), inputs.get("attention_mask"))}

    def decode_predictions(self, outputs: dict[str, np.ndarray], tokenizer: PreTrainedTokenizerBase) -> list[str]:
        from accel_tasks.recipes.speech.decode import decode_ctc_ids

        return decode_ctc_ids(outputs["frame_ids"], tokenizer)
