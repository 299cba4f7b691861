"""Checks and fix-ups on raw speech rows, run before the (expensive) feature extraction.

Why: a missing file, a clip at another sampling rate, a clip too long for the model or an empty
transcript should be found in seconds from file headers and the text column, with the rows named,
rather than minutes into feature extraction or, worse, not at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from accel_tasks.errors import list_rows
from accel_tasks.recipes.speech.audio import audio_info

# Columns added by the probe (and removed again by the recipe); double underscores keep clear of user columns.
PROBE_DURATION = "__duration_s"
PROBE_RATE = "__sampling_rate"
# Row numbers, added when the data has no id column, so that errors can name rows after filtering.
ROW_COLUMN = "__row"

AUDIO_COLUMNS = ("audio", "path", "file", "audio_filepath", "audio_path", "file_path", "filename")
TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text", "raw_text")
SHOWN_ROWS = 10


def audio_feature_columns(dataset: Any) -> list[str]:
    """Columns typed as a datasets ``Audio`` feature."""
    from datasets import Audio

    return [name for name, feature in (dataset.features or {}).items() if isinstance(feature, Audio)]


def pick_column(
    column_names: Sequence[str], explicit: str | None, candidates: Sequence[str], preferred: Sequence[str] = ()
) -> str | None:
    """The user's column, else the first ``preferred`` one (typed columns), else the first known name present."""
    if explicit:
        return explicit
    for name in list(preferred) + list(candidates):
        if name in column_names:
            return name
    return None


def shown_rows(row_ids: Sequence[Any]) -> str:
    """Up to SHOWN_ROWS row ids for an error message (audio errors quote more rows than the default)."""
    return list_rows(row_ids, SHOWN_ROWS)


def probe_audio(
    batch: dict[str, list], *, audio_column: str, id_column: str, base_dir: str | os.PathLike[str] | None
) -> dict[str, list]:
    """Batched ``datasets.map`` function: duration and sampling rate of every clip, from headers.

    Raises :class:`~accel_tasks.recipes.speech.audio.AudioLoadError` naming the row and path of a clip
    that is missing or unreadable.
    """
    durations, rates = [], []
    for value, row_id in zip(batch[audio_column], batch[id_column]):
        duration, rate = audio_info(value, row_id=row_id, base_dir=base_dir)
        durations.append(float(duration))
        rates.append(int(rate))
    return {PROBE_DURATION: durations, PROBE_RATE: rates}


def empty_transcript_rows(
    row_ids: Sequence[Any], texts: Iterable[Any], normalizers: Sequence[Callable[[str], str] | None]
) -> list[int]:
    """Positions whose text is missing, or empty after any of ``normalizers`` (None = the raw text)."""
    empty = []
    for position, text in enumerate(texts):
        if text is None or not str(text).strip():
            empty.append(position)
            continue
        if any(n is not None and not n(str(text)).strip() for n in normalizers):
            empty.append(position)
    return empty


def unknown_characters(texts: Iterable[str], tokenizer: Any) -> set[str]:
    """Characters of (already normalised) transcripts that a CTC tokenizer maps to its unknown token.

    ``Wav2Vec2CTCTokenizer(do_lower_case=True)`` upper-cases its input, so lookups follow that.
    """
    vocab = tokenizer.get_vocab()
    upper = bool(getattr(tokenizer, "do_lower_case", False))
    chars: set[str] = set()
    for text in texts:
        chars.update(text)
    chars.discard(" ")
    return {c for c in chars if (c.upper() if upper else c) not in vocab}


def input_window_s(feature_extractor: Any) -> float | None:
    """Seconds a fixed-window feature extractor (Whisper's) keeps; None for extractors taking any length.

    Whisper pads or cuts every clip to this window, so a longer clip would silently lose its end.
    """
    if hasattr(feature_extractor, "n_samples") and getattr(feature_extractor, "chunk_length", None):
        return float(feature_extractor.chunk_length)
    return None
