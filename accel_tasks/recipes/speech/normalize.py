"""Transcript normalisation shared by vocabulary building, training labels and scoring.

Why: a CTC character vocabulary, the labels and the WER references must all see the same
text, or the model is trained on characters it is never scored on (and vice versa).
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path

_WHITESPACE = re.compile(r"\s+")


def _load_spelling_mapping(mapping: Mapping[str, str] | str | os.PathLike[str] | None) -> dict[str, str]:
    """Return the British→American spelling table Whisper's normaliser expects.

    It ships with Whisper checkpoints as ``normalizer.json`` (not with transformers);
    ``None`` means no spelling standardisation.
    """
    if mapping is None:
        return {}
    if isinstance(mapping, Mapping):
        return dict(mapping)
    path = Path(mapping)
    if path.is_dir():
        path = path / "normalizer.json"
    if not path.is_file():
        raise ValueError(
            f"english spelling mapping not found: {path}. Fix: point it at a Whisper checkpoint's "
            "normalizer.json (or its directory), or leave it unset to skip spelling standardisation."
        )
    with path.open(encoding="utf-8") as f:
        return json.load(f)


class TextNormalizer:
    """Callable text normaliser.

    Basic mode lowercases, replaces punctuation with spaces (keeping word-internal
    apostrophes, as in "don't", when ``keep_apostrophes``) and collapses whitespace.
    ``whisper_english=True`` instead applies transformers' ``EnglishTextNormalizer`` (the
    one used for published Whisper WERs: numbers to digits, contractions expanded,
    optional spelling standardisation from ``english_spelling_mapping``); the basic
    options are then not applied.
    """

    def __init__(
        self,
        lowercase: bool = True,
        remove_punctuation: bool = True,
        collapse_whitespace: bool = True,
        whisper_english: bool = False,
        keep_apostrophes: bool = True,
        english_spelling_mapping: Mapping[str, str] | str | os.PathLike[str] | None = None,
    ) -> None:
        self.lowercase = lowercase
        self.remove_punctuation = remove_punctuation
        self.collapse_whitespace = collapse_whitespace
        self.whisper_english = whisper_english
        self.keep_apostrophes = keep_apostrophes
        self._whisper = None
        if whisper_english:
            try:
                from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
            except ImportError as err:
                raise ValueError(
                    "whisper_english normalisation needs transformers' Whisper normaliser, which could not "
                    f"be imported ({err}). Fix: install transformers (and its `regex` dependency), "
                    "or set whisper_english=false."
                ) from err
            self._whisper = EnglishTextNormalizer(_load_spelling_mapping(english_spelling_mapping))

    def _strip_punctuation(self, text: str) -> str:
        chars = []
        for i, ch in enumerate(text):
            if not unicodedata.category(ch).startswith("P"):
                chars.append(ch)
            elif (
                self.keep_apostrophes
                and ch in "'’"
                and 0 < i < len(text) - 1
                and text[i - 1].isalnum()
                and text[i + 1].isalnum()
            ):
                chars.append("'")
            else:
                chars.append(" ")
        return "".join(chars)

    def __call__(self, text: str) -> str:
        """Normalise one transcript."""
        if self._whisper is not None:
            return _WHITESPACE.sub(" ", self._whisper(text)).strip()
        if self.lowercase:
            text = text.lower()
        if self.remove_punctuation:
            text = self._strip_punctuation(text)
        if self.collapse_whitespace:
            text = _WHITESPACE.sub(" ", text).strip()
        return text

    def __repr__(self) -> str:
        return (
            f"TextNormalizer(lowercase={self.lowercase}, remove_punctuation={self.remove_punctuation}, "
            f"collapse_whitespace={self.collapse_whitespace}, whisper_english={self.whisper_english}, "
            f"keep_apostrophes={self.keep_apostrophes})"
        )


class NoNormalization:
    """Scoring on the raw text (task.normalizer=none); a stable repr keeps the feature cache key stable."""

    def __call__(self, text: str) -> str:
        return text

    def __repr__(self) -> str:
        return "NoNormalization()"
