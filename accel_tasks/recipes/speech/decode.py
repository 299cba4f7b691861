"""Turning model outputs and labels back into text for scoring.

Why: CTC predictions must be collapsed (repeats merged, blanks dropped) while CTC labels
must not be (``three`` has a real double ``e``); padded frames beyond a clip's length
must not leak characters; and -100 label padding must be removed before decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from accel_tasks.recipes.speech.audio_features import LABEL_PAD


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def ctc_greedy_ids(logits: Any, lengths: Sequence[int] | Any | None = None, pad_id: int = 0) -> np.ndarray:
    """Argmax per frame; frames at or beyond each row's length become ``pad_id`` (the blank)."""
    ids = _as_numpy(logits).argmax(axis=-1)
    if lengths is not None:
        lengths = _as_numpy(lengths).reshape(-1)
        frame = np.arange(ids.shape[1])[None, :]
        ids = np.where(frame < lengths[:, None], ids, pad_id)
    return ids


def ctc_collapse(ids: Sequence[int], blank_id: int) -> list[int]:
    """Merge repeated ids, then drop blanks (so a blank separates real double letters)."""
    out: list[int] = []
    prev = None
    for i in ids:
        i = int(i)
        if i != prev and i != blank_id:
            out.append(i)
        prev = i
    return out


def decode_ctc_predictions(logits: Any, tokenizer: Any, lengths: Sequence[int] | Any | None = None) -> list[str]:
    """Greedy CTC decode: argmax, mask padded frames, merge repeats, drop blanks.

    The collapse is done here, not by the tokenizer: ``Wav2Vec2CTCTokenizer`` with
    ``skip_special_tokens=True`` drops blanks before merging and turns "three" into "thre".
    """
    blank = tokenizer.pad_token_id
    return decode_ctc_ids(ctc_greedy_ids(logits, lengths, pad_id=blank), tokenizer)


def decode_ctc_ids(ids: Any, tokenizer: Any) -> list[str]:
    """Greedy CTC decode of per-frame argmax ids; ``-100`` (padding beyond a clip's frames) is skipped.

    Why: evaluation gathers argmax ids, not logits, across processes (a fraction of the traffic),
    padded with -100; the collapse itself is the same as in :func:`decode_ctc_predictions`.
    """
    blank = tokenizer.pad_token_id
    rows = [ctc_collapse([i for i in row if i != LABEL_PAD], blank) for row in _as_numpy(ids).tolist()]
    return [t.strip() for t in tokenizer.batch_decode(rows, group_tokens=False)]


def decode_labels(labels: Any, tokenizer: Any, ctc: bool) -> list[str]:
    """Decode -100-padded labels; for CTC without merging repeated characters.

    Prefer the normalised text column as the reference where it is available: labels
    have lost characters outside the vocabulary (they decode as ``[UNK]``).
    """
    rows = [[int(t) for t in row if int(t) != LABEL_PAD] for row in _as_numpy(labels)]
    if ctc:
        return tokenizer.batch_decode(rows, group_tokens=False)
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def mask_frames(model: Any, frame_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Per-frame ids with frames beyond each clip's length set to -100, so padding never decodes.

    The attention mask may count input samples (wav2vec2: raw audio), in which case the model's
    ``_get_feat_extract_output_lengths`` converts lengths to output frames.
    """
    if attention_mask is None:
        return frame_ids
    lengths = attention_mask.sum(dim=-1)
    to_frames = getattr(model, "_get_feat_extract_output_lengths", None)
    if frame_ids.shape[1] != attention_mask.shape[1] and to_frames is not None:
        lengths = to_frames(lengths)
    frame = torch.arange(frame_ids.shape[1], device=frame_ids.device)[None, :]
    return torch.where(frame < lengths.to(frame_ids.device)[:, None], frame_ids, torch.full_like(frame_ids, LABEL_PAD))
