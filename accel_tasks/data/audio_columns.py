"""Audio columns that datasets neither encodes nor decodes through torchcodec.

Why: datasets 4.x and 5.x encode and decode ``Audio`` features through torchcodec, whose PyPI wheels are CUDA-linked
and fail next to the CPU build of torch (measured). The package reads audio itself (soundfile, and soxr to resample:
``recipes/speech/audio.py``), so all it needs from datasets is the undecoded value ``{"path", "bytes"}``. Two places
in datasets still reach for torchcodec: ``Audio.encode_example`` imports its encoder even to store a file's path
(the audiofolder builder stores every clip that way, and a stream encodes every row it reads), and an Audio column
left to decode decodes on every read. :func:`allow_undecoded_audio` and :func:`undecoded_audio_columns` close both,
for local folders, hub data sets and streams alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

if TYPE_CHECKING:
    import datasets

    Loaded = TypeVar("Loaded", datasets.Dataset, datasets.IterableDataset, datasets.DatasetDict)

# datasets' own Audio.encode_example, for the values only an encoder can store (see stored_audio_value).
_datasets_encode: Optional[Callable[[Any, Any], dict]] = None


def stored_audio_value(value: Any) -> Optional[dict[str, Any]]:
    """What ``datasets.Audio.encode_example`` stores for ``value`` when that needs no encoder (the same dict it
    returns: a path, bytes, or both); None for a decoded array, raw PCM or a torchcodec decoder, which only datasets'
    encoder can store."""
    if isinstance(value, str):
        return {"bytes": None, "path": value}
    if isinstance(value, Path):
        return {"bytes": None, "path": str(value.absolute())}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": value, "path": None}
    if not isinstance(value, dict) or "array" in value:
        return None
    path, data = value.get("path"), value.get("bytes")
    if path is not None and str(path).endswith("pcm"):  # raw samples: datasets turns them into wav bytes
        return None
    if path is not None and os.path.isfile(path):  # a local file is not copied into the table
        return {"bytes": None, "path": path}
    if data is not None or path is not None:
        return {"bytes": data, "path": path}
    return None


def _encode_example(feature: Any, value: Any) -> dict:
    """``Audio.encode_example`` without torchcodec wherever none is needed; datasets' own for the rest."""
    stored = stored_audio_value(value)
    if stored is not None:
        return stored
    assert _datasets_encode is not None
    return _datasets_encode(feature, value)


def allow_undecoded_audio() -> None:
    """Let datasets store audio paths and bytes without importing torchcodec (once per process).

    Values that really need an encoder (decoded arrays) still go to datasets' own, whose ImportError names
    torchcodec. Only what ``encode_example`` returns for the other values is kept, so a table is the same with or
    without torchcodec.
    """
    global _datasets_encode
    from datasets import Audio

    if Audio.encode_example is _encode_example:
        return
    _datasets_encode = Audio.encode_example
    Audio.encode_example = _encode_example  # type: ignore[method-assign]


def undecoded_audio_columns(loaded: Loaded) -> Loaded:
    """``loaded`` with every decoding Audio column cast to ``Audio(decode=False)`` (its sampling rate kept): rows
    then hold ``{"path", "bytes"}``, which the recipes read with soundfile. A stream's columns must be known
    (``resolve_stream``); one whose columns are not yet known is returned as it is."""
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        return datasets.DatasetDict({name: undecoded_audio_columns(split) for name, split in loaded.items()})
    for column, feature in (loaded.features or {}).items():
        if isinstance(feature, datasets.Audio) and feature.decode:
            loaded = loaded.cast_column(column, datasets.Audio(sampling_rate=feature.sampling_rate, decode=False))
    return loaded
