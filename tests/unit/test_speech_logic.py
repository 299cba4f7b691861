"""Unit tests for accel_tasks.recipes.speech: audio loading, text, vocab, features, collators, tiny Whisper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from accel_tasks.recipe import decode_generated
from accel_tasks.recipes.speech.audio import AudioLoadError, load_audio, undecoded_audio
from accel_tasks.recipes.speech.audio_features import (
    CTCCollator,
    EmptyTranscriptError,
    SpeechSeq2SeqCollator,
    filter_by_duration,
    prepare_speech_features,
)
from accel_tasks.recipes.speech.decode import decode_ctc_predictions, decode_labels
from accel_tasks.recipes.speech.normalize import TextNormalizer
from accel_tasks.recipes.speech.rawdata import SpeechColumns
from accel_tasks.recipes.speech.vocab import build_ctc_vocab, make_ctc_tokenizer, write_vocab

SAMPLE = Path(__file__).resolve().parents[2] / "accel_tasks" / "samples" / "speech_recognition"


def sine(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_freq(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


@pytest.fixture
def sine_file(tmp_path: Path) -> Path:
    path = tmp_path / "clips" / "a.flac"
    path.parent.mkdir()
    sf.write(path, sine(440, 16000), 16000)
    return path


# ---------------------------------------------------------------- audio


def test_load_audio_relative_path_with_base_dir(sine_file: Path) -> None:
    audio = load_audio("clips/a.flac", 16000, row_id="r1", base_dir=sine_file.parents[1])
    assert audio.dtype == np.float32 and audio.shape == (16000,)
    np.testing.assert_allclose(audio, sine(440, 16000), atol=1e-4)  # 16-bit FLAC quantisation


def test_load_audio_bytes_dict_and_array_dict(sine_file: Path) -> None:
    from_bytes = load_audio({"bytes": sine_file.read_bytes(), "path": "a.flac"}, 16000)
    np.testing.assert_allclose(from_bytes, sine(440, 16000), atol=1e-4)
    from_path_dict = load_audio({"bytes": None, "path": str(sine_file)}, 16000)
    np.testing.assert_array_equal(from_path_dict, from_bytes)
    arr = sine(440, 16000)
    np.testing.assert_array_equal(load_audio({"array": arr, "sampling_rate": 16000}, 16000), arr)


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    left = sine(440, 16000)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 16000), left / 2, atol=1e-6)
    # Decoded arrays come channels-first.
    decoded = {"array": np.stack([left, left * 0]), "sampling_rate": 16000}
    np.testing.assert_allclose(load_audio(decoded, 16000), left / 2, atol=1e-6)


def test_resamples_22050_to_16000(tmp_path: Path) -> None:
    path = tmp_path / "hi.wav"
    sf.write(path, sine(440, 22050), 22050)
    audio = load_audio(path, 16000)
    assert abs(len(audio) - 16000) <= 1
    assert abs(dominant_freq(audio, 16000) - 440) <= 2
    # The same holds for a decoded array at the wrong rate.
    audio2 = load_audio({"array": sine(1000, 22050), "sampling_rate": 22050}, 16000)
    assert abs(len(audio2) - 16000) <= 1 and abs(dominant_freq(audio2, 16000) - 1000) <= 2


def test_missing_file_error_names_row_and_path(tmp_path: Path) -> None:
    with pytest.raises(AudioLoadError) as err:
        load_audio("audio/nope.flac", 16000, row_id="utt-7", base_dir=tmp_path)
    msg = str(err.value)
    assert "utt-7" in msg and str(tmp_path / "audio" / "nope.flac") in msg


def test_unreadable_file_error_names_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioLoadError, match="row 'x1'.*bad.flac"):
        load_audio(bad, 16000, row_id="x1")
    with pytest.raises(AudioLoadError, match="row 3"):
        load_audio({"bytes": b"garbage", "path": None}, 16000, row_id=3)


def test_array_without_rate_and_empty_audio_are_errors() -> None:
    with pytest.raises(AudioLoadError, match="sampling_rate"):
        load_audio({"array": np.zeros(10), "sampling_rate": None}, 16000)
    with pytest.raises(AudioLoadError, match="empty"):
        load_audio({"array": np.zeros(0), "sampling_rate": 16000}, 16000, row_id="e")


def test_undecoded_audio_casts_only_audio_columns(sine_file: Path) -> None:
    from datasets import Audio, Dataset, DatasetDict

    ds = Dataset.from_dict({"audio": [str(sine_file)], "text": ["a"]}).cast_column("audio", Audio())
    out = undecoded_audio(DatasetDict({"train": ds}), "audio")["train"]
    assert out.features["audio"].decode is False
    assert out[0]["audio"] == {"bytes": None, "path": str(sine_file)}
    plain = Dataset.from_dict({"audio": ["x.wav"]})
    assert undecoded_audio(plain, "audio") is plain


# ---------------------------------------------------------------- text


def test_basic_normalizer() -> None:
    norm = TextNormalizer()
    assert norm("  Hello, World!  It's   twenty-one.\n") == "hello world it's twenty one"
    assert norm("'quoted'") == "quoted"
    assert TextNormalizer(lowercase=False)("Hi, Bob") == "Hi Bob"
    assert TextNormalizer(remove_punctuation=False)("A,  B") == "a, b"
    assert TextNormalizer(keep_apostrophes=False)("don't") == "don t"


def test_whisper_english_normalizer(tmp_path: Path) -> None:
    # Mr -> mister and won't -> will not are in Whisper's replacement table.
    assert TextNormalizer(whisper_english=True)("Mr. Jones won't go.") == "mister jones will not go"
    mapping = tmp_path / "normalizer.json"
    mapping.write_text(json.dumps({"colour": "color"}))
    assert TextNormalizer(whisper_english=True, english_spelling_mapping=tmp_path)("Colour") == "color"
    with pytest.raises(ValueError, match="normalizer.json"):
        TextNormalizer(whisper_english=True, english_spelling_mapping=tmp_path / "missing.json")


# ---------------------------------------------------------------- vocab


def test_build_ctc_vocab_and_tokenizer(tmp_path: Path) -> None:
    vocab = build_ctc_vocab(["Ab ba", "C!"], TextNormalizer())
    assert vocab == {"a": 0, "b": 1, "c": 2, "|": 3, "[UNK]": 4, "[PAD]": 5}
    write_vocab(vocab, tmp_path / "tok")
    tok = make_ctc_tokenizer(tmp_path / "tok")
    assert len(tok) == 6 and tok.pad_token_id == 5
    assert tok("ab c").input_ids == [0, 1, 3, 2]
    assert tok("ax").input_ids == [0, 4]
    with pytest.raises(ValueError, match="delimiter"):
        build_ctc_vocab(["a|b"])
    with pytest.raises(ValueError, match="empty"):
        build_ctc_vocab(["!!", " "], TextNormalizer())


# ---------------------------------------------------------------- features and collators


@pytest.fixture
def ctc_parts(tmp_path: Path):
    from transformers import SeamlessM4TFeatureExtractor

    write_vocab(build_ctc_vocab(["one two three"]), tmp_path / "tok")
    return SeamlessM4TFeatureExtractor(), make_ctc_tokenizer(tmp_path / "tok")


def test_prepare_speech_features_for_ctc(ctc_parts, tmp_path: Path) -> None:
    fe, tok = ctc_parts
    sf.write(tmp_path / "b.wav", sine(300, 22050, 0.5), 22050)
    batch = {
        "id": ["u1", "u2"],
        "audio": [{"array": sine(440, 16000), "sampling_rate": 16000}, "b.wav"],
        "text": ["One, TWO!", "three"],
    }
    out = prepare_speech_features(
        batch, feature_extractor=fe, tokenizer=tok, normalizer=TextNormalizer(), base_dir=tmp_path
    )
    assert out["duration"] == pytest.approx([1.0, 0.5], abs=1e-3)
    assert out["labels"][0] == tok("one two").input_ids
    assert out["input_features"][0].shape[1] == 160  # 80 mel bins stacked by stride 2
    assert len(out["attention_mask"][0]) == out["input_features"][0].shape[0]
    assert out["input_features"][1].shape[0] < out["input_features"][0].shape[0]


def test_empty_transcript_is_reported_with_row_id(ctc_parts) -> None:
    fe, tok = ctc_parts
    batch = {
        "id": ["ok", "blank"],
        "audio": [{"array": sine(440, 16000), "sampling_rate": 16000}] * 2,
        "text": ["one", " ?! "],
    }
    with pytest.raises(EmptyTranscriptError, match="'blank'"):
        prepare_speech_features(batch, feature_extractor=fe, tokenizer=tok, normalizer=TextNormalizer())
    with pytest.raises(ValueError, match="'text'"):
        prepare_speech_features({"audio": [], "sentence": []}, feature_extractor=fe, tokenizer=tok)


def test_prepare_features_through_datasets_map_names_rows_by_index(ctc_parts) -> None:
    from datasets import Dataset

    fe, tok = ctc_parts
    ds = Dataset.from_dict({"audio": ["missing.wav"], "text": ["one"]})
    with pytest.raises(AudioLoadError, match="row 0"):
        ds.map(
            prepare_speech_features,
            batched=True,
            with_indices=True,
            fn_kwargs={"feature_extractor": fe, "tokenizer": tok, "columns": SpeechColumns("audio", "text", None)},
        )


def test_ctc_collator_pads_inputs_and_labels_separately(ctc_parts) -> None:
    fe, tok = ctc_parts
    feats = [
        {
            "input_features": np.ones((5, 160), np.float32),
            "attention_mask": [1] * 5,
            "labels": [0, 1, 2],
            "duration": 0.1,
        },
        {"input_features": np.ones((3, 160), np.float32), "attention_mask": [1, 1, 0], "labels": [4]},
    ]
    batch = CTCCollator(fe, tok)(feats)
    assert set(batch) == {"input_features", "attention_mask", "labels"}
    assert batch["input_features"].shape == (2, 5, 160)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[0, 1, 2], [4, -100, -100]]
    assert batch["input_features"][1, 3:].abs().sum() == 0
    bf16 = CTCCollator(fe, tok, float_dtype=torch.bfloat16)(feats)
    assert bf16["input_features"].dtype == torch.bfloat16 and bf16["labels"].dtype == torch.long
    no_labels = CTCCollator(fe, tok)([{k: v for k, v in f.items() if k != "labels"} for f in feats])
    assert "labels" not in no_labels


def test_seq2seq_collator_strips_leading_start_token() -> None:
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(chunk_length=1)
    x = np.zeros((80, 100), np.float32)
    collate = SpeechSeq2SeqCollator(fe, tokenizer=object(), decoder_start_token_id=9)
    batch = collate([{"input_features": x, "labels": [9, 5, 6, 1]}, {"input_features": x, "labels": [9, 7, 1]}])
    assert batch["input_features"].shape == (2, 80, 100) and "attention_mask" not in batch
    assert batch["labels"].tolist() == [[5, 6, 1], [7, 1, -100]]
    kept = collate([{"input_features": x, "labels": [9, 5]}, {"input_features": x, "labels": [5, 9]}])
    assert kept["labels"].tolist() == [[9, 5], [5, 9]]


def test_filter_by_duration_counts() -> None:
    from datasets import Dataset

    ds = Dataset.from_dict({"duration": [0.5, 1.0, 2.0, 31.0]})
    kept, removed = filter_by_duration(ds, min_s=0.8, max_s=30.0)
    assert removed == 2 and kept["duration"] == [1.0, 2.0]
    assert filter_by_duration(ds, max_s=1.0)[1] == 2
    assert filter_by_duration(ds)[1] == 0
    with pytest.raises(ValueError, match="below min"):
        filter_by_duration(ds, min_s=2.0, max_s=1.0)
    with pytest.raises(ValueError, match="prepare_"):
        filter_by_duration(Dataset.from_dict({"x": [1]}), max_s=1.0)


# ---------------------------------------------------------------- decoding


def test_ctc_decoding_merges_predictions_but_not_labels(tmp_path: Path) -> None:
    write_vocab(build_ctc_vocab(["thre"]), tmp_path)  # e h r t | [UNK] [PAD] -> 0..6
    tok = make_ctc_tokenizer(tmp_path)
    frames = [3, 3, 1, 2, 0, 6, 0, 2, 2]  # t t h r e _ e r r ; last two frames are padding
    logits = torch.nn.functional.one_hot(torch.tensor([frames]), 7).float()
    assert decode_ctc_predictions(logits, tok) == ["threer"]
    assert decode_ctc_predictions(logits, tok, lengths=[7]) == ["three"]
    assert decode_labels(torch.tensor([[3, 1, 2, 0, 0, -100]]), tok, ctc=True) == ["three"]
    # Word delimiter (4) becomes a space; repeated delimiters and edge blanks vanish.
    words = [6, 3, 4, 4, 0, 6, 6]
    assert decode_ctc_predictions(torch.nn.functional.one_hot(torch.tensor([words]), 7).float(), tok) == ["t e"]
    assert decode_labels([[3, 4, 0, 5]], tok, ctc=True) == ["t e[UNK]"]


# ---------------------------------------------------------------- tiny whisper


def test_tiny_whisper_forward_generate_language_task(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq, AutoProcessor, GenerationConfig

    from accel_tasks.recipes.speech.tiny_whisper import build_tiny_whisper, save_tiny_whisper_assets

    tiny = build_tiny_whisper(["three seven one", "nine four", "zero two"])
    tok, model = tiny.tokenizer, tiny.model
    labels = tok("nine four").input_ids
    assert tok.convert_ids_to_tokens(labels[:4]) == [
        "<|startoftranscript|>",
        "<|en|>",
        "<|transcribe|>",
        "<|notimestamps|>",
    ]
    assert tok.decode(labels, skip_special_tokens=True) == "nine four"

    feats = prepare_speech_features(
        {
            "id": ["a", "b"],
            "audio": [{"array": sine(440, 16000), "sampling_rate": 16000}] * 2,
            "text": ["nine four", "zero"],
        },
        feature_extractor=tiny.feature_extractor,
        tokenizer=tok,
    )
    batch = SpeechSeq2SeqCollator(tiny.processor, decoder_start_token_id=model.config.decoder_start_token_id)(
        [{k: feats[k][i] for k in ("input_features", "labels")} for i in range(2)]
    )
    assert batch["input_features"].shape == (2, 80, 400)
    loss = model(**batch).loss
    assert torch.isfinite(loss)

    seen: list[list[int]] = []
    model.model.decoder.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["input_ids"][0].tolist()), with_kwargs=True
    )
    out = model.generate(batch["input_features"], max_new_tokens=3)
    assert tok.convert_ids_to_tokens(seen[0]) == [
        "<|startoftranscript|>",
        "<|en|>",
        "<|transcribe|>",
        "<|notimestamps|>",
    ]
    assert len(decode_generated(out, tok)) == 2
    seen.clear()
    model.generate(batch["input_features"], max_new_tokens=1, language="fr", task="translate")
    assert tok.convert_ids_to_tokens(seen[0]) == [
        "<|startoftranscript|>",
        "<|fr|>",
        "<|translate|>",
        "<|notimestamps|>",
    ]
    seen.clear()
    prompt = tok.get_prompt_ids("zero", return_tensors="pt")
    model.generate(batch["input_features"][:1], max_new_tokens=1, prompt_ids=prompt)
    assert seen[0][: len(prompt)] == prompt.tolist() and seen[0][len(prompt)] == model.config.decoder_start_token_id

    save_tiny_whisper_assets(tiny, tmp_path)
    assert not list(tmp_path.glob("*.safetensors"))
    gen = GenerationConfig.from_pretrained(tmp_path)
    assert (gen.language, gen.task, gen.lang_to_id["<|en|>"]) == ("en", "transcribe", seen[0][len(prompt) + 1])
    reloaded = AutoModelForSpeechSeq2Seq.from_config(AutoConfig.from_pretrained(tmp_path))
    assert reloaded.config.vocab_size == len(AutoProcessor.from_pretrained(tmp_path).tokenizer)


# ---------------------------------------------------------------- bundled sample


def test_bundled_sample_and_model_assets_load_offline() -> None:
    from transformers import AutoConfig, AutoFeatureExtractor, AutoProcessor, AutoTokenizer

    rows = {
        split: [json.loads(line) for line in (SAMPLE / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "validation")
    }
    assert len(rows["train"]) >= 500 and len(rows["validation"]) >= 80
    first = rows["validation"][0]
    assert set(first) == {"id", "audio", "text"}
    info = sf.info(str(SAMPLE / first["audio"]))
    assert (info.samplerate, info.channels) == (16000, 1)
    assert all((SAMPLE / r["audio"]).is_file() for split in rows.values() for r in split)

    model_dir = SAMPLE / "model"
    config = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert type(AutoFeatureExtractor.from_pretrained(model_dir)).__name__ == "SeamlessM4TFeatureExtractor"
    assert type(AutoProcessor.from_pretrained(model_dir)).__name__ == "Wav2Vec2BertProcessor"
    assert (config.vocab_size, config.pad_token_id) == (len(tok), tok.pad_token_id)
    assert config.ctc_loss_reduction == "mean" and config.layerdrop == 0.0
    unk = tok.unk_token_id
    for r in rows["train"] + rows["validation"]:
        assert unk not in tok(TextNormalizer()(r["text"])).input_ids, r["id"]


def test_sample_audio_decodes_at_16k_via_bytes() -> None:
    path = SAMPLE / "audio" / "train-0000.flac"
    audio = load_audio({"bytes": path.read_bytes(), "path": path.name}, 16000)
    assert 0.2 < len(audio) / 16000 < 5.0 and np.abs(audio).max() > 0.1


# ---------------------------------------------------------------- the row filter (map-style and streamed alike)


def test_row_filter_verdicts_errors_and_counts(tmp_path: Path, monkeypatch) -> None:
    from accel_tasks import log
    from accel_tasks.errors import ConfigError
    from accel_tasks.recipes.speech.rows import (
        EMPTY_TRANSCRIPT,
        KEPT,
        TOO_LONG,
        UNREADABLE,
        VERDICT,
        RowRule,
        judge_rows,
        kept_rows,
        row_verdicts,
    )

    lines: list[str] = []
    monkeypatch.setattr(log, "info", lines.append)
    for name, seconds, rate in (("a", 1.0, 16000), ("b", 1.0, 16000), ("d", 3.0, 8000)):
        sf.write(tmp_path / f"{name}.wav", sine(440, rate, seconds), rate)
    batch = {
        "id": ["a", "b", "c", "d"],
        "audio": ["a.wav", "b.wav", "c.wav", "d.wav"],  # c.wav is missing
        "text": ["one", " ?! ", "two", "three"],
    }
    rule = RowRule(
        columns=SpeechColumns("audio", "text", "id"),
        transcript_normalizers=(TextNormalizer(),),
        base_dir=str(tmp_path),
        min_duration_s=None,
        max_duration_s=2.0,
        window_s=None,
        drop_empty_transcripts=False,
        sampling_rate=16000,
    )
    verdicts = row_verdicts(batch, rule)
    assert verdicts[VERDICT] == [KEPT, EMPTY_TRANSCRIPT, UNREADABLE, TOO_LONG]
    # Empty transcripts are named first, whatever else is wrong.
    with pytest.raises(ConfigError, match=r"the train data has 1 row\(s\) with an empty transcript .*rows 'b'"):
        judge_rows(batch["id"], verdicts, rule, "the train data", "train")
    dropping = RowRule(**{**rule.__dict__, "drop_empty_transcripts": True})
    with pytest.raises(ConfigError, match=r"row 'c': audio file not found.*\(relative paths: task.audio_dir"):
        kept_rows(batch, dropping, "the train stream")
    readable = {key: [value[i] for i in (0, 1, 3)] for key, value in batch.items()}
    assert kept_rows(readable, dropping, "the train stream") == [True, False, False]
    assert lines == []  # a streamed batch is filtered silently
    judge_rows(readable["id"], row_verdicts(readable, dropping), dropping, "the train data", "train")
    assert lines == [
        "train: dropped 1 of 3 rows with an empty transcript (rows 'b')",
        "train: 1 of 2 clips at 8000 Hz are resampled to 16000 Hz",
        "train: duration filter [0, 2] s removed 1 of 2 clips (0 shorter, 1 longer), kept 1",
    ]


# ---------------------------------------------------------------- Whisper guards: the decoder's positions, the window


@pytest.fixture(scope="module")
def short_whisper():
    """A tiny Whisper whose decoder holds 16 label tokens (Whisper: 448) and whose window is 4 s (Whisper: 30 s)."""
    from accel_tasks.recipes.speech.tiny_whisper import TinyWhisperSize, build_tiny_whisper

    return build_tiny_whisper(["one two three four five six"], size=TinyWhisperSize(max_target_positions=16))


def limit_of(tiny, positions: int = 16):
    from accel_tasks.recipes.speech.rows import LabelLimit

    return LabelLimit(tiny.tokenizer, None, positions, tiny.model.config.decoder_start_token_id)


def test_label_limit_is_exactly_what_the_decoder_takes(short_whisper) -> None:
    """The length the row filter counts is the collated labels' length: 16 fit the 16 positions, 17 do not."""
    tiny = short_whisper
    fits, over = " ".join(["one"] * 6 + ["six"]), " ".join(["one"] * 7)
    assert limit_of(tiny).lengths([fits, over]) == [16, 17]
    features = prepare_speech_features(
        {
            "id": ["fits", "over"],
            "audio": [{"array": sine(440, 16000), "sampling_rate": 16000}] * 2,
            "text": [fits, over],
        },
        feature_extractor=tiny.feature_extractor,
        tokenizer=tiny.tokenizer,
    )
    collate = SpeechSeq2SeqCollator(tiny.processor, decoder_start_token_id=tiny.model.config.decoder_start_token_id)
    rows = [{k: features[k][i] for k in ("input_features", "labels")} for i in range(2)]
    batch = collate(rows[:1])
    assert batch["labels"].shape[1] == 16
    assert torch.isfinite(tiny.model(**batch).loss)
    assert collate(rows)["labels"].shape[1] == 17
    with pytest.raises(ValueError, match="cannot exceed"):  # what the filter keeps from ever reaching the model
        tiny.model(**collate(rows))
    normalised = limit_of(tiny).__class__(tiny.tokenizer, TextNormalizer(), 16, None)
    assert normalised.lengths(["ONE, one!"]) == [len(tiny.tokenizer("one one").input_ids)]  # the start token counts


def test_row_filter_drops_or_refuses_clips_over_the_window_and_labels_over_the_decoder(
    short_whisper, tmp_path: Path, monkeypatch
) -> None:
    from accel_tasks import log
    from accel_tasks.errors import ConfigError
    from accel_tasks.recipes.speech import rows
    from accel_tasks.recipes.speech.rawdata import input_window_s

    lines: list[str] = []
    monkeypatch.setattr(log, "info", lines.append)
    for name, seconds in (("ok", 1.0), ("long_clip", 5.0), ("long_text", 1.0)):
        sf.write(tmp_path / f"{name}.wav", sine(440, 16000, seconds), 16000)
    batch = {
        "id": ["ok", "long_clip", "long_text"],
        "audio": ["ok.wav", "long_clip.wav", "long_text.wav"],
        "text": ["one two", "one two", " ".join(["one two three"] * 10)],
    }
    rule = rows.RowRule(
        columns=SpeechColumns("audio", "text", "id"),
        transcript_normalizers=(None,),
        base_dir=str(tmp_path),
        min_duration_s=None,
        max_duration_s=None,
        window_s=input_window_s(short_whisper.feature_extractor),
        drop_empty_transcripts=False,
        sampling_rate=16000,
        label_limit=limit_of(short_whisper),
    )
    verdicts = rows.row_verdicts(batch, rule)
    assert verdicts[rows.VERDICT] == [rows.KEPT, rows.OVER_WINDOW, rows.OVER_DECODER]
    assert rows.judge_rows(batch["id"], verdicts, rule, "the train data", "train").tolist() == [True, False, False]
    assert lines == [
        "train: removed 1 clips longer than the model's 4 s input window",
        "train: dropped 1 of 3 rows whose transcript is longer than the decoder's 16 positions once tokenised "
        "(rows 'long_text')",
    ]
    assert rows.kept_rows(batch, rule, "the train stream") == [True, False, False]
    assert len(lines) == 2  # a streamed batch is filtered silently
    refusing = rows.RowRule(**{**rule.__dict__, "on_too_long": "error"})
    with pytest.raises(ConfigError, match=r"1 clip\(s\) longer than the model's 4 s input window.*rows 'long_clip'"):
        rows.kept_rows(batch, refusing, "the train stream")
    no_long_clip = {key: [value[0], value[2]] for key, value in batch.items()}
    with pytest.raises(ConfigError, match=r"decoder's 16 positions .*rows 'long_text'.*task.on_too_long=drop"):
        rows.judge_rows(
            no_long_clip["id"], rows.row_verdicts(no_long_clip, refusing), refusing, "the train data", "train"
        )


def test_language_and_task_agree_between_labels_and_generation(short_whisper) -> None:
    """An unset task.language / task.task comes from whichever of the tokenizer (labels) and the generation config
    names one; when they differ, training is refused and evaluation follows the generation config."""
    import copy

    from accel_tasks.errors import ConfigError
    from accel_tasks.recipes.speech.models import language_code, prompt_language_and_task, set_language_and_task

    model, tokenizer = copy.deepcopy(short_whisper.model), copy.deepcopy(short_whisper.tokenizer)
    assert [language_code(name) for name in ("english", "EN", "<|en|>", "klingon")] == ["en", "en", "en", "klingon"]
    assert prompt_language_and_task(model, tokenizer, "fr", None, True) == ("fr", "transcribe")
    tokenizer.set_prefix_tokens(language=None, task=None)  # a tokenizer saved without them (hub checkpoints)
    assert prompt_language_and_task(model, tokenizer, None, None, True) == ("en", "transcribe")
    set_language_and_task(model, tokenizer, *prompt_language_and_task(model, tokenizer, None, None, True))
    assert tokenizer.convert_ids_to_tokens(tokenizer("one").input_ids[:3]) == [
        "<|startoftranscript|>",
        "<|en|>",
        "<|transcribe|>",
    ]
    model.generation_config.language = None  # a 28814-era export: the labels' language, none to generate with
    assert prompt_language_and_task(model, tokenizer, None, None, True)[0] == "en"
    model.generation_config.language, tokenizer.language = "english", "en"  # the same language twice: fine
    assert prompt_language_and_task(model, tokenizer, None, None, True)[0] == "english"
    tokenizer.set_prefix_tokens(language="french")
    with pytest.raises(ConfigError, match=r"tokenizer's language 'french' .* 'english' differ; set task.language="):
        prompt_language_and_task(model, tokenizer, None, None, True)
    assert prompt_language_and_task(model, tokenizer, None, None, False)[0] == "english"
