"""Speech-recognition task logic (CTC and encoder-decoder) as plain functions.

Imported only by the speech recipe; the recipe class stays a thin layer over these.
``tiny_whisper`` is not re-exported: it exists for tests and docs.
"""

from accel_tasks.recipes.speech.audio import AudioLoadError, audio_info, load_audio, undecoded_audio
from accel_tasks.recipes.speech.audio_features import (
    CTCCollator,
    EmptyTranscriptError,
    SpeechSeq2SeqCollator,
    filter_by_duration,
    prepare_speech_features,
)
from accel_tasks.recipes.speech.decode import (
    ctc_collapse,
    ctc_greedy_ids,
    decode_ctc_ids,
    decode_ctc_predictions,
    decode_labels,
)
from accel_tasks.recipes.speech.normalize import TextNormalizer
from accel_tasks.recipes.speech.vocab import build_ctc_vocab, make_ctc_tokenizer, write_vocab

__all__ = [
    "AudioLoadError",
    "CTCCollator",
    "EmptyTranscriptError",
    "SpeechSeq2SeqCollator",
    "TextNormalizer",
    "audio_info",
    "build_ctc_vocab",
    "ctc_collapse",
    "ctc_greedy_ids",
    "decode_ctc_ids",
    "decode_ctc_predictions",
    "decode_labels",
    "filter_by_duration",
    "load_audio",
    "make_ctc_tokenizer",
    "prepare_speech_features",
    "undecoded_audio",
    "write_vocab",
]
