"""Synthesise the bundled speech-recognition sample with Debian's espeak-ng.

Why: the offline default run needs real (if synthetic) speech that a tiny model can
learn in minutes on a CPU. Spoken digit sequences over several voices give that, and
two voices held out for validation make the score measure generalisation, not recall.

Usage:
    apt-get install espeak-ng
    python scripts/make_speech_sample.py [--out accel_tasks/samples/speech_recognition]

Output: ``audio/*.flac`` (16 kHz mono), ``train.jsonl`` and ``validation.jsonl`` with rows
``{"id", "audio": "audio/<id>.flac", "text"}``, and ``model/``: a tiny ``Wav2Vec2BertForCTC``
config with its feature extractor and character tokenizer (no weights; the toolkit builds
the model with ``from_config``). ``--model-only`` rewrites just ``model/`` from the
existing ``train.jsonl``. Deterministic for a given espeak-ng version.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import subprocess
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Built-in (non-mbrola) English voices, each with a distinct variant; no extra packages needed.
TRAIN_VOICES = [
    "en-us",
    "en-gb+f2",
    "en-gb-scotland+m3",
    "en-gb-x-rp+f4",
    "en-029+m2",
    "en-gb-x-gbclan+f1",
    "en-us+m4",
    "en-gb-x-gbcwmd+f3",
]
VALIDATION_VOICES = ["en-us+f5", "en-gb-x-rp+m7"]
TARGET_SR = 16_000
PAD_S = 0.05  # silence kept around the trimmed speech


def espeak_version() -> str:
    """Return the espeak-ng version line, or raise a clear error if it is missing."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng not found; install it with `apt-get install espeak-ng`.")
    out = subprocess.run([exe, "--version"], check=True, capture_output=True, text=True).stdout
    return out.strip()


def synthesise(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """Speak ``text`` and return 16 kHz mono float32 audio with silence trimmed."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    audio, sr = sf.read(io.BytesIO(wav), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    audio = librosa.resample(audio, orig_sr=sr, target_sr=TARGET_SR, res_type="soxr_hq")
    trimmed, _ = librosa.effects.trim(audio, top_db=40)
    pad = np.zeros(int(PAD_S * TARGET_SR), dtype=np.float32)
    audio = np.concatenate([pad, trimmed, pad])
    # Peak-normalise so 8-bit storage keeps as much resolution as possible.
    peak = float(np.abs(audio).max()) or 1.0
    return (0.7 * audio / peak).astype(np.float32)


def make_split(name: str, voices: list[str], per_voice: int, out: Path, rng: random.Random) -> list[dict[str, str]]:
    """Generate ``per_voice`` clips for each voice and return the jsonl rows."""
    rows = []
    for voice in voices:
        for _ in range(per_voice):
            idx = len(rows)
            text = " ".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 4)))
            speed = rng.randint(140, 220)
            pitch = rng.randint(25, 75)
            audio = synthesise(text, voice, speed, pitch)
            clip_id = f"{name}-{idx:04d}"
            rel = f"audio/{clip_id}.flac"
            # 8-bit FLAC keeps the whole sample under 5 MB; log-mel features do not notice.
            sf.write(out / rel, audio, TARGET_SR, format="FLAC", subtype="PCM_S8", compression_level=1.0)
            rows.append({"id": clip_id, "audio": rel, "text": text, "voice": voice})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    """Write rows without the generator-only ``voice`` field."""
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in ("id", "audio", "text")}) + "\n")


def write_model_assets(out: Path) -> None:
    """Save a tiny Wav2Vec2-BERT CTC config, log-mel feature extractor and char tokenizer.

    Log-mel input (not raw waveform) is what lets a from-scratch model learn this data
    in minutes on a CPU. Sizes follow what was measured to learn (hidden 96, 2 layers).
    """
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertProcessor

    from accel_tasks.recipes.speech.normalize import TextNormalizer
    from accel_tasks.recipes.speech.vocab import build_ctc_vocab, make_ctc_tokenizer, write_vocab

    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    with (out / "train.jsonl").open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    write_vocab(build_ctc_vocab(texts, TextNormalizer()), model_dir)
    tokenizer = make_ctc_tokenizer(model_dir)
    feature_extractor = SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=TARGET_SR)
    Wav2Vec2BertProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(model_dir)
    config = Wav2Vec2BertConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=None,
        hidden_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=192,
        feature_projection_input_dim=feature_extractor.feature_size * feature_extractor.stride,
        conv_depthwise_kernel_size=15,
        hidden_dropout=0.0,
        activation_dropout=0.0,
        attention_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        conformer_conv_dropout=0.0,
        layerdrop=0.0,
        apply_spec_augment=False,
        ctc_loss_reduction="mean",
        ctc_zero_infinity=True,
        add_adapter=False,
    )
    config.save_pretrained(model_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("accel_tasks/samples/speech_recognition"))
    parser.add_argument("--train-per-voice", type=int, default=66)
    parser.add_argument("--validation-per-voice", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--model-only", action="store_true", help="only rewrite model/ from train.jsonl")
    args = parser.parse_args()
    if args.model_only:
        write_model_assets(args.out)
        return

    print(espeak_version())
    audio_dir = args.out / "audio"
    if audio_dir.exists():
        shutil.rmtree(audio_dir)
    audio_dir.mkdir(parents=True)
    rng = random.Random(args.seed)
    train = make_split("train", TRAIN_VOICES, args.train_per_voice, args.out, rng)
    validation = make_split("validation", VALIDATION_VOICES, args.validation_per_voice, args.out, rng)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "validation.jsonl", validation)
    total = sum(p.stat().st_size for p in audio_dir.iterdir())
    print(f"train={len(train)} validation={len(validation)} audio_bytes={total}")
    write_model_assets(args.out)


if __name__ == "__main__":
    main()
