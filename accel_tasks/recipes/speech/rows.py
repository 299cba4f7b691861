"""Which raw speech rows are kept: the one row filter of both data paths.

Why one module: a map-style split (checked whole before features are made) and a streamed split (checked batch by
batch as it is read) must keep exactly the same rows and refuse exactly the same ones. Both compute
:func:`row_verdicts` for their rows and hand them to :func:`judge_rows`, which raises the errors and reports the
drop counts; only where the rows come from differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from accel_tasks import log
from accel_tasks.errors import ConfigError
from accel_tasks.recipes.speech.audio import AudioLoadError, audio_info
from accel_tasks.recipes.speech.rawdata import (
    PROBE_DURATION,
    PROBE_RATE,
    SpeechColumns,
    empty_transcript_rows,
    shown_rows,
)

# Verdict column written by row_verdicts, beside the probe columns; its values are the codes below.
VERDICT = "__verdict"
PROBLEM = "__problem"
KEPT, EMPTY_TRANSCRIPT, UNREADABLE, SILENT, TOO_SHORT, TOO_LONG, OVER_WINDOW, OVER_DECODER = range(8)
# Rows whose clip was read (the counts of the resampling and duration reports are out of these).
PROBED = (KEPT, SILENT, TOO_SHORT, TOO_LONG, OVER_WINDOW, OVER_DECODER)


@dataclass(frozen=True)
class LabelLimit:
    """How long a transcript's labels are for the decoder, and how many positions it has.

    Why here, from the text: a label longer than the decoder's position table ends in an index error inside the
    model (a device-side assert on GPU) after features were made; tokenising the transcript alone finds it in the
    row filter. The length is the one the decoder sees: the labels as ``preprocess`` makes them (the transcript
    through ``normalizer``, then the tokenizer with its prefix tokens and end token), less the leading start token
    the seq2seq collator removes (the model puts it back as the first decoder input), so exactly ``positions``
    tokens fit.
    """

    tokenizer: Any
    normalizer: Optional[Callable[[str], str]]
    positions: int
    start_token_id: Optional[int]

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """The decoder length of each transcript's labels."""
        texts = [self.normalizer(text) if self.normalizer is not None else text for text in texts]
        rows = self.tokenizer(list(texts)).input_ids if texts else []
        start = self.start_token_id
        return [len(row) - int(start is not None and len(row) > 0 and row[0] == start) for row in rows]


@dataclass(frozen=True)
class RowRule:
    """Everything that decides a raw row's fate: handed to the batched filters (and to their worker processes),
    so it holds picklable values only, never the recipe."""

    columns: SpeechColumns
    transcript_normalizers: tuple[Optional[Callable[[str], str]], ...]
    """A transcript empty after any of these is empty (None: the raw text); unused when columns.text is None."""
    base_dir: Optional[str]
    """Where relative audio paths point from."""
    min_duration_s: Optional[float]
    max_duration_s: Optional[float]
    window_s: Optional[float]
    """A fixed-window model's input length (Whisper would cut longer clips); None: any length."""
    drop_empty_transcripts: bool
    sampling_rate: int
    """The feature extractor's rate, for the resampling report."""
    label_limit: Optional[LabelLimit] = None
    """The decoder's length limit on transcripts (encoder-decoder training); None: any length."""
    on_too_long: str = "drop"
    """task.on_too_long: rows over the input window or the decoder's positions are dropped, or an error."""


def duration_verdict(seconds: float, rule: RowRule) -> int:
    """KEPT, or why a clip of this length is not: empty, outside task.min/max_duration_s, longer than the window."""
    if seconds <= 0:
        return SILENT
    if rule.min_duration_s is not None and seconds < rule.min_duration_s:
        return TOO_SHORT
    if rule.max_duration_s is not None and seconds > rule.max_duration_s:
        return TOO_LONG
    if rule.window_s is not None and seconds > rule.window_s:
        return OVER_WINDOW
    return KEPT


def row_verdicts(batch: dict[str, list], rule: RowRule) -> dict[str, list]:
    """Batched: each row's verdict, and its clip's duration and sampling rate from the file header.

    A clip that cannot be read is a verdict (UNREADABLE, with the reason), not an exception, so that
    :func:`judge_rows` raises the errors in one order whatever the batch boundaries: empty transcripts first.
    Clips of rows with an empty transcript are not read.
    """
    ids = batch[rule.columns.id]
    verdicts = [KEPT] * len(ids)
    if rule.columns.text is not None:
        for position in empty_transcript_rows(ids, batch[rule.columns.text], rule.transcript_normalizers):
            verdicts[position] = EMPTY_TRANSCRIPT
    durations, rates, problems = [0.0] * len(ids), [0] * len(ids), [""] * len(ids)
    for position, (value, row_id) in enumerate(zip(batch[rule.columns.audio], ids)):
        if verdicts[position] != KEPT:
            continue
        try:
            duration, rate = audio_info(value, row_id=row_id, base_dir=rule.base_dir)
        except AudioLoadError as exc:
            verdicts[position], problems[position] = UNREADABLE, str(exc)
            continue
        durations[position], rates[position] = float(duration), int(rate)
        verdicts[position] = duration_verdict(durations[position], rule)
    if rule.label_limit is not None and rule.columns.text is not None:
        # Only the rows kept so far are tokenised: the checks that need the clip alone come first.
        kept = [position for position, verdict in enumerate(verdicts) if verdict == KEPT]
        lengths = rule.label_limit.lengths([str(batch[rule.columns.text][position]) for position in kept])
        for position, length in zip(kept, lengths):
            if length > rule.label_limit.positions:
                verdicts[position] = OVER_DECODER
    return {VERDICT: verdicts, PROBE_DURATION: durations, PROBE_RATE: rates, PROBLEM: problems}


def judge_rows(
    ids: Sequence[Any], verdicts: Mapping[str, Sequence[Any]], rule: RowRule, subject: str, report_as: Optional[str]
) -> np.ndarray:
    """The keep-mask of rows with these verdicts; raises ConfigError for rows that are errors, not drops.

    ``subject`` names the rows in errors ("the train data", "the train stream"); ``report_as`` prefixes the
    drop and resampling counts (None: say nothing, as for every streamed batch after the first rows).
    """
    codes = np.asarray(verdicts[VERDICT], dtype=np.int64)
    empty = np.flatnonzero(codes == EMPTY_TRANSCRIPT)
    if len(empty) and not rule.drop_empty_transcripts:
        raise ConfigError(
            f"{subject} has {len(empty)} row(s) with an empty transcript (after normalisation): rows "
            f"{shown_rows([ids[i] for i in empty])}; remove them or set task.drop_empty_transcripts=true"
        )
    if len(empty) and report_as:
        log.info(
            f"{report_as}: dropped {len(empty)} of {len(ids)} rows with an empty transcript "
            f"(rows {shown_rows([ids[i] for i in empty])})"
        )
    unreadable = np.flatnonzero(codes == UNREADABLE)
    if len(unreadable):
        problem = verdicts[PROBLEM][unreadable[0]]
        hint = " (relative paths: task.audio_dir=<folder>)" if "not found" in problem else ""
        raise ConfigError(f"{problem}{hint}")
    probed = np.isin(codes, PROBED)
    if report_as:
        _report_resampling(np.asarray(verdicts[PROBE_RATE], dtype=np.int64)[probed], rule.sampling_rate, report_as)
    silent = np.flatnonzero(codes == SILENT)
    if len(silent):
        raise ConfigError(
            f"{subject} has {len(silent)} empty audio clip(s) (0 samples): rows "
            f"{shown_rows([ids[i] for i in silent])}; remove those rows"
        )
    if report_as:
        _report_durations(codes[probed], rule, report_as)
    _judge_too_long(ids, codes, rule, subject, report_as)
    return codes == KEPT


def kept_rows(batch: dict[str, list], rule: RowRule, subject: str) -> list[bool]:
    """Batched keep-mask for ``IterableDataset.filter``: the verdicts judged, errors raised, nothing reported."""
    return judge_rows(batch[rule.columns.id], row_verdicts(batch, rule), rule, subject, None).tolist()


def _report_resampling(rates: np.ndarray, sampling_rate: int, where: str) -> None:
    """One line for the clips whose sampling rate is not the feature extractor's (they are resampled)."""
    other = rates != sampling_rate
    if other.any():
        found = ", ".join(f"{int(rate)} Hz" for rate in np.unique(rates[other]))
        log.info(f"{where}: {int(other.sum())} of {len(rates)} clips at {found} are resampled to {sampling_rate} Hz")


def _report_durations(codes: np.ndarray, rule: RowRule, where: str) -> None:
    """The counts of task.min/max_duration_s (when set) and of the model's input window (when it removed any)."""
    if rule.min_duration_s is not None or rule.max_duration_s is not None:
        low = rule.min_duration_s if rule.min_duration_s is not None else 0.0
        high = rule.max_duration_s if rule.max_duration_s is not None else np.inf
        shorter, longer = int((codes == TOO_SHORT).sum()), int((codes == TOO_LONG).sum())
        log.info(
            f"{where}: duration filter [{low:g}, {high:g}] s removed {shorter + longer} of {len(codes)} clips "
            f"({shorter} shorter, {longer} longer), kept {len(codes) - shorter - longer}"
        )
    over_window = int((codes == OVER_WINDOW).sum())
    if over_window and rule.on_too_long == "drop":
        log.info(f"{where}: removed {over_window} clips longer than the model's {rule.window_s:g} s input window")


def _judge_too_long(
    ids: Sequence[Any], codes: np.ndarray, rule: RowRule, subject: str, report_as: Optional[str]
) -> None:
    """Rows the model cannot take whole (task.on_too_long): an error naming them, or the count of those dropped.

    The window's count is part of the duration report (:func:`_report_durations`); the decoder's is said here.
    """
    window = np.flatnonzero(codes == OVER_WINDOW)
    decoder = np.flatnonzero(codes == OVER_DECODER)
    if rule.on_too_long == "error" and len(window):
        raise ConfigError(
            f"{subject} has {len(window)} clip(s) longer than the model's {rule.window_s:g} s input window, which "
            f"would cut them and keep the whole transcript: rows {shown_rows([ids[i] for i in window])}; split or "
            "remove them, or set task.on_too_long=drop to drop them"
        )
    if not len(decoder):
        return
    limit = rule.label_limit.positions if rule.label_limit is not None else 0
    if rule.on_too_long == "error":
        raise ConfigError(
            f"{subject} has {len(decoder)} transcript(s) longer than the decoder's {limit} positions once tokenised "
            f"(with the language and task tokens): rows {shown_rows([ids[i] for i in decoder])}; shorten or remove "
            "them, or set task.on_too_long=drop to drop them"
        )
    if report_as:
        log.info(
            f"{report_as}: dropped {len(decoder)} of {len(codes)} rows whose transcript is longer than the decoder's "
            f"{limit} positions once tokenised (rows {shown_rows([ids[i] for i in decoder])})"
        )


def check_clip_headers(dataset: Any, columns: SpeechColumns, base_dir: Optional[Path], split: str) -> None:
    """Before the model loads: every clip's file header read, so a missing, unreadable or empty clip is one line
    in seconds. Only what needs no model is judged here; the window, the decoder's limit and the normalised
    transcripts (the model's feature extractor and tokenizer) wait for ``prepare_raw``, which reads the headers
    again with the whole rule."""
    if columns.id not in dataset.column_names:  # rows named by their index, as prepare_raw names them
        dataset = dataset.add_column(columns.id, list(range(len(dataset))))
    rule = RowRule(
        columns=SpeechColumns(audio=columns.audio, text=None, id=columns.id),
        transcript_normalizers=(),
        base_dir=str(base_dir) if base_dir else None,
        min_duration_s=None,
        max_duration_s=None,
        window_s=None,
        drop_empty_transcripts=True,
        sampling_rate=0,
    )
    verdicts = dataset.select_columns([columns.audio, columns.id]).map(
        row_verdicts,
        batched=True,
        remove_columns=[columns.audio, columns.id],
        fn_kwargs={"rule": rule},
        keep_in_memory=True,
        load_from_cache_file=False,
        desc=f"reading {split} audio headers",
    )[:]
    judge_rows(dataset[columns.id], verdicts, rule, f"the {split} data", None)
