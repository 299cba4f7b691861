"""A tiny Whisper-style model, tokenizer and feature extractor built entirely offline.

Why: tests and docs of the encoder-decoder speech path need a Whisper model without the
Hugging Face hub. The tokenizer is a byte-level BPE trained on the given texts, followed
by Whisper's special tokens in Whisper's order (start-of-transcript, the 100 language
tokens, translate, transcribe, ...), because transformers derives a language token's id
from its position after ``<|startoftranscript|>``. Language/task therefore work the same
way as with a real checkpoint:

* labels: ``tokenizer.set_prefix_tokens(language="english", task="transcribe")``;
* generation: ``model.generation_config.language = "en"`` and ``.task = "transcribe"``
  (or ``model.generate(..., language="en", task="transcribe")``); prompts with
  ``prompt_ids=tokenizer.get_prompt_ids(text, return_tensors="pt")``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

END_OF_TEXT = "<|endoftext|>"
START_OF_TRANSCRIPT = "<|startoftranscript|>"
# After the language tokens, in Whisper's order; <|nospeech|> must sit right before <|notimestamps|>.
_TASK_AND_CONTROL = [
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
]
SAMPLING_RATE = 16_000
_FRAMES_PER_SECOND = 100  # hop length 160 at 16 kHz


def whisper_special_tokens() -> list[str]:
    """Whisper's special tokens in id order (without timestamp tokens)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return [END_OF_TEXT, START_OF_TRANSCRIPT, *[f"<|{code}|>" for code in LANGUAGES], *_TASK_AND_CONTROL]


def build_tiny_whisper_tokenizer(
    texts: Iterable[str], vocab_size: int = 400, language: str | None = "english", task: str | None = "transcribe"
) -> Any:
    """Train a byte-level BPE on ``texts`` and wrap it as a ``WhisperTokenizer``."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
    from transformers import WhisperTokenizer

    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("no texts to train the tiny Whisper tokenizer on. Fix: pass some transcripts.")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    vocab = bpe.get_vocab()
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in _merges(bpe)]
    for token in whisper_special_tokens():
        if token in vocab:  # would break the contiguous special-token ids
            raise ValueError(f"training texts produced the special token {token!r}. Fix: remove it from the texts.")
        vocab[token] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, language=language, task=task)
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in whisper_special_tokens()], special_tokens=True
    )
    tokenizer.set_prefix_tokens(language=language, task=task)
    return tokenizer


def _merges(bpe: Any) -> list:
    """Read the trained merges (the tokenizers API only exposes them through JSON)."""
    return json.loads(bpe.to_str())["model"]["merges"]


def build_tiny_whisper_feature_extractor(chunk_length_s: int = 4, num_mel_bins: int = 80) -> Any:
    """Log-mel extractor padding/cutting every clip to ``chunk_length_s`` (Whisper's fixed window)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(
        feature_size=num_mel_bins, sampling_rate=SAMPLING_RATE, hop_length=160, chunk_length=chunk_length_s, n_fft=400
    )


@dataclass
class TinyWhisper:
    """The pieces a Whisper recipe needs, built together so their sizes agree."""

    model: Any
    tokenizer: Any
    feature_extractor: Any
    processor: Any


@dataclass(frozen=True)
class TinyWhisperSize:
    """The sizes of a tiny Whisper (one object, so that build_tiny_whisper keeps a short signature)."""

    d_model: int = 64
    layers: int = 2
    heads: int = 2
    ffn_dim: int = 128
    chunk_length_s: int = 4
    num_mel_bins: int = 80
    max_target_positions: int = 64
    vocab_size: int = 400


def build_tiny_whisper(
    texts: Iterable[str],
    *,
    size: TinyWhisperSize = TinyWhisperSize(),
    language: str = "en",
    task: str = "transcribe",
    seed: int = 0,
) -> TinyWhisper:
    """Build a randomly initialised tiny ``WhisperForConditionalGeneration`` with matching processor.

    The generation config carries ``lang_to_id``/``task_to_id``/``no_timestamps_token_id``
    like a real multilingual checkpoint, with ``language``/``task`` preset.
    """
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    tokenizer = build_tiny_whisper_tokenizer(
        texts, vocab_size=size.vocab_size, language=LANGUAGES.get(language, language), task=task
    )
    feature_extractor = build_tiny_whisper_feature_extractor(size.chunk_length_s, size.num_mel_bins)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in whisper_special_tokens()}
    eot, sot = ids[END_OF_TEXT], ids[START_OF_TRANSCRIPT]
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=size.num_mel_bins,
        d_model=size.d_model,
        encoder_layers=size.layers,
        decoder_layers=size.layers,
        encoder_attention_heads=size.heads,
        decoder_attention_heads=size.heads,
        encoder_ffn_dim=size.ffn_dim,
        decoder_ffn_dim=size.ffn_dim,
        # The encoder's two convolutions halve the frame rate; its input length is fixed.
        max_source_positions=size.chunk_length_s * _FRAMES_PER_SECOND // 2,
        max_target_positions=size.max_target_positions,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=[],
        begin_suppress_tokens=[eot],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    gen = GenerationConfig.from_model_config(config)
    gen.max_length = size.max_target_positions
    gen.is_multilingual = True
    gen.lang_to_id = {t: i for t, i in ids.items() if t[2:-2] in LANGUAGES}
    gen.task_to_id = {"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]}
    gen.no_timestamps_token_id = ids["<|notimestamps|>"]
    gen.prev_sot_token_id = ids["<|startofprev|>"]
    gen.forced_decoder_ids = None
    # Otherwise from_pretrained treats the file as derived from config.json and drops lang_to_id etc.
    gen._from_model_config = False
    gen.language = language
    gen.task = task
    model.generation_config = gen
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    return TinyWhisper(model=model, tokenizer=tokenizer, feature_extractor=feature_extractor, processor=processor)


def save_tiny_whisper_assets(tiny: TinyWhisper, directory: str | os.PathLike[str]) -> Path:
    """Write config, generation config, tokenizer and feature extractor, but no weights.

    Loading for training is then ``from_config(AutoConfig.from_pretrained(dir))`` plus
    ``GenerationConfig.from_pretrained(dir)``: ``from_config`` does not read
    ``generation_config.json``, and without it language/task cannot be set.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tiny.model.config.save_pretrained(path)
    tiny.model.generation_config.save_pretrained(path)
    tiny.processor.save_pretrained(path)
    return path
