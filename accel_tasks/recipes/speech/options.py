"""The ``task.*`` options of speech recognition, shared by the CTC and the encoder-decoder recipe.

Why one dataclass for both: ``recipe=speech_recognition`` resolves its settings (presets, ``--help``, saved run
configs) before the model picks the family, so both families read the same options; each refuses the ones that
do not apply to it (validate_options).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from accel_tasks.errors import ConfigError

NORMALIZERS = ("basic", "whisper_english", "none")
ON_TOO_LONG = ("drop", "error")


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
    """CTC: build vocab.json from the training transcripts (for a model without a vocabulary, or to replace it);
    the new head gets ctc_loss_reduction=mean and ctc_zero_infinity=true."""
    language: Optional[str] = None
    """Whisper language token (english or en, ...); None: the model's."""
    task: Optional[str] = None
    """Whisper task token: transcribe or translate; None: the model's."""
    min_duration_s: Optional[float] = None
    """Shortest clip kept, in seconds; clips outside [min, max] are dropped and counted; None: no bound."""
    max_duration_s: Optional[float] = None
    """Longest clip kept, in seconds; None: no bound."""
    on_too_long: str = "drop"
    """Rows the model cannot take whole: clips over a fixed input window (Whisper: 30 s, which it would cut while
    keeping the whole transcript) and training transcripts over the decoder's positions (Whisper: 448 tokens with
    the language and task tokens): drop (dropped and counted) or error (stop, naming the rows)."""
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
    """whisper_english: British->American spellings (a Whisper checkpoint's normalizer.json, or its folder);
    None: the model folder's normalizer.json when it has one."""
    normalize_targets: Optional[bool] = None
    """Train on normalised transcripts; None: yes for CTC (the vocabulary is built from them), no for seq2seq."""
    freeze_feature_encoder: bool = False
    """wav2vec2-style models: keep the convolutional feature encoder frozen."""
    spec_augment: Optional[bool] = None
    """Encoder-decoder (Whisper): SpecAugment on the input features while training (config.apply_spec_augment;
    never in eval or generation); None: the model config's (off in Whisper checkpoints)."""
    mask_time_prob: Optional[float] = None
    """With task.spec_augment=true: share of frames masked in time; None: the model config's (0.05, HF's default)."""
    mask_feature_prob: Optional[float] = None
    """With task.spec_augment=true: share of mel bins masked; None: the model config's (0.0, HF's default)."""


def check_durations(opts: SpeechRecognitionOptions) -> None:
    """task.min/max_duration_s: non-negative, and in order."""
    if opts.min_duration_s is not None and opts.min_duration_s < 0:
        raise ConfigError(f"task.min_duration_s={opts.min_duration_s} is negative; use 0 or more seconds")
    if opts.max_duration_s is not None and opts.max_duration_s <= 0:
        raise ConfigError(f"task.max_duration_s={opts.max_duration_s} must be above 0 seconds")
    low, high = opts.min_duration_s, opts.max_duration_s
    if low is not None and high is not None and high < low:
        raise ConfigError(f"task.max_duration_s={high} is below task.min_duration_s={low}; swap or widen them")


def check_spec_augment(opts: SpeechRecognitionOptions, supported: bool, model_type: Optional[str]) -> None:
    """task.spec_augment only where the family sets it (``supported``); mask shares in [0, 1), only with it on.

    Why a mask share without task.spec_augment=true is an error: it would change nothing, silently.
    """
    if opts.spec_augment is not None and not supported:
        raise ConfigError(
            f"task.spec_augment applies to encoder-decoder speech models (Whisper); this model is {model_type}, "
            "whose own config decides (apply_spec_augment, mask_time_prob): leave task.spec_augment unset"
        )
    for option in ("mask_time_prob", "mask_feature_prob"):
        value = getattr(opts, option)
        if value is None:
            continue
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"task.{option}={value} is not a share of the input; use 0 <= value < 1")
        if opts.spec_augment is not True:
            raise ConfigError(f"task.{option}={value} applies only with SpecAugment; set task.spec_augment=true too")
