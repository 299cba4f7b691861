"""Audio loading that needs neither torchcodec nor ffmpeg.

Why: datasets 5.x decodes ``Audio`` columns through torchcodec, whose PyPI wheels are
CUDA-linked and fail next to the CPU build of torch. Reading the undecoded column with
soundfile (and resampling with soxr, the library behind librosa's default resampler, called
directly because importing librosa costs seconds) works on CPU-only and GPU machines alike.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


class AudioLoadError(ValueError):
    """An audio value could not be turned into a waveform; the message names row and path."""


def _where(row_id: Any) -> str:
    return f"row {row_id!r}: " if row_id is not None else ""


def _to_mono(audio: np.ndarray, channels_first: bool) -> np.ndarray:
    """Average channels. soundfile gives (frames, channels); decoders give (channels, frames)."""
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise AudioLoadError(f"expected a 1-D or 2-D audio array, got shape {audio.shape}")
    return audio.mean(axis=0 if channels_first else 1)


def _undecodable(row_id: Any, shown: str, err: BaseException) -> AudioLoadError:
    """The one line for a clip soundfile cannot read: its format needs a decoder the package does not use
    (torchcodec, see the module docstring), so the fix is a converted file, and ffmpeg is what converts it."""
    import soundfile as sf

    return AudioLoadError(
        f"{_where(row_id)}cannot decode audio {shown}: {str(err).rstrip('.')}. "
        f"Fix: soundfile (libsndfile {sf.__libsndfile_version__}) reads wav, flac, ogg and mp3; convert other "
        "formats with ffmpeg (install ffmpeg, then e.g. `ffmpeg -i in.m4a out.flac`)."
    )


def _read_soundfile(source: Any, row_id: Any, shown: str) -> tuple[np.ndarray, int]:
    """Read a path or file-like object with soundfile, wrapping failures in one clear error."""
    import soundfile as sf

    try:
        audio, sr = sf.read(source, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise _undecodable(row_id, shown, err) from err
    return _to_mono(audio, channels_first=False), int(sr)


def _resolve_path(path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None, row_id: Any) -> Path:
    """A relative path is taken relative to ``base_dir``; a missing file is an error naming row and path."""
    resolved = Path(path)
    if not resolved.is_absolute() and base_dir is not None:
        resolved = Path(base_dir) / resolved
    if not resolved.is_file():
        hint = f" (relative to {base_dir})" if base_dir is not None and not Path(path).is_absolute() else ""
        raise AudioLoadError(
            f"{_where(row_id)}audio file not found: {resolved}{hint}. "
            "Fix: correct the path in the data file, or set the data directory the paths are relative to."
        )
    return resolved


def _read_path(path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None, row_id: Any):
    resolved = _resolve_path(path, base_dir, row_id)
    return _read_soundfile(str(resolved), row_id, str(resolved))


def _header_info(source: Any, row_id: Any, shown: str) -> tuple[float, int]:
    """(duration in s, sampling rate) from the file header; decodes only when the header has no length."""
    import soundfile as sf

    try:
        info = sf.info(source)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise _undecodable(row_id, shown, err) from err
    if info.frames > 0 and info.samplerate > 0:
        return info.frames / info.samplerate, int(info.samplerate)
    if hasattr(source, "seek"):
        source.seek(0)
    audio, sr = _read_soundfile(source, row_id, shown)
    return len(audio) / sr, sr


def audio_info(value: Any, row_id: Any = None, base_dir: str | os.PathLike[str] | None = None) -> tuple[float, int]:
    """Duration (s) and sampling rate of one audio value, read from the header where there is one.

    Why: filtering by duration and checking that every file exists and is readable must be cheap
    enough to run over a whole data set before the (expensive) feature extraction starts.
    Accepts the same values as :func:`load_audio`.
    """
    if isinstance(value, (str, os.PathLike)):
        resolved = _resolve_path(value, base_dir, row_id)
        return _header_info(str(resolved), row_id, str(resolved))
    if isinstance(value, Mapping) and value.get("array") is None:
        if value.get("bytes") is not None:
            shown = f"bytes of {value.get('path')!r}" if value.get("path") else "(in-memory bytes)"
            return _header_info(io.BytesIO(value["bytes"]), row_id, shown)
        if value.get("path") is not None:
            resolved = _resolve_path(value["path"], base_dir, row_id)
            return _header_info(str(resolved), row_id, str(resolved))
    audio, sr = _decode_value(value, base_dir, row_id)
    return len(audio) / sr, sr


def _decode_value(value: Any, base_dir: str | os.PathLike[str] | None, row_id: Any) -> tuple[np.ndarray, int]:
    """Return (mono waveform, sampling rate) for any supported input form."""
    if isinstance(value, (str, os.PathLike)):
        return _read_path(value, base_dir, row_id)
    if isinstance(value, Mapping):
        if value.get("array") is not None:
            if value.get("sampling_rate") is None:
                raise AudioLoadError(
                    f"{_where(row_id)}decoded audio has an 'array' but no 'sampling_rate'. "
                    "Fix: include the sampling rate so the audio can be resampled correctly."
                )
            array = np.asarray(value["array"], dtype=np.float32)
            # Decoded arrays from datasets are (channels, frames) when not mono.
            channels_first = array.ndim == 2 and array.shape[0] < array.shape[1]
            return _to_mono(array, channels_first), int(value["sampling_rate"])
        if value.get("bytes") is not None:
            shown = f"bytes of {value.get('path')!r}" if value.get("path") else "(in-memory bytes)"
            return _read_soundfile(io.BytesIO(value["bytes"]), row_id, shown)
        if value.get("path") is not None:
            return _read_path(value["path"], base_dir, row_id)
        raise AudioLoadError(
            f"{_where(row_id)}audio value has none of 'array', 'bytes', 'path' (keys: {sorted(value)}). "
            "Fix: give a file path or a datasets Audio value."
        )
    if hasattr(value, "get_all_samples"):  # torchcodec AudioDecoder, where torchcodec works
        samples = value.get_all_samples()
        data = samples.data.numpy().astype(np.float32)
        return _to_mono(data, channels_first=True), int(samples.sample_rate)
    raise AudioLoadError(
        f"{_where(row_id)}unsupported audio value of type {type(value).__name__}. "
        "Fix: give a file path, {'path', 'bytes'} or {'array', 'sampling_rate'}."
    )


def load_audio(
    value: Any,
    target_sr: int,
    row_id: Any = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Load one audio value as mono float32 at ``target_sr``.

    ``value`` may be a file path (relative paths resolved against ``base_dir``), an
    undecoded datasets Audio dict ``{"path", "bytes"}``, or a decoded one
    ``{"array", "sampling_rate"}``. Stereo is averaged to mono; a different sampling
    rate is resampled with soxr rather than silently used.
    """
    audio, sr = _decode_value(value, base_dir, row_id)
    if audio.size == 0:
        raise AudioLoadError(f"{_where(row_id)}audio is empty (0 samples). Fix: remove the row or replace the file.")
    if sr != target_sr:
        import soxr

        # Same result as librosa.resample(..., res_type="soxr_hq").
        audio = soxr.resample(audio, sr, target_sr, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


def undecoded_audio(dataset: Any, column: str) -> Any:
    """Cast ``column`` to ``Audio(decode=False)`` when it is an Audio feature.

    Works on a ``Dataset`` or ``DatasetDict``; any other column type is left alone, so
    plain path columns pass through. This keeps torchcodec out of the data path.
    """
    from datasets import Audio, DatasetDict

    if isinstance(dataset, DatasetDict):
        return DatasetDict({name: undecoded_audio(split, column) for name, split in dataset.items()})
    feature = (dataset.features or {}).get(column)
    if isinstance(feature, Audio) and feature.decode:
        return dataset.cast_column(column, Audio(sampling_rate=feature.sampling_rate, decode=False))
    return dataset
