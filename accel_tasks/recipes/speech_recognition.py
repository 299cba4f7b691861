"""Speech recognition: audio in, transcript out, scored with WER and CER, for two model families.

CTC models (wav2vec2 / HuBERT / WavLM / Wav2Vec2-BERT with a character vocabulary) and encoder-decoder
models (Whisper / Speech2Text) share data handling: audio read with soundfile (never torchcodec), resampled
to the feature extractor's rate, checked and filtered by duration from file headers before features are
made. They differ in the Auto class, the collator, the prediction step and the decoding. The task logic
lives in ``accel_tasks.recipes.speech``; this class wires it into the Recipe hooks.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from accel_tasks.config import RunConfig
from accel_tasks.errors import ConfigError
from accel_tasks.recipe import PAD_INT, EvalOutput, Recipe, decode_generated, generation_kwargs, smoothed_loss
from accel_tasks.recipes import PRESETS_DIR, SAMPLES_DIR

if TYPE_CHECKING:
    import datasets
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

NORMALIZERS = ("basic", "whisper_english", "none")


@dataclass
class SpeechRecognitionOptions:
    model_type: Optional[str] = None
    """ctc | seq2seq; None: from the model's config (model type, architectures, is_encoder_decoder)."""
    audio_column: Optional[str] = None
    """None: a column typed as datasets Audio, else the first of audio, path, file, audio_filepath, ..."""
    text_column: Optional[str] = None
    """None: the first of text, sentence, transcription, transcript, normalized_text, raw_text."""
    id_column: Optional[str] = None
    """Names rows in errors and predictions.jsonl; None: "id" when present, else the row number."""
    audio_dir: Optional[str] = None
    """Folder relative audio paths are resolved against; None: the folder of the data file."""
    build_vocab: bool = False
    """CTC: build vocab.json from the training transcripts (for a model without a vocabulary, or to replace it); the new head gets ctc_loss_reduction=mean and ctc_zero_infinity=true."""
    language: Optional[str] = None
    """Whisper language token (english or en, ...); None: the model's."""
    task: Optional[str] = None
    """Whisper task token: transcribe or translate; None: the model's."""
    min_duration_s: Optional[float] = None
    """Shortest clip kept, in seconds; clips outside [min, max] are dropped and counted; None: no bound."""
    max_duration_s: Optional[float] = None
    """Longest clip kept, in seconds; None: no bound."""
    drop_empty_transcripts: bool = False
    """Rows whose transcript is empty: an error naming them (false) or dropped and counted (true)."""
    normalizer: str = "basic"
    """Scoring normaliser, applied to predictions and references alike: basic | whisper_english | none."""
    lowercase: bool = True
    """Normaliser: lowercase predictions and references."""
    remove_punctuation: bool = True
    """Normaliser: drop punctuation."""
    collapse_whitespace: bool = True
    """Normaliser: merge runs of whitespace."""
    english_spelling_mapping: Optional[str] = None
    """whisper_english: British->American spellings (a Whisper checkpoint's normalizer.json, or its folder); None: the model folder's normalizer.json when it has one."""
    normalize_targets: Optional[bool] = None
    """Train on normalised transcripts; None: yes for CTC (the vocabulary is built from them), no for seq2seq."""
    freeze_feature_encoder: bool = False
    """wav2vec2-style models: keep the convolutional feature encoder frozen."""


class SpeechRecognitionRecipe(Recipe):
    name = "speech_recognition"
    Options = SpeechRecognitionOptions
    default_metrics = ("wer", "cer")
    primary_metric = "wer"
    # Replaced per instance once the model family is known (load_model).
    auto_model_class = "AutoModelForCTC"
    processor_class = "AutoProcessor"
    sample_dir = SAMPLES_DIR / "speech_recognition"
    preset_file = PRESETS_DIR / "speech_recognition.yaml"
    pipeline_tag = "automatic-speech-recognition"
    example_score_name = "WER"
    example_score_higher_is_better = False
    length_column = "input_features"

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.model_type: Optional[str] = None
        self.audio_column: Optional[str] = None
        self.text_column: Optional[str] = None
        self.id_column: Optional[str] = None
        self._collator = None
        self._normalizer: Optional[Callable[[str], str]] = None
        self._typed_audio_columns: list[str] = []

    # -- checks before anything heavy ---------------------------------------------------------------
    def validate_options(self) -> None:
        opts = self.options
        if opts.model_type is not None and opts.model_type not in ("ctc", "seq2seq"):
            raise ConfigError(
                f"task.model_type={opts.model_type!r} is not one of ctc, seq2seq (or null: from the model config)"
            )
        if opts.normalizer not in NORMALIZERS:
            raise ConfigError(f"task.normalizer={opts.normalizer!r} is not one of {', '.join(NORMALIZERS)}")
        if opts.min_duration_s is not None and opts.min_duration_s < 0:
            raise ConfigError(f"task.min_duration_s={opts.min_duration_s} is negative; use 0 or more seconds")
        if opts.max_duration_s is not None and opts.max_duration_s <= 0:
            raise ConfigError(f"task.max_duration_s={opts.max_duration_s} must be above 0 seconds")
        if (
            opts.min_duration_s is not None
            and opts.max_duration_s is not None
            and opts.max_duration_s < opts.min_duration_s
        ):
            raise ConfigError(
                f"task.max_duration_s={opts.max_duration_s} is below task.min_duration_s={opts.min_duration_s}; swap or widen them"
            )
        if opts.task is not None and opts.task not in ("transcribe", "translate"):
            raise ConfigError(f"task.task={opts.task!r} is not one of transcribe, translate")
        if opts.build_vocab and self.cfg.mode != "train":
            raise ConfigError(
                "task.build_vocab=true only applies to training; an evaluated model keeps its own vocabulary"
            )
        if opts.build_vocab and opts.model_type == "seq2seq":
            raise ConfigError(
                "task.build_vocab=true builds a CTC character vocabulary; encoder-decoder models keep their tokenizer"
            )
        if (opts.language is not None or opts.task is not None) and opts.model_type == "ctc":
            raise ConfigError(
                "task.language / task.task set an encoder-decoder model's language and task tokens; a CTC model has none"
            )
        for option in ("audio_dir", "english_spelling_mapping"):
            value = getattr(opts, option)
            if value is not None and not Path(value).exists():
                raise ConfigError(f"task.{option}={value!r} does not exist")
        self.normalizer()  # a bad normaliser setting fails here, not after the model is loaded

    # -- text normalisation -------------------------------------------------------------------------
    def normalizer(self) -> Callable[[str], str]:
        """The scoring normaliser; built once."""
        if self._normalizer is None:
            from accel_tasks.recipes.speech.normalize import TextNormalizer

            opts = self.options
            if opts.normalizer == "none":
                self._normalizer = _NoNormalization()
            else:
                mapping = opts.english_spelling_mapping
                if mapping is None and opts.normalizer == "whisper_english":
                    local = Path(self.cfg.model.name_or_path or "") / "normalizer.json"
                    mapping = str(local) if self.cfg.model.name_or_path and local.is_file() else None
                try:
                    self._normalizer = TextNormalizer(
                        lowercase=opts.lowercase,
                        remove_punctuation=opts.remove_punctuation,
                        collapse_whitespace=opts.collapse_whitespace,
                        whisper_english=opts.normalizer == "whisper_english",
                        english_spelling_mapping=mapping,
                    )
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
        return self._normalizer

    def target_normalizer(self) -> Optional[Callable[[str], str]]:
        """What training transcripts go through before tokenising (None: the raw text)."""
        wanted = self.options.normalize_targets
        if wanted is None:
            wanted = self.model_type != "seq2seq"
        return self.normalizer() if wanted else None

    # -- model -----------------------------------------------------------------------------------------
    def load_model(self) -> tuple[Any, Any]:
        from accel_tasks.models.loading import lacks_tokenizer, load_model_and_processor, load_model_config
        from accel_tasks.recipes.speech.models import (
            AUTO_CLASSES,
            CTC,
            choose_model_type,
            freeze_unused_spec_augment,
            set_language_and_task,
            split_processor,
        )

        default_dir = self.default_model_dir()
        source = self.cfg.model.name_or_path or str(default_dir)
        config = load_model_config(self.cfg.model, default_dir)
        self.model_type = choose_model_type(config, self.options.model_type)
        self.auto_model_class = AUTO_CLASSES[self.model_type]
        opts = self.options
        if self.model_type == CTC and (opts.language is not None or opts.task is not None):
            raise ConfigError(
                "task.language / task.task set an encoder-decoder model's language and task tokens; this model is CTC"
            )
        if self.model_type == CTC and self.cfg.train.label_smoothing and self.cfg.mode == "train":
            raise ConfigError(
                "train.label_smoothing applies to encoder-decoder speech models (Whisper); this model is CTC: set it to 0"
            )
        if self.model_type != CTC and opts.build_vocab:
            raise ConfigError(
                "task.build_vocab=true builds a CTC character vocabulary; this model is encoder-decoder and keeps its tokenizer"
            )
        if self.model_type == CTC and opts.build_vocab:
            model, processor = self._load_with_new_vocab(source, default_dir, config.model_type)
        else:
            if self.model_type == CTC and not self.cfg.model.tokenizer_name and lacks_tokenizer(source):
                raise ConfigError(
                    f"the model at {source!r} has no tokenizer (no vocab.json, tokenizer.json or tokenizer_config.json); "
                    "set task.build_vocab=true to build one from the training transcripts"
                )
            model, processor = load_model_and_processor(
                self.cfg.model, self.auto_model_class, self.processor_class, default_dir=default_dir
            )
        feature_extractor, tokenizer = split_processor(processor)
        if feature_extractor is None:
            raise ConfigError(
                f"the model at {source!r} has no feature extractor (preprocessor_config.json); use a speech model"
            )
        if tokenizer is None:
            fix = (
                "set task.build_vocab=true to build one from the training transcripts"
                if self.model_type == CTC
                else "set model.tokenizer_name=<tokenizer>"
            )
            raise ConfigError(f"the model at {source!r} has no tokenizer; {fix}")
        if self.model_type == CTC:
            self._check_ctc_head(model, tokenizer)
            freeze_unused_spec_augment(model)
        else:
            set_language_and_task(model, tokenizer, opts.language, opts.task)
        if opts.freeze_feature_encoder:
            freeze = getattr(model, "freeze_feature_encoder", None)
            if freeze is None:
                raise ConfigError(
                    f"task.freeze_feature_encoder=true, but {type(model).__name__} has no feature encoder to freeze"
                )
            freeze()
        self.length_column = feature_extractor.model_input_names[0]
        self.model, self.processor = model, processor
        self.log(
            f"speech model family: {self.model_type} ({type(model).__name__}, {type(feature_extractor).__name__} at {feature_extractor.sampling_rate} Hz)"
        )
        return model, processor

    supports_label_smoothing = True

    def training_loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder-decoder models take train.label_smoothing (CTC refuses it at load time)."""
        return smoothed_loss(model, batch, self.cfg.train.label_smoothing)

    def metric_probe(self) -> EvalOutput:
        """Normalised transcripts, as postprocess gives wer / cer."""
        return EvalOutput(predictions=["six four"], references=["six four"], records=[])

    def peft_modules_to_save(self, model: PreTrainedModel) -> list[str]:
        """A CTC head is sized to the vocabulary and starts untrained: trained in full beside the adapter."""
        from accel_tasks.recipes.speech.models import CTC

        return ["lm_head"] if self.model_type == CTC and hasattr(model, "lm_head") else []

    def _load_with_new_vocab(self, source: str, default_dir: Path, model_type: str) -> tuple[Any, Any]:
        """CTC model whose head matches a vocabulary built from the training transcripts."""
        from accel_tasks.models.loading import load_model_and_processor
        from accel_tasks.recipes.speech.models import ctc_processor
        from accel_tasks.recipes.speech.vocab import build_ctc_vocab, make_ctc_tokenizer, write_vocab

        train = self.load_data(("train",))["train"]
        _, text_column = self.columns(train.column_names)
        if text_column not in train.column_names:
            raise ConfigError(
                f"the train data has no column {text_column!r} (columns: {', '.join(train.column_names)}); set task.text_column=<column>"
            )
        import datasets

        streamed = isinstance(train, datasets.IterableDataset)  # data.streaming: the first rows stand for the split
        cells = (row[text_column] for row in train.take(self.stream_head_rows)) if streamed else train[text_column]
        texts = [t for t in cells if t is not None]
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
        which = f"the first {len(texts)} streamed" if streamed else f"{len(texts)}"
        self.log(
            f"built a CTC vocabulary of {len(vocab)} symbols from {which} training transcripts: {symbols!r} + [UNK] [PAD]"
        )
        return model, ctc_processor(model_type, feature_extractor, tokenizer)

    def _check_ctc_head(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """The head's outputs and blank must match the tokenizer, or training and decoding are silently wrong."""
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

    def preprocess_fingerprint(self) -> str:
        """Cached features depend on the tokenizer, the feature extractor and the model family too."""
        from accel_tasks.recipes.speech.models import split_processor

        feature_extractor, tokenizer = split_processor(self.processor)
        identity = {
            "code": super().preprocess_fingerprint(),
            "speech_code": [_file_digest(name) for name in ("audio", "audio_features", "normalize")],
            "model_type": self.model_type,
            "vocab": hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest(),
            "prefix": [getattr(tokenizer, "language", None), getattr(tokenizer, "task", None)],
            "feature_extractor": feature_extractor.to_json_string(),
            "normalizer": repr(self.target_normalizer()),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # -- data ------------------------------------------------------------------------------------------
    def load_data(self, splits: tuple[str, ...]) -> datasets.DatasetDict:
        """Raw splits with Audio columns left undecoded (soundfile reads them later, torchcodec never)."""
        from accel_tasks.recipes.speech.audio import undecoded_audio
        from accel_tasks.recipes.speech.rawdata import audio_feature_columns

        raw = super().load_data(splits)
        for split in list(raw):
            for column in audio_feature_columns(raw[split]):
                self._typed_audio_columns.append(column)
                raw[split] = undecoded_audio(raw[split], column)
        return raw

    def columns(self, column_names: list[str]) -> tuple[str, str]:
        """(audio column, text column): the user's, else a column typed as Audio, else well-known names."""
        from accel_tasks.recipes.speech.rawdata import AUDIO_COLUMNS, TEXT_COLUMNS, pick_column

        audio = pick_column(column_names, self.options.audio_column, AUDIO_COLUMNS, self._typed_audio_columns)
        text = pick_column(column_names, self.options.text_column, TEXT_COLUMNS)
        if text is None and not self.with_references:
            text = ""  # audio alone (mode=predict): there is no transcript column
        if audio is None or text is None:
            missing = (
                "an audio column (task.audio_column=<column>)"
                if audio is None
                else "a text column (task.text_column=<column>)"
            )
            raise ConfigError(f"cannot find {missing} among the data's columns: {', '.join(column_names)}")
        self.audio_column, self.text_column = audio, text
        return audio, text

    def has_references(self, dataset: datasets.Dataset) -> bool:
        from accel_tasks.recipes.speech.rawdata import TEXT_COLUMNS, pick_column

        return pick_column(dataset.column_names, self.options.text_column, TEXT_COLUMNS) in dataset.column_names

    def required_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        audio, text = self.columns(column_names)
        required = {audio: "task.audio_column"}
        if self.with_references:
            required[text] = "task.text_column"
        if self.options.id_column:
            required[self.options.id_column] = "task.id_column"
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

    def prepare_raw(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        """Check every clip and transcript cheaply, then drop empty (if asked) and out-of-range clips."""
        from accel_tasks.recipes.speech.audio import AudioLoadError
        from accel_tasks.recipes.speech.rawdata import PROBE_DURATION, PROBE_RATE, ROW_COLUMN, probe_audio, shown_rows

        audio_column, _ = self.columns(dataset.column_names)
        self.id_column = self.options.id_column or ("id" if "id" in dataset.column_names else ROW_COLUMN)
        if self.id_column == ROW_COLUMN and ROW_COLUMN not in dataset.column_names:
            dataset = dataset.add_column(ROW_COLUMN, list(range(len(dataset))))
        if self.with_references:
            dataset = self._drop_empty_transcripts(dataset, split)
        if split == "train" and self.model_type == "ctc":
            self._report_unknown_characters(dataset[self.text_column])
        base_dir = self.audio_base_dir(split)
        try:
            # Only the two probe columns are written (a few bytes per clip), never a copy of the audio.
            probe = dataset.map(
                probe_audio,
                batched=True,
                remove_columns=dataset.column_names,
                fn_kwargs={
                    "audio_column": audio_column,
                    "id_column": self.id_column,
                    "base_dir": str(base_dir) if base_dir else None,
                },
                num_proc=self.cfg.data.preprocessing_num_workers,
                desc=f"checking {split} audio",
            )
        except AudioLoadError as exc:
            hint = " (relative paths: task.audio_dir=<folder>)" if "not found" in str(exc) else ""
            raise ConfigError(f"{exc}{hint}") from None
        durations = np.asarray(probe[PROBE_DURATION], dtype=np.float64)
        self._report_resampling(probe[PROBE_RATE], split)
        silent = np.flatnonzero(durations <= 0)
        if len(silent):
            all_ids = dataset[self.id_column]
            ids = [all_ids[int(i)] for i in silent]
            raise ConfigError(
                f"the {split} data has {len(ids)} empty audio clip(s) (0 samples): rows {shown_rows(ids)}; remove those rows"
            )
        keep = self._duration_mask(durations, split)
        if keep.all():
            return dataset
        if not keep.any():
            raise ConfigError(
                f"no {split} clips left after the duration filter; widen task.min_duration_s / task.max_duration_s"
            )
        return dataset.select(np.flatnonzero(keep))

    def prepare_stream(self, stream: datasets.IterableDataset, split: str) -> datasets.IterableDataset:
        """prepare_raw for a stream, row by row as it is read: the same drops (empty transcripts, durations out of
        range) and the same errors (an unreadable or empty clip, an empty transcript without
        task.drop_empty_transcripts) through ``_keep_streamed``; unknown characters, resampling and the drop
        counts reported over the first ``stream_head_rows`` rows only."""
        from accel_tasks.recipes.speech.rawdata import ROW_COLUMN

        self.columns(list(stream.column_names))
        self.id_column = self.options.id_column or ("id" if "id" in stream.column_names else ROW_COLUMN)
        if self.id_column == ROW_COLUMN and ROW_COLUMN not in stream.column_names:
            import datasets

            features = datasets.Features({**stream.features, ROW_COLUMN: datasets.Value("int64")})
            stream = stream.map(lambda row, index: {ROW_COLUMN: index}, with_indices=True, features=features)
        head_rows = list(stream.take(self.stream_head_rows))
        head = {column: [row[column] for row in head_rows] for column in stream.column_names}
        what = f"{split} (the first {len(head_rows)} streamed rows)"
        if split == "train" and self.model_type == "ctc":
            self._report_unknown_characters(head[self.text_column], f"the first {len(head_rows)} streamed transcripts")
        keep = self._keep_streamed(head, split, report=what)
        if not any(keep):
            raise ConfigError(
                f"none of the first {len(keep)} {split} rows is left after the transcript and duration filters; "
                "check the data or widen task.min_duration_s / task.max_duration_s"
            )
        return stream.filter(self._keep_streamed, batched=True, fn_kwargs={"split": split})

    def _keep_streamed(self, batch: dict[str, list], split: str, report: Optional[str] = None) -> list[bool]:
        """Keep-mask of a streamed batch by prepare_raw's rules; ``report``: say what was dropped, under that name."""
        from accel_tasks.recipes.speech.audio import AudioLoadError
        from accel_tasks.recipes.speech.rawdata import (
            PROBE_DURATION,
            PROBE_RATE,
            empty_transcript_rows,
            probe_audio,
            shown_rows,
        )

        ids = batch[self.id_column]
        keep = np.ones(len(ids), dtype=bool)
        if self.with_references:
            normalizers = (
                [self.target_normalizer()] if split == "train" else [self.target_normalizer(), self.normalizer()]
            )
            empty = empty_transcript_rows(ids, batch[self.text_column], normalizers)
            if empty and not self.options.drop_empty_transcripts:
                raise ConfigError(
                    f"the {split} stream has {len(empty)} row(s) with an empty transcript (after normalisation): rows "
                    f"{shown_rows([ids[i] for i in empty])}; remove them or set task.drop_empty_transcripts=true"
                )
            keep[empty] = False
            if empty and report:
                self.log(
                    f"{report}: dropped {len(empty)} of {len(ids)} rows with an empty transcript (rows {shown_rows([ids[i] for i in empty])})"
                )
        # As prepare_raw: only the clips of rows still kept are probed and filtered.
        kept = np.flatnonzero(keep)
        clips = {self.audio_column: [batch[self.audio_column][i] for i in kept], self.id_column: [ids[i] for i in kept]}
        base_dir = self.audio_base_dir(split)
        try:
            probe = probe_audio(
                clips,
                audio_column=self.audio_column,
                id_column=self.id_column,
                base_dir=str(base_dir) if base_dir else None,
            )
        except AudioLoadError as exc:
            hint = " (relative paths: task.audio_dir=<folder>)" if "not found" in str(exc) else ""
            raise ConfigError(f"{exc}{hint}") from None
        durations = np.asarray(probe[PROBE_DURATION], dtype=np.float64)
        silent = [clips[self.id_column][i] for i in np.flatnonzero(durations <= 0)]
        if silent:
            raise ConfigError(
                f"the {split} stream has {len(silent)} empty audio clip(s) (0 samples): rows {shown_rows(silent)}; remove those rows"
            )
        if report:
            self._report_resampling(probe[PROBE_RATE], report)
        keep[kept] = self._duration_mask(durations, report or split, report=bool(report))
        return keep.tolist()

    def _report_unknown_characters(self, transcripts: Sequence[Any], which: str = "the transcripts") -> None:
        """Characters the CTC vocabulary lacks would silently train as [UNK]; say which."""
        from accel_tasks.recipes.speech.models import split_processor
        from accel_tasks.recipes.speech.rawdata import unknown_characters

        normalize = self.target_normalizer() or _NoNormalization()
        texts = (normalize(str(text)) for text in transcripts)
        unknown = unknown_characters(texts, split_processor(self.processor)[1])
        if unknown:
            self.log(
                f"train: {len(unknown)} character(s) of {which} are not in the model's vocabulary and become "
                f"[UNK]: {''.join(sorted(unknown))!r}; set task.build_vocab=true to build a vocabulary from the transcripts"
            )

    def _report_resampling(self, probed_rates: list[int], where: str) -> None:
        """One notice for the clips whose sampling rate is not the feature extractor's (they are resampled)."""
        import numpy as np

        rates = np.asarray(probed_rates, dtype=np.int64)
        sampling_rate = int(self._feature_extractor().sampling_rate)
        other = rates != sampling_rate
        if other.any():
            found = ", ".join(f"{int(r)} Hz" for r in np.unique(rates[other]))
            self.log(
                f"{where}: {int(other.sum())} of {len(rates)} clips at {found} are resampled to {sampling_rate} Hz"
            )

    def _duration_mask(self, durations: np.ndarray, split: str, report: bool = True) -> np.ndarray:
        """task.min/max_duration_s, plus a fixed-window model's window (Whisper would cut longer clips).

        ``report``: log the counts (a stream reports only its first rows, not every batch)."""
        from accel_tasks.recipes.speech.rawdata import input_window_s

        opts = self.options
        keep = np.ones(len(durations), dtype=bool)
        if opts.min_duration_s is not None or opts.max_duration_s is not None:
            low = opts.min_duration_s if opts.min_duration_s is not None else 0.0
            high = opts.max_duration_s if opts.max_duration_s is not None else np.inf
            keep = (durations >= low) & (durations <= high)
            if report:
                self.log(
                    f"{split}: duration filter [{low:g}, {high:g}] s removed {int((~keep).sum())} of {len(keep)} clips "
                    f"({int((durations < low).sum())} shorter, {int((durations > high).sum())} longer), kept {int(keep.sum())}"
                )
        window = input_window_s(self._feature_extractor())
        if window is not None:
            too_long = keep & (durations > window)
            if too_long.any():
                keep &= ~too_long
                if report:
                    self.log(
                        f"{split}: removed {int(too_long.sum())} clips longer than the model's {window:g} s input window"
                    )
        return keep

    def _feature_extractor(self) -> Any:
        from accel_tasks.recipes.speech.models import split_processor

        return split_processor(self.processor)[0]

    def _drop_empty_transcripts(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        """Empty transcripts cannot be learned (no labels) or scored (WER divides by reference length)."""
        from accel_tasks.recipes.speech.rawdata import empty_transcript_rows, shown_rows

        normalizers = [self.target_normalizer()] if split == "train" else [self.target_normalizer(), self.normalizer()]
        all_ids = dataset[self.id_column]
        empty = empty_transcript_rows(all_ids, dataset[self.text_column], normalizers)
        if not empty:
            return dataset
        ids = [all_ids[i] for i in empty]
        if not self.options.drop_empty_transcripts:
            raise ConfigError(
                f"the {split} data has {len(empty)} row(s) with an empty transcript (after normalisation): rows "
                f"{shown_rows(ids)}; remove them or set task.drop_empty_transcripts=true"
            )
        self.log(
            f"{split}: dropped {len(empty)} of {len(dataset)} rows with an empty transcript (rows {shown_rows(ids)})"
        )
        drop = set(empty)
        return dataset.select([i for i in range(len(dataset)) if i not in drop])

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        from accel_tasks.recipes.speech.audio import AudioLoadError
        from accel_tasks.recipes.speech.audio_features import (
            SHAPE_COLUMN,
            EmptyTranscriptError,
            pack_arrays,
            prepare_speech_features,
        )
        from accel_tasks.recipes.speech.models import CTC, split_processor

        feature_extractor, tokenizer = split_processor(self.processor)
        base_dir = self.audio_base_dir(split)
        try:
            features = prepare_speech_features(
                batch,
                feature_extractor=feature_extractor,
                tokenizer=tokenizer,
                normalizer=self.target_normalizer(),
                audio_column=self.audio_column,
                text_column=self.text_column if self.with_references else None,
                id_column=self.id_column,
                base_dir=base_dir,
            )
        except (AudioLoadError, EmptyTranscriptError) as exc:
            raise ConfigError(str(exc)) from None
        if self.model_type != CTC and self.with_references:
            self._check_label_lengths(features["labels"], batch[self.id_column])
        name = self.length_column
        features[name], features[SHAPE_COLUMN] = pack_arrays(features[name])
        return features

    def _check_label_lengths(self, labels: list, row_ids: list) -> None:
        """A decoder has a fixed number of positions; longer labels would fail deep inside the model."""
        from accel_tasks.recipes.speech.rawdata import shown_rows

        limit = getattr(self.model.config, "max_target_positions", None)
        if limit is None:
            return
        long = [rid for rid, row in zip(row_ids, labels) if len(row) > limit]
        if long:
            raise ConfigError(
                f"{len(long)} transcript(s) are longer than the decoder's {limit} positions once tokenised: rows "
                f"{shown_rows(long)}; lower task.max_duration_s or remove those rows"
            )

    def collate(self, features: list[dict]) -> dict[str, Any]:
        if self._collator is None:
            from accel_tasks.recipes.speech.audio_features import CTCCollator, SpeechSeq2SeqCollator
            from accel_tasks.recipes.speech.models import CTC

            if self.model_type == CTC:
                self._collator = CTCCollator(self.processor, pad_to_multiple_of=self.pad_to_multiple_of)
            else:
                start = getattr(self.model.config, "decoder_start_token_id", None)
                self._collator = SpeechSeq2SeqCollator(
                    self.processor, decoder_start_token_id=start, pad_to_multiple_of=self.pad_to_multiple_of
                )
        from accel_tasks.recipes.speech.audio_features import unpack_arrays

        return self._collator([unpack_arrays(row, self.length_column) for row in features])

    def count_tokens(self, batch: dict[str, Any]) -> int:
        """Transcript tokens (characters for CTC), not audio frames."""
        labels = batch.get("labels")
        return int((labels != PAD_INT).sum()) if labels is not None else 0

    # -- evaluation ------------------------------------------------------------------------------------
    def _model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        name = self.length_column
        inputs = {name: batch[name]}
        if batch.get("attention_mask") is not None:
            inputs["attention_mask"] = batch["attention_mask"]
        return inputs

    def predict(
        self, model: PreTrainedModel, batch: dict[str, torch.Tensor], *, synced_gpus: bool = False
    ) -> dict[str, torch.Tensor]:
        from accel_tasks.recipes.speech.decode import mask_frames
        from accel_tasks.recipes.speech.models import CTC

        inputs = self._model_inputs(batch)
        if self.model_type == CTC:
            logits = model(**inputs).logits
            return {"frame_ids": mask_frames(model, logits.argmax(dim=-1), inputs.get("attention_mask"))}
        kwargs = generation_kwargs(self.cfg.generation)
        return {"generated_tokens": model.generate(**inputs, synced_gpus=synced_gpus, **kwargs)}

    def postprocess(
        self, outputs: dict[str, np.ndarray], examples: datasets.Dataset, features: datasets.Dataset
    ) -> EvalOutput:
        from accel_tasks.recipes.speech.decode import decode_ctc_ids
        from accel_tasks.recipes.speech.models import CTC, split_processor

        tokenizer = split_processor(self.processor)[1]
        if self.model_type == CTC:
            raw_predictions = decode_ctc_ids(outputs["frame_ids"], tokenizer)
        else:
            raw_predictions = decode_generated(outputs["generated_tokens"], tokenizer)
        normalize = self.normalizer()
        predictions = [normalize(text) for text in raw_predictions]
        ids = examples[self.id_column]
        audio = examples.select_columns([self.audio_column])[self.audio_column]
        records = [
            {
                "id": row_id,
                "input": _audio_name(clip),
                "prediction": prediction,
                "prediction_normalized": norm_prediction,
            }
            for row_id, clip, prediction, norm_prediction in zip(ids, audio, raw_predictions, predictions)
        ]
        if not self.with_references:
            return EvalOutput(predictions=predictions, references=None, records=records)
        raw_references = [text or "" for text in examples[self.text_column]]
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


class _NoNormalization:
    """Scoring on the raw text (task.normalizer=none); a stable repr keeps the feature cache key stable."""

    def __call__(self, text: str) -> str:
        return text

    def __repr__(self) -> str:
        return "NoNormalization()"


def _file_digest(module: str) -> str:
    path = Path(__file__).resolve().parent / "speech" / f"{module}.py"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
