"""Audio/text → model features, a duration filter, and padding collators.

Why: CTC and encoder-decoder speech models need the same preparation (load audio at the
feature extractor's rate, compute features, tokenise the transcript, keep the duration
for filtering); they differ in which tokenizer makes the labels and how labels are
trimmed at batch time. Functions here are pure so they work with ``datasets.map``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from accel_tasks.recipes.speech.audio import load_audio
from accel_tasks.recipes.speech.rawdata import SpeechColumns

DURATION_COLUMN = "duration"
# Cached model inputs are raw float32 bytes plus this shape column: reading a batch back from Arrow is then
# a memcpy instead of one Python float per value (36 ms -> 2 ms for 16 clips; bench/audio_pipeline.py).
SHAPE_COLUMN = "input_shape"
LABEL_PAD = -100  # ignored by the loss
# The columns prepare_speech_features reads unless told otherwise.
DEFAULT_COLUMNS = SpeechColumns(audio="audio", text="text", id="id")


class EmptyTranscriptError(ValueError):
    """Some rows have no text left after normalisation; the message lists their ids."""


def _row_ids(batch: dict[str, list], id_column: str | None, indices: Sequence[int] | None, n: int) -> list:
    if id_column and id_column in batch:
        return list(batch[id_column])
    if indices is not None:
        return list(indices)
    return [f"batch position {i}" for i in range(n)]


def _check_columns(batch: dict[str, list], audio_column: str, text_column: str | None) -> None:
    missing = [c for c in (audio_column, text_column) if c is not None and c not in batch]
    if missing:
        raise ValueError(
            f"column(s) {missing} not found; the data has {sorted(batch)}. "
            "Fix: set the task's audio/text column options to the names in your data."
        )


def prepare_speech_features(
    batch: dict[str, list],
    indices: Sequence[int] | None = None,
    *,
    feature_extractor: Any,
    tokenizer: Any,
    normalizer: Callable[[str], str] | None = None,
    columns: SpeechColumns = DEFAULT_COLUMNS,
    base_dir: str | os.PathLike[str] | None = None,
) -> dict[str, list]:
    """Batched ``datasets.map`` function for CTC and encoder-decoder models alike.

    Returns the feature extractor's input (plus its ``attention_mask`` when it makes one), ``labels`` from the
    tokenizer and ``duration`` in seconds. CTC: pass the ``normalizer`` that built the character vocabulary.
    Encoder-decoder (e.g. Whisper): labels are the tokenizer's full sequence with its prefix tokens
    (start-of-transcript, language, task, no-timestamps) and end-of-text, so set the tokenizer's language/task
    first (``tokenizer.set_prefix_tokens``); the collator removes the leading start token; no normaliser by
    default, Whisper is trained on cased, punctuated text. Errors name rows by ``columns.id``, else by
    ``indices`` (``map(..., with_indices=True)``). ``columns.text=None``: audio alone (no labels), for predictions.
    """
    audio_column, text_column, id_column = columns.audio, columns.text, columns.id
    _check_columns(batch, audio_column, text_column)
    n = len(batch[audio_column])
    ids = _row_ids(batch, id_column, indices, n)
    texts = (
        []
        if text_column is None
        else [normalizer(t) if (normalizer is not None and t is not None) else t for t in batch[text_column]]
    )
    empty = [rid for rid, t in zip(ids, texts) if t is None or not str(t).strip()]
    if empty:
        shown = ", ".join(repr(r) for r in empty[:10]) + (" ..." if len(empty) > 10 else "")
        raise EmptyTranscriptError(
            f"{len(empty)} row(s) have an empty transcript after normalisation: {shown}. "
            "Fix: drop those rows from the data, or check the text column and normaliser settings."
        )

    sr = int(feature_extractor.sampling_rate)
    out: dict[str, list] = {DURATION_COLUMN: []}
    for value, rid in zip(batch[audio_column], ids):
        audio = load_audio(value, sr, row_id=rid, base_dir=base_dir)
        out[DURATION_COLUMN].append(len(audio) / sr)
        # One clip per call: a batched call would pad clips to each other before storage.
        feats = feature_extractor(audio, sampling_rate=sr)
        for key, val in feats.items():
            out.setdefault(key, []).append(np.asarray(val[0]))
    if text_column is not None:
        out["labels"] = tokenizer(texts).input_ids
    return out


def filter_by_duration(
    dataset: Any, min_s: float | None = None, max_s: float | None = None, column: str = DURATION_COLUMN
) -> tuple[Any, int]:
    """Keep rows with ``min_s <= duration <= max_s``; return the dataset and how many were removed."""
    if column not in dataset.column_names:
        raise ValueError(
            f"column {column!r} not found (columns: {dataset.column_names}). "
            "Fix: filter after prepare_*_features, which adds it."
        )
    if min_s is not None and min_s < 0:
        raise ValueError(f"min duration must be >= 0 seconds, got {min_s}.")
    if min_s is not None and max_s is not None and max_s < min_s:
        raise ValueError(f"max duration {max_s} s is below min duration {min_s} s. Fix: swap or widen them.")
    if min_s is None and max_s is None:
        return dataset, 0
    lo = float("-inf") if min_s is None else float(min_s)
    hi = float("inf") if max_s is None else float(max_s)
    kept = dataset.filter(lambda d: lo <= d <= hi, input_columns=[column])
    return kept, len(dataset) - len(kept)


class _SpeechCollator:
    """Pads audio features with the feature extractor and labels with -100, separately."""

    def __init__(
        self,
        processor_or_feature_extractor: Any,
        tokenizer: Any = None,
        *,
        return_attention_mask: bool | None = None,
        pad_to_multiple_of: int | None = None,
        float_dtype: torch.dtype | None = None,
    ) -> None:
        fe = getattr(processor_or_feature_extractor, "feature_extractor", processor_or_feature_extractor)
        tok = tokenizer if tokenizer is not None else getattr(processor_or_feature_extractor, "tokenizer", None)
        if tok is None:
            raise ValueError("a tokenizer is needed: pass a processor, or a feature extractor and a tokenizer.")
        self.feature_extractor = fe
        self.tokenizer = tok
        self.input_name = fe.model_input_names[0]
        self.return_attention_mask = return_attention_mask
        self.pad_to_multiple_of = pad_to_multiple_of
        # Under DeepSpeed bf16 there is no autocast: float inputs must match the weights.
        self.float_dtype = float_dtype

    def _pad_labels(self, features: list[dict[str, Any]]) -> torch.Tensor | None:
        has = ["labels" in f and f["labels"] is not None for f in features]
        if not any(has):
            return None
        if not all(has):
            raise ValueError("some examples in the batch have labels and some do not; give labels for all or none.")
        rows = [list(f["labels"]) for f in features]
        longest = max(len(r) for r in rows)
        labels = torch.full((len(rows), longest), LABEL_PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            labels[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        return labels

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        inputs = []
        for f in features:
            item = {self.input_name: f[self.input_name]}
            if "attention_mask" in f:
                item["attention_mask"] = f["attention_mask"]
            inputs.append(item)
        batch = self.feature_extractor.pad(
            inputs,
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_attention_mask=self.return_attention_mask,
            return_tensors="pt",
        )
        batch = dict(batch)
        if self.float_dtype is not None:
            batch = {k: v.to(self.float_dtype) if v.is_floating_point() else v for k, v in batch.items()}
        labels = self._pad_labels(features)
        if labels is not None:
            batch["labels"] = self._finish_labels(labels)
        return batch

    def _finish_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return labels


class CTCCollator(_SpeechCollator):
    """Collator for CTC models: padded features (+ attention mask) and -100-padded labels."""


class SpeechSeq2SeqCollator(_SpeechCollator):
    """Collator for encoder-decoder models.

    The model prepends ``decoder_start_token_id`` itself when it shifts labels right, so
    a leading start token the tokenizer added is removed here (as in HF's Whisper
    fine-tuning example) to avoid training on it twice.
    """

    def __init__(
        self,
        processor_or_feature_extractor: Any,
        tokenizer: Any = None,
        *,
        decoder_start_token_id: int | None = None,
        return_attention_mask: bool | None = None,
        pad_to_multiple_of: int | None = None,
        float_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            processor_or_feature_extractor,
            tokenizer,
            return_attention_mask=return_attention_mask,
            pad_to_multiple_of=pad_to_multiple_of,
            float_dtype=float_dtype,
        )
        self.decoder_start_token_id = decoder_start_token_id

    def _finish_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if (
            self.decoder_start_token_id is not None
            and labels.shape[1] > 0
            and bool((labels[:, 0] == self.decoder_start_token_id).all())
        ):
            labels = labels[:, 1:]
        return labels


def pack_arrays(arrays: Sequence[Any]) -> tuple[list[bytes], list[list[int]]]:
    """Feature arrays -> (float32 bytes, shapes), the form the feature cache stores."""
    packed = [np.ascontiguousarray(array, dtype=np.float32) for array in arrays]
    return [array.tobytes() for array in packed], [list(array.shape) for array in packed]


def unpack_arrays(row: dict[str, Any], name: str) -> dict[str, Any]:
    """One cached row -> the collators' input, with ``row[name]`` back as a float32 array."""
    out = {key: value for key, value in row.items() if key not in (name, SHAPE_COLUMN)}
    out[name] = np.frombuffer(row[name], dtype=np.float32).reshape(row[SHAPE_COLUMN])
    return out
