"""Character vocabulary and tokenizer for CTC models (wav2vec2 convention).

Why: a CTC head predicts one character per frame, so the vocabulary is the set of
characters in the (normalised) training transcripts, with ``|`` standing for the space
between words, plus ``[UNK]`` and ``[PAD]`` (the CTC blank, which goes last).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

WORD_DELIMITER = "|"
UNK_TOKEN = "[UNK]"
PAD_TOKEN = "[PAD]"
VOCAB_FILE = "vocab.json"


def build_ctc_vocab(texts: Iterable[str], normalizer: Callable[[str], str] | None = None) -> dict[str, int]:
    """Map every character seen in the normalised ``texts`` to an id.

    Characters are sorted so the same texts always give the same ids; the space becomes
    ``|``; ``[UNK]`` and ``[PAD]`` take the last two ids.
    """
    chars: set[str] = set()
    for text in texts:
        chars.update(normalizer(text) if normalizer is not None else text)
    if WORD_DELIMITER in chars:
        raise ValueError(
            f"the transcripts contain the word delimiter {WORD_DELIMITER!r}, which CTC uses for spaces. "
            "Fix: remove or replace that character in the transcripts."
        )
    chars.discard(" ")
    chars.discard("\n")
    if not chars:
        raise ValueError(
            "no characters found to build a CTC vocabulary: the transcripts are empty after normalisation. "
            "Fix: check the text column name and the normaliser settings."
        )
    vocab = {ch: i for i, ch in enumerate(sorted(chars))}
    vocab[WORD_DELIMITER] = len(vocab)
    vocab[UNK_TOKEN] = len(vocab)
    vocab[PAD_TOKEN] = len(vocab)
    return vocab


def write_vocab(vocab: dict[str, int], directory: str | os.PathLike[str]) -> Path:
    """Write ``vocab.json`` into ``directory`` (created if needed) and return its path."""
    path = Path(directory) / VOCAB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(vocab, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def make_ctc_tokenizer(vocab_dir: str | os.PathLike[str]) -> Any:
    """Build a ``Wav2Vec2CTCTokenizer`` from ``vocab_dir/vocab.json``.

    bos/eos are disabled: CTC never emits them, and leaving the defaults would add two
    tokens the model's output layer does not have.
    """
    from transformers import Wav2Vec2CTCTokenizer

    path = Path(vocab_dir) / VOCAB_FILE
    if not path.is_file():
        raise ValueError(f"CTC vocabulary not found: {path}. Fix: build it with build_ctc_vocab + write_vocab.")
    return Wav2Vec2CTCTokenizer(
        str(path),
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        word_delimiter_token=WORD_DELIMITER,
        bos_token=None,
        eos_token=None,
    )
