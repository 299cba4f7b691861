"""Checks and fix-ups on raw speech rows, run before the (expensive) feature extraction, and their columns.

Why: a missing file, a clip at another sampling rate, a clip too long for the model or an empty
transcript should be found in seconds from file headers and the text column, with the rows named,
rather than minutes into feature extraction or, worse, not at all.

Why columns are computed, not remembered: the audio, text and id columns follow from the column names (and, for
a column typed as datasets ``Audio``, from its values), so every hook that needs them asks :func:`speech_columns`
and gets the same answer; nothing is stored on the recipe when data is first seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from accel_tasks.errors import ConfigError, list_rows

# Columns the row filter writes (accel_tasks.recipes.speech.rows); double underscores keep clear of user columns.
PROBE_DURATION = "__duration_s"
PROBE_RATE = "__sampling_rate"
# Row numbers, added when the data has no id column, so that errors can name rows after filtering.
ROW_COLUMN = "__row"

AUDIO_COLUMNS = ("audio", "path", "file", "audio_filepath", "audio_path", "file_path", "filename")
TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text", "raw_text")
SHOWN_ROWS = 10
# Keys of a value of a datasets Audio column: undecoded (as load_data leaves it) or decoded.
AUDIO_VALUE_KEYS = ({"bytes", "path"}, {"array", "sampling_rate"})


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


@dataclass(frozen=True)
class SpeechColumns:
    """The columns a speech split is read from; ``text`` is None without references (mode=predict on audio alone)."""

    audio: str
    text: Optional[str]
    id: Optional[str]
    """None: rows are named by their index (``datasets.map(..., with_indices=True)``)."""


def id_column(column_names: Sequence[str], explicit: Optional[str]) -> str:
    """task.id_column, else ``id`` when present, else the row numbers that prepare_raw / prepare_stream add."""
    return explicit or ("id" if "id" in column_names else ROW_COLUMN)


def audio_valued_columns(rows: Mapping[str, Sequence[Any]]) -> list[str]:
    """Columns whose first value is a datasets Audio value (a ``{bytes, path}`` or ``{array, sampling_rate}`` mapping).

    Why values and not the features' types: ``preprocess`` sees a batch, not the dataset, and must pick the same
    audio column as the hooks that see the dataset. load_data leaves every Audio column undecoded, so the columns
    typed Audio are exactly the ones holding such mappings.
    """
    found = []
    for name, values in rows.items():
        first = next((value for value in values if value is not None), None)
        if isinstance(first, Mapping) and any(keys <= first.keys() for keys in AUDIO_VALUE_KEYS):
            found.append(name)
    return found


def speech_columns(rows: Mapping[str, Sequence[Any]], options: Any, with_references: bool) -> SpeechColumns:
    """(audio, text, id) columns of rows (a batch, or the first rows of a split): the user's, else a column holding
    Audio values, else well-known names; ``options`` is the recipe's task options."""
    names = list(rows)
    audio = pick_column(names, options.audio_column, AUDIO_COLUMNS, audio_valued_columns(rows))
    text = pick_column(names, options.text_column, TEXT_COLUMNS) if with_references else None
    if audio is None:
        missing = "an audio column (task.audio_column=<column>)"
    elif text is None and with_references:
        missing = "a text column (task.text_column=<column>)"
    else:
        return SpeechColumns(audio=audio, text=text, id=id_column(names, options.id_column))
    raise ConfigError(f"cannot find {missing} among the data's columns: {', '.join(names)}")


def shown_rows(row_ids: Sequence[Any]) -> str:
    """Up to SHOWN_ROWS row ids for an error message (audio errors quote more rows than the default)."""
    return list_rows(row_ids, SHOWN_ROWS)


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
