"""What both speech recipes share: option checks, normalisation, audio data, the row filter, features, scoring.

Why a base class and two families: a CTC model (wav2vec2 / HuBERT / WavLM / Wav2Vec2-BERT with a character
vocabulary) and an encoder-decoder model (Whisper / Speech2Text) read the same data the same way: audio read
with soundfile (never torchcodec), resampled to the feature extractor's rate, checked and filtered by duration
from file headers before features are made, and scored with WER and CER on normalised text. They differ in the
Auto class, the model checks, the collator, the prediction step and the decoding, which
:class:`~accel_tasks.recipes.speech_ctc.SpeechCTCRecipe` and
:class:`~accel_tasks.recipes.speech_seq2seq.SpeechSeq2SeqRecipe` fill in; nothing here asks which family it is.
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Sequence

import numpy as np

from accel_tasks import log
from accel_tasks.errors import ConfigError
from accel_tasks.recipe import PAD_INT, EvalOutput, Recipe
from accel_tasks.recipes import PRESETS_DIR, SAMPLES_DIR
from accel_tasks.recipes.speech.options import (
    NORMALIZERS,
    ON_TOO_LONG,
    SpeechRecognitionOptions,
    check_durations,
    check_spec_augment,
)

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from accel_tasks.recipes.speech.rawdata import SpeechColumns
    from accel_tasks.recipes.speech.rows import RowRule

# Rows read to find the columns of a split (the audio column by its values).
COLUMN_PROBE_ROWS = 8


class SpeechRecipe(Recipe):
    """Speech recognition for one model family; a subclass says which (``model_type``) and fills the family hooks.

    Family hooks: ``load_family_model`` (optional), ``adapt_model``, ``check_train_transcripts`` and
    ``decoder_positions`` (optional), ``make_collator``, ``predict``, ``decode_predictions``.
    """

    name = "speech_recognition"
    Options = SpeechRecognitionOptions
    default_metrics = ("wer", "cer")
    primary_metric = "wer"
    # The families set their own; this is what a class-level reader (estimate-memory) sees before a model is
    # chosen: the bundled model's.
    auto_model_class = "AutoModelForCTC"
    processor_class = "AutoProcessor"
    sample_dir = SAMPLES_DIR / "speech_recognition"
    preset_file = PRESETS_DIR / "speech_recognition.yaml"
    pipeline_tag = "automatic-speech-recognition"
    example_score_name = "WER"
    example_score_higher_is_better = False
    # The family a subclass serves: "ctc" | "seq2seq" (accel_tasks.recipes.speech.models); None: not one yet.
    model_type: ClassVar[Optional[str]] = None
    # Whether training transcripts are normalised when task.normalize_targets is unset.
    normalize_targets_by_default: ClassVar[bool] = False
    # What to do about a model without a tokenizer.
    missing_tokenizer_fix: ClassVar[str] = "set model.tokenizer_name=<tokenizer>"
    # Whether task.spec_augment / task.mask_*_prob apply (the family sets them on the model config it loads).
    supports_spec_augment: ClassVar[bool] = False

    @property
    def length_column(self) -> str:  # type: ignore[override]
        """The feature extractor's input (input_values for wav2vec2, input_features for Whisper and W2V-BERT)."""
        if self.processor is None:
            return "input_features"
        return self._feature_extractor().model_input_names[0]

    # -- checks before anything heavy ---------------------------------------------------------------
    def validate_options(self) -> None:
        from accel_tasks.recipes.speech.models import MODEL_TYPES

        opts = self.options
        if opts.model_type is not None and opts.model_type not in MODEL_TYPES:
            raise ConfigError(
                f"task.model_type={opts.model_type!r} is not one of ctc, seq2seq (or null: from the model config)"
            )
        if opts.model_type is not None and opts.model_type != self.model_type:
            raise ConfigError(
                f"task.model_type={opts.model_type} does not match recipe {type(self).__name__} "
                f"({self.model_type} models); use recipe=speech_recognition, which picks the recipe by the model"
            )
        if opts.normalizer not in NORMALIZERS:
            raise ConfigError(f"task.normalizer={opts.normalizer!r} is not one of {', '.join(NORMALIZERS)}")
        if opts.on_too_long not in ON_TOO_LONG:
            raise ConfigError(f"task.on_too_long={opts.on_too_long!r} is not one of {', '.join(ON_TOO_LONG)}")
        check_durations(opts)
        check_spec_augment(opts, self.supports_spec_augment, self.model_type)
        if opts.task is not None and opts.task not in ("transcribe", "translate"):
            raise ConfigError(f"task.task={opts.task!r} is not one of transcribe, translate")
        if opts.build_vocab and self.cfg.mode != "train":
            raise ConfigError(
                "task.build_vocab=true only applies to training; an evaluated model keeps its own vocabulary"
            )
        for option in ("audio_dir", "english_spelling_mapping"):
            value = getattr(opts, option)
            if value is not None and not Path(value).exists():
                raise ConfigError(f"task.{option}={value!r} does not exist")
        self.normalizer()  # a bad normaliser setting fails here, not after the model is loaded

    # -- text normalisation -------------------------------------------------------------------------
    def normalizer(self) -> Callable[[str], str]:
        """The scoring normaliser (built once)."""
        return self._scoring_normalizer

    @cached_property
    def _scoring_normalizer(self) -> Callable[[str], str]:
        from accel_tasks.recipes.speech.normalize import NoNormalization, TextNormalizer

        opts = self.options
        if opts.normalizer == "none":
            return NoNormalization()
        mapping = opts.english_spelling_mapping
        if mapping is None and opts.normalizer == "whisper_english":
            local = Path(self.cfg.model.name_or_path or "") / "normalizer.json"
            mapping = str(local) if self.cfg.model.name_or_path and local.is_file() else None
        try:
            return TextNormalizer(
                lowercase=opts.lowercase,
                remove_punctuation=opts.remove_punctuation,
                collapse_whitespace=opts.collapse_whitespace,
                whisper_english=opts.normalizer == "whisper_english",
                english_spelling_mapping=mapping,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def target_normalizer(self) -> Optional[Callable[[str], str]]:
        """What training transcripts go through before tokenising (None: the raw text)."""
        wanted = self.options.normalize_targets
        if wanted is None:
            wanted = self.normalize_targets_by_default
        return self.normalizer() if wanted else None

    # -- model -----------------------------------------------------------------------------------------
    def load_model(self) -> tuple[Any, Any]:
        """The family's model and processor, checked: a feature extractor, a tokenizer, the family's own checks."""
        from accel_tasks.recipes.speech.models import split_processor

        default_dir = self.default_model_dir()
        source = self.cfg.model.name_or_path or str(default_dir)
        model, processor = self.load_family_model(source, default_dir)
        feature_extractor, tokenizer = split_processor(processor)
        if feature_extractor is None:
            raise ConfigError(
                f"the model at {source!r} has no feature extractor (preprocessor_config.json); use a speech model"
            )
        if tokenizer is None:
            raise ConfigError(f"the model at {source!r} has no tokenizer; {self.missing_tokenizer_fix}")
        self.adapt_model(model, tokenizer)
        if self.options.freeze_feature_encoder:
            freeze = getattr(model, "freeze_feature_encoder", None)
            if freeze is None:
                raise ConfigError(
                    f"task.freeze_feature_encoder=true, but {type(model).__name__} has no feature encoder to freeze"
                )
            freeze()
        self.model, self.processor = model, processor
        log.info(
            f"speech model family: {self.model_type} ({type(model).__name__}, "
            f"{type(feature_extractor).__name__} at {feature_extractor.sampling_rate} Hz)"
        )
        return model, processor

    def load_family_model(self, source: str, default_dir: Optional[Path]) -> tuple[Any, Any]:
        """The model (``auto_model_class``) and its processor; ``source`` is where it comes from, for messages."""
        from accel_tasks.models.loading import load_model_and_processor

        return load_model_and_processor(
            self.cfg.model,
            self.auto_model_class,
            self.processor_class,
            default_dir=default_dir,
            config_overrides=self.model_config_overrides() if self.cfg.mode == "train" else None,
        )

    @abstractmethod
    def adapt_model(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """Check the loaded model against its tokenizer and set it up for this task (raises ConfigError)."""

    def metric_probe(self) -> EvalOutput:
        """Normalised transcripts, as postprocess gives wer / cer."""
        return EvalOutput(predictions=["six four"], references=["six four"], records=[])

    def preprocess_fingerprint(self) -> str:
        """Cached features depend on the tokenizer, the feature extractor and the model family too."""
        from accel_tasks.recipes.speech.models import split_processor

        feature_extractor, tokenizer = split_processor(self.processor)
        identity = {
            "code": super().preprocess_fingerprint(),
            "speech_code": [_file_digest(name) for name in ("audio", "audio_features", "normalize", "base")],
            "model_type": self.model_type,
            "vocab": hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest(),
            "prefix": [getattr(tokenizer, "language", None), getattr(tokenizer, "task", None)],
            "feature_extractor": feature_extractor.to_json_string(),
            "normalizer": repr(self.target_normalizer()),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _feature_extractor(self) -> Any:
        from accel_tasks.recipes.speech.models import split_processor

        return split_processor(self.processor)[0]

    # -- data ------------------------------------------------------------------------------------------
    def load_data(self, splits: tuple[str, ...]) -> datasets.DatasetDict:
        """Raw splits with Audio columns left undecoded (soundfile reads them later, torchcodec never)."""
        from accel_tasks.recipes.speech.audio import undecoded_audio
        from accel_tasks.recipes.speech.rawdata import audio_feature_columns

        raw = super().load_data(splits)
        for split in list(raw):
            for column in audio_feature_columns(raw[split]):
                raw[split] = undecoded_audio(raw[split], column)
        return raw

    def columns(self, rows: dict[str, Sequence[Any]]) -> SpeechColumns:
        """The audio, text and id columns of these rows (a batch, or the first rows of a split)."""
        from accel_tasks.recipes.speech.rawdata import speech_columns

        return speech_columns(rows, self.options, self.with_references)

    def has_references(self, dataset: datasets.Dataset) -> bool:
        from accel_tasks.recipes.speech.rawdata import TEXT_COLUMNS, pick_column

        return pick_column(dataset.column_names, self.options.text_column, TEXT_COLUMNS) in dataset.column_names

    def required_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        """The columns named by option or well-known name; an audio column found by its values is checked later
        (prepare_raw / prepare_stream), since the names alone cannot tell it."""
        from accel_tasks.recipes.speech.rawdata import AUDIO_COLUMNS, TEXT_COLUMNS, pick_column

        opts = self.options
        required = {}
        audio = pick_column(column_names, opts.audio_column, AUDIO_COLUMNS)
        if audio is not None:
            required[audio] = "task.audio_column"
        if self.with_references:
            text = pick_column(column_names, opts.text_column, TEXT_COLUMNS)
            if text is None:
                raise ConfigError(
                    "cannot find a text column (task.text_column=<column>) among the data's columns: "
                    + ", ".join(column_names)
                )
            required[text] = "task.text_column"
        if opts.id_column:
            required[opts.id_column] = "task.id_column"
        return required

    def audio_base_dir(self, split: str) -> Optional[Path]:
        """Where relative audio paths of a split point from: task.audio_dir, the data file's folder, or the sample."""
        from accel_tasks.data.raw import uses_files

        if self.options.audio_dir:
            return Path(self.options.audio_dir).resolve()
        data = self.cfg.data
        if uses_files(data):
            path = getattr(data, f"{split}_file", None)
            return Path(path).resolve().parent if path else None
        if data.name:
            local = Path(data.name).expanduser()
            return local.resolve() if local.is_dir() else None
        return self.sample_dir

    def row_rule(self, split: str, columns: SpeechColumns) -> RowRule:
        """The row filter's settings for a split (transcripts are checked with the normalisers they will meet).

        The decoder's limit applies to the train split alone: only training feeds labels through the decoder
        (evaluation generates, and scores against the raw transcript).
        """
        from accel_tasks.recipes.speech.models import split_processor
        from accel_tasks.recipes.speech.rawdata import input_window_s
        from accel_tasks.recipes.speech.rows import LabelLimit, RowRule

        opts = self.options
        normalizers = [self.target_normalizer()] if split == "train" else [self.target_normalizer(), self.normalizer()]
        base_dir = self.audio_base_dir(split)
        feature_extractor, tokenizer = split_processor(self.processor)
        positions = self.decoder_positions()
        label_limit = None
        if split == "train" and columns.text is not None and positions is not None:
            start = getattr(self.model.config, "decoder_start_token_id", None)
            label_limit = LabelLimit(tokenizer, self.target_normalizer(), positions, start)
        return RowRule(
            columns=columns,
            transcript_normalizers=tuple(normalizers),
            base_dir=str(base_dir) if base_dir else None,
            min_duration_s=opts.min_duration_s,
            max_duration_s=opts.max_duration_s,
            window_s=input_window_s(feature_extractor),
            drop_empty_transcripts=opts.drop_empty_transcripts,
            sampling_rate=int(feature_extractor.sampling_rate),
            label_limit=label_limit,
            on_too_long=opts.on_too_long,
        )

    def decoder_positions(self) -> Optional[int]:
        """How many label tokens the model's decoder takes (the row filter drops longer transcripts); None: any."""
        return None

    def check_raw(self, dataset: datasets.Dataset, split: str) -> None:
        """Every clip's header read before the model loads: a missing, unreadable or empty clip is one line now."""
        from accel_tasks.recipes.speech.rows import check_clip_headers

        check_clip_headers(dataset, self.columns(dataset[:COLUMN_PROBE_ROWS]), self.audio_base_dir(split), split)

    def prepare_raw(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        """Check every clip and transcript cheaply (file headers, the text), then drop what the row filter drops."""
        from accel_tasks.recipes.speech.rawdata import ROW_COLUMN
        from accel_tasks.recipes.speech.rows import PROBED, VERDICT, judge_rows, row_verdicts

        columns = self.columns(dataset[:COLUMN_PROBE_ROWS])
        if columns.id == ROW_COLUMN and ROW_COLUMN not in dataset.column_names:
            dataset = dataset.add_column(ROW_COLUMN, list(range(len(dataset))))
        if split == "train" and columns.text is not None:
            self.check_train_transcripts(dataset[columns.text], "the transcripts")
        rule = self.row_rule(split, columns)
        # Only the verdict columns are made (a few bytes per clip), never a copy of the audio; kept in memory and
        # never taken from a cache, since they follow the audio files, which the dataset's fingerprint does not.
        verdicts = dataset.map(
            row_verdicts,
            batched=True,
            remove_columns=dataset.column_names,
            fn_kwargs={"rule": rule},
            num_proc=self.cfg.data.preprocessing_num_workers,
            keep_in_memory=True,
            load_from_cache_file=False,
            desc=f"checking {split} audio",
        )[:]
        keep = judge_rows(dataset[columns.id], verdicts, rule, f"the {split} data", split)
        if keep.all():
            return dataset
        if not keep.any() and np.isin(verdicts[VERDICT], PROBED).any():
            raise ConfigError(
                f"no {split} clips left after the duration and length filters (counts above); widen "
                "task.min_duration_s / task.max_duration_s, or use shorter clips and transcripts"
            )
        return dataset.select(np.flatnonzero(keep))

    def prepare_stream(self, stream: datasets.IterableDataset, split: str) -> datasets.IterableDataset:
        """prepare_raw for a stream, as it is read: the same row filter (``kept_rows``), the same errors; unknown
        characters, resampling and the drop counts are reported over the first ``stream_head_rows`` rows only."""
        import datasets

        from accel_tasks.recipes.speech.rawdata import ROW_COLUMN, id_column
        from accel_tasks.recipes.speech.rows import judge_rows, kept_rows, row_verdicts

        names = list(stream.column_names)
        if id_column(names, self.options.id_column) == ROW_COLUMN and ROW_COLUMN not in names:
            features = datasets.Features({**stream.features, ROW_COLUMN: datasets.Value("int64")})
            stream = stream.map(lambda row, index: {ROW_COLUMN: index}, with_indices=True, features=features)
        head_rows = list(stream.take(self.stream_head_rows))
        head = {column: [row[column] for row in head_rows] for column in stream.column_names}
        columns = self.columns(head)
        if split == "train" and columns.text is not None:
            self.check_train_transcripts(head[columns.text], f"the first {len(head_rows)} streamed transcripts")
        rule = self.row_rule(split, columns)
        what = f"{split} (the first {len(head_rows)} streamed rows)"
        keep = judge_rows(head[columns.id], row_verdicts(head, rule), rule, f"the {split} stream", what)
        if not keep.any():
            raise ConfigError(
                f"none of the first {len(keep)} {split} rows is left after the transcript and duration filters; "
                "check the data or widen task.min_duration_s / task.max_duration_s"
            )
        return stream.filter(kept_rows, batched=True, fn_kwargs={"rule": rule, "subject": f"the {split} stream"})

    def check_train_transcripts(self, transcripts: Sequence[Any], which: str) -> None:
        """Report what the model cannot learn from the training transcripts; nothing to say by default."""

    # -- features ----------------------------------------------------------------------------------------
    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        from accel_tasks.recipes.speech.audio import AudioLoadError
        from accel_tasks.recipes.speech.audio_features import (
            SHAPE_COLUMN,
            EmptyTranscriptError,
            pack_arrays,
            prepare_speech_features,
        )
        from accel_tasks.recipes.speech.models import split_processor

        columns = self.columns(batch)
        feature_extractor, tokenizer = split_processor(self.processor)
        try:
            features = prepare_speech_features(
                batch,
                feature_extractor=feature_extractor,
                tokenizer=tokenizer,
                normalizer=self.target_normalizer(),
                columns=columns,
                base_dir=self.audio_base_dir(split),
            )
        except (AudioLoadError, EmptyTranscriptError) as exc:
            raise ConfigError(str(exc)) from None
        name = self.length_column
        features[name], features[SHAPE_COLUMN] = pack_arrays(features[name])
        return features

    @abstractmethod
    def make_collator(self) -> Callable[[list[dict]], dict[str, Any]]:
        """The family's collator: padded audio features and labels (PAD_INT) as tensors."""

    @cached_property
    def _collator(self) -> Callable[[list[dict]], dict[str, Any]]:
        return self.make_collator()

    def collate(self, features: list[dict]) -> dict[str, Any]:
        from accel_tasks.recipes.speech.audio_features import unpack_arrays

        return self._collator([unpack_arrays(row, self.length_column) for row in features])

    def count_tokens(self, batch: dict[str, Any]) -> int:
        """Transcript tokens (characters for CTC), not audio frames."""
        labels = batch.get("labels")
        return int((labels != PAD_INT).sum()) if labels is not None else 0

    # -- evaluation ------------------------------------------------------------------------------------
    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The audio features (and attention mask) of a batch, without the labels."""
        name = self.length_column
        inputs = {name: batch[name]}
        if batch.get("attention_mask") is not None:
            inputs["attention_mask"] = batch["attention_mask"]
        return inputs

    @abstractmethod
    def decode_predictions(self, outputs: dict[str, np.ndarray], tokenizer: PreTrainedTokenizerBase) -> list[str]:
        """The texts ``predict`` produced, for every eval feature, before normalisation."""

    def postprocess(
        self, outputs: dict[str, np.ndarray], examples: datasets.Dataset, features: datasets.Dataset
    ) -> EvalOutput:
        from accel_tasks.recipes.speech.models import split_processor

        raw_predictions = self.decode_predictions(outputs, split_processor(self.processor)[1])
        normalize = self.normalizer()
        predictions = [normalize(text) for text in raw_predictions]
        columns = self.columns(examples[:COLUMN_PROBE_ROWS])
        ids = examples[columns.id]
        audio = examples.select_columns([columns.audio])[columns.audio]
        records = [
            {
                "id": row_id,
                "input": _audio_name(clip),
                "prediction": prediction,
                "prediction_normalized": norm_prediction,
            }
            for row_id, clip, prediction, norm_prediction in zip(ids, audio, raw_predictions, predictions)
        ]
        if columns.text is None:
            return EvalOutput(predictions=predictions, references=None, records=records)
        raw_references = [text or "" for text in examples[columns.text]]
        references = [normalize(text) for text in raw_references]
        for record, reference, norm_reference in zip(records, raw_references, references):
            record["reference"] = reference
            record["reference_normalized"] = norm_reference
        return EvalOutput(predictions=predictions, references=references, records=records)

    @classmethod
    def example_scores(cls, records: list[dict]) -> Optional[list[Optional[float]]]:
        """WER of each utterance on the normalised texts the run scored; None without a (non-empty) reference."""
        import jiwer

        return [
            jiwer.wer(record["reference_normalized"], record["prediction_normalized"])
            if record.get("reference_normalized")
            else None
            for record in records
        ]


def _audio_name(clip: Any) -> str:
    """What predictions.jsonl shows of a clip: its path (audio files, undecoded Audio columns), else a placeholder."""
    if isinstance(clip, str):
        return clip
    if isinstance(clip, dict) and clip.get("path"):
        return str(clip["path"])
    return "(in-memory audio)"


def _file_digest(module: str) -> str:
    """Digest of a module of this package (speech/), for the feature cache key."""
    path = Path(__file__).resolve().parent / f"{module}.py"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
