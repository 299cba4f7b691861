"""The ``task.*`` options of speech recognition, shared by the CTC and the encoder-decoder recipe.

Why one dataclass for both: ``recipe=speech_recognition`` resolves its settings (presets, ``--help``, saved run
configs) before the model picks the family, so both families read the same options; each refuses the ones that
do not apply to it (validate_options).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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
