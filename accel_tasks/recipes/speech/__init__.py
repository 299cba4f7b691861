"""Speech-recognition task logic (CTC and encoder-decoder): the shared recipe base and plain functions.

``base`` holds :class:`~accel_tasks.recipes.speech.base.SpeechRecipe`, which the two family recipes
(``accel_tasks.recipes.speech_ctc``, ``accel_tasks.recipes.speech_seq2seq``) extend; ``rows`` holds the one row
filter of map-style and streamed data; the other modules are plain functions (audio, features, text, vocabulary,
decoding). ``tiny_whisper`` is not re-exported: it exists for tests and docs.

The names below are imported on first use, not with the package: the recipe modules import ``speech.base``
when a recipe is listed or resolved, and that must not import torch (``audio_features`` and ``decode`` do).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AudioLoadError": "audio",
    "audio_info": "audio",
    "load_audio": "audio",
    "undecoded_audio": "audio",
    "CTCCollator": "audio_features",
    "EmptyTranscriptError": "audio_features",
    "SpeechSeq2SeqCollator": "audio_features",
    "filter_by_duration": "audio_features",
    "prepare_speech_features": "audio_features",
    "ctc_collapse": "decode",
    "ctc_greedy_ids": "decode",
    "decode_ctc_ids": "decode",
    "decode_ctc_predictions": "decode",
    "decode_labels": "decode",
    "TextNormalizer": "normalize",
    "build_ctc_vocab": "vocab",
    "make_ctc_tokenizer": "vocab",
    "write_vocab": "vocab",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
