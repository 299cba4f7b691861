"""Speech-recognition recipe: model family choice, vocabulary building, raw-data checks and filters,
normalisation in the records, errors naming rows and paths; end to end through ``accelerate launch``
for CTC (bundled sample) and encoder-decoder (a tiny Whisper made here); and (slow) that the default
run learns.

The pure speech functions (audio loading, normaliser, vocabulary, features, collators, decoding) are
tested in test_speech_logic.py; this file tests the recipe that wires them into the loop.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from accel_tasks.errors import ConfigError
from accel_tasks.preflight import resolve_config
from accel_tasks.recipes.speech_ctc import SpeechCTCRecipe
from accel_tasks.recipes.speech_recognition import SpeechRecognitionRecipe
from accel_tasks.recipes.speech_seq2seq import SpeechSeq2SeqRecipe

from helpers import check, read_json, read_jsonl, run_cli, tree_digest

sf = pytest.importorskip("soundfile")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SAMPLE = Path(__file__).resolve().parents[2] / "accel_tasks" / "samples" / "speech_recognition"
SR = 16_000
RECORD_KEYS = {"id", "input", "prediction", "reference", "prediction_normalized", "reference_normalized"}


# ---------------------------------------------------------------- helpers


def tone(seconds: float, sr: int = SR, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_split(folder: Path, name: str, rows: list[tuple[str, float, str]], sr: int = SR) -> Path:
    """Clips under folder/clips and a jsonl with paths relative to folder; rows are (id, seconds, text)."""
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    lines = []
    for row_id, seconds, text in rows:
        sf.write(folder / "clips" / f"{row_id}.wav", tone(seconds, sr), sr)
        lines.append(json.dumps({"id": row_id, "audio": f"clips/{row_id}.wav", "text": text}))
    path = folder / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def logs(monkeypatch) -> list[str]:
    """The progress lines recipes print through accel_tasks.log.info during the test, collected instead.

    Only where a test asks: a run forked from the test process (helpers.run_cli) must print as any run does.
    """
    from accel_tasks import log

    lines: list[str] = []
    monkeypatch.setattr(log, "info", lines.append)
    return lines


def make_recipe(*overrides: str):
    """A recipe object from the real config merge."""
    cfg, cls = resolve_config(["recipe=speech_recognition", *overrides], None)
    recipe = cls(cfg)
    recipe.validate_options()
    return recipe


def prepared(recipe, split: str):
    raw = recipe.load_data((split,))[split]
    return recipe.prepare_raw(raw, split)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Train clips of 0.5 / 1 / 2 / 3 s and one at 22.05 kHz; validation of two 1 s clips."""
    write_split(
        tmp_path, "train", [("a", 0.5, "one"), ("b", 1.0, "Two, TWO!"), ("c", 2.0, "three"), ("d", 3.0, "four")]
    )
    (tmp_path / "clips").mkdir(exist_ok=True)
    sf.write(tmp_path / "clips" / "e.wav", tone(1.5, 22050), 22050)
    with (tmp_path / "train.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": "e", "audio": "clips/e.wav", "text": "five"}) + "\n")
    write_split(tmp_path, "validation", [("v1", 1.0, "Seven, NINE!"), ("v2", 1.0, "one two")])
    return tmp_path


def data_args(folder: Path) -> list[str]:
    return [f"data.train_file={folder / 'train.jsonl'}", f"data.validation_file={folder / 'validation.jsonl'}"]


# ---------------------------------------------------------------- model family


def test_model_family_from_config_or_option():
    from transformers import (
        BertConfig,
        HubertConfig,
        Speech2TextConfig,
        Wav2Vec2BertConfig,
        Wav2Vec2Config,
        WhisperConfig,
    )

    from accel_tasks.recipes.speech.models import choose_model_type

    assert [choose_model_type(c()) for c in (Wav2Vec2Config, HubertConfig, Wav2Vec2BertConfig)] == ["ctc"] * 3
    assert [choose_model_type(c()) for c in (WhisperConfig, Speech2TextConfig)] == ["seq2seq"] * 2
    assert choose_model_type(BertConfig(architectures=["MyForCTC"])) == "ctc"
    assert choose_model_type(BertConfig(), override="seq2seq") == "seq2seq"
    with pytest.raises(ConfigError, match="task.model_type=ctc or task.model_type=seq2seq"):
        choose_model_type(BertConfig())


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["task.model_type=rnnt"], "task.model_type='rnnt' is not one of ctc, seq2seq"),
        (["task.normalizer=fancy"], "task.normalizer='fancy'"),
        (["task.min_duration_s=3", "task.max_duration_s=1"], "below task.min_duration_s"),
        (["mode=eval", "task.build_vocab=true"], "only applies to training"),
        (["task.model_type=ctc", "task.language=en"], "a CTC model has none"),
        (["task.task=summarize"], "not one of transcribe, translate"),
        (["task.audio_dir=/no/such/folder"], "task.audio_dir='/no/such/folder' does not exist"),
    ],
)
def test_bad_options_fail_before_loading(overrides, message):
    cfg, cls = resolve_config(["recipe=speech_recognition", *overrides], None)
    with pytest.raises(ConfigError, match=re.escape(message)):
        cls(cfg).validate_options()


def test_bundled_model_loads_as_ctc_and_orders_eval_by_its_input(logs):
    recipe = make_recipe()
    model, processor = recipe.load_model()
    assert recipe.model_type == "ctc" and type(model).__name__ == "Wav2Vec2BertForCTC"
    assert recipe.length_column == "input_features"
    assert any("speech model family: ctc" in line for line in logs)
    # apply_spec_augment=false: the mask embedding never gets a gradient, which would stop DDP; it is frozen.
    assert not model.wav2vec2_bert.masked_spec_embed.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.endswith("masked_spec_embed"))


class Plugin(SpeechRecognitionRecipe):
    """A plugin of recipe=speech_recognition, as a user writes one: an override that calls super()."""

    name = "plugin"

    def count_tokens(self, batch):
        return 1000 + super().count_tokens(batch)


def test_the_model_picks_the_recipe_class(tmp_path: Path):
    """recipe=speech_recognition makes the recipe of the model's family: the model type is the class."""
    from accel_tasks.recipes.speech.tiny_whisper import build_tiny_whisper, save_tiny_whisper_assets

    assert type(make_recipe()) is SpeechCTCRecipe
    save_tiny_whisper_assets(build_tiny_whisper(["one two three"]), tmp_path / "whisper")
    assert type(make_recipe(f"model.name_or_path={tmp_path / 'whisper'}")) is SpeechSeq2SeqRecipe
    assert type(make_recipe("task.model_type=seq2seq")) is SpeechSeq2SeqRecipe  # the option wins, unread config
    cfg, _ = resolve_config(["recipe=speech_recognition"], None)
    plugin = Plugin(cfg)
    assert isinstance(plugin, Plugin) and isinstance(plugin, SpeechCTCRecipe) and plugin.name == "plugin"
    assert plugin.count_tokens({"labels": torch.tensor([[5, 6, -100]])}) == 1002
    copy = pickle.loads(pickle.dumps(plugin))  # as preprocessing workers receive it
    assert type(copy) is type(plugin) and copy.cfg == plugin.cfg


# ---------------------------------------------------------------- building the CTC vocabulary


@pytest.fixture
def model_without_vocab(tmp_path: Path) -> Path:
    """The bundled CTC config and feature extractor, with no tokenizer (like a pretrained encoder)."""
    folder = tmp_path / "encoder"
    folder.mkdir()
    config = json.loads((SAMPLE / "model" / "config.json").read_text())
    config.update(vocab_size=32, pad_token_id=0)
    (folder / "config.json").write_text(json.dumps(config))
    extractor = json.loads((SAMPLE / "model" / "processor_config.json").read_text())["feature_extractor"]
    (folder / "preprocessor_config.json").write_text(json.dumps(extractor))
    return folder


def test_build_vocab_from_training_transcripts(data_dir: Path, model_without_vocab: Path, logs):
    before = tree_digest(model_without_vocab)
    recipe = make_recipe(*data_args(data_dir), f"model.name_or_path={model_without_vocab}", "task.build_vocab=true")
    model, processor = recipe.load_model()
    vocab = processor.tokenizer.get_vocab()
    # Normalised transcripts "one two three four five": letters e f h i n o r t u v w, then | [UNK] [PAD].
    assert sorted(k for k in vocab if len(k) == 1 and k != "|") == sorted(set("onetwothreefourfive"))
    assert vocab["[PAD]"] == len(vocab) - 1 == processor.tokenizer.pad_token_id
    assert model.config.vocab_size == len(vocab) and model.config.pad_token_id == vocab["[PAD]"]
    assert model.lm_head.out_features == len(vocab)
    assert type(processor).__name__ == "Wav2Vec2BertProcessor"
    assert any("built a CTC vocabulary of 14 symbols from 5 training transcripts" in line for line in logs)
    assert tree_digest(model_without_vocab) == before  # nothing written into the user's model folder


def test_model_without_vocab_asks_for_build_vocab(data_dir: Path, model_without_vocab: Path):
    recipe = make_recipe(*data_args(data_dir), f"model.name_or_path={model_without_vocab}")
    with pytest.raises(ConfigError, match="task.build_vocab=true"):
        recipe.load_model()


# ---------------------------------------------------------------- raw data: filters, resampling, errors


def test_duration_filter_counts_and_resampling_are_logged(data_dir: Path, logs):
    recipe = make_recipe(*data_args(data_dir), "task.min_duration_s=0.8", "task.max_duration_s=2.5")
    recipe.load_model()
    kept = prepared(recipe, "train")
    assert kept["id"] == ["b", "c", "e"]
    assert "train: duration filter [0.8, 2.5] s removed 2 of 5 clips (1 shorter, 1 longer), kept 3" in logs
    assert "train: 1 of 5 clips at 22050 Hz are resampled to 16000 Hz" in logs
    # Features are made from the kept rows, one per example, at the feature extractor's rate.
    features = kept.map(recipe.preprocess, fn_kwargs={"split": "train"}, batched=True, remove_columns=kept.column_names)
    assert features["duration"] == pytest.approx([1.0, 2.0, 1.5], abs=1e-3)


def test_whisper_window_drops_longer_clips(tmp_path: Path, logs):
    from accel_tasks.recipes.speech.tiny_whisper import build_tiny_whisper, save_tiny_whisper_assets

    write_split(tmp_path, "train", [("short", 1.0, "one"), ("long", 5.0, "two")])
    write_split(tmp_path, "validation", [("v", 1.0, "one")])
    save_tiny_whisper_assets(build_tiny_whisper(["one two three"]), tmp_path / "whisper")  # 4 s window
    recipe = make_recipe(*data_args(tmp_path), f"model.name_or_path={tmp_path / 'whisper'}")
    recipe.load_model()
    assert recipe.model_type == "seq2seq"
    assert prepared(recipe, "train")["id"] == ["short"]
    assert "train: removed 1 clips longer than the model's 4 s input window" in logs


def test_missing_and_unreadable_audio_name_row_and_path(tmp_path: Path):
    write_split(tmp_path, "train", [("ok", 1.0, "one")])
    with (tmp_path / "train.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": "gone", "audio": "clips/gone.wav", "text": "two"}) + "\n")
    recipe = make_recipe(
        f"data.train_file={tmp_path / 'train.jsonl'}", f"data.validation_file={tmp_path / 'train.jsonl'}"
    )
    recipe.load_model()
    with pytest.raises(ConfigError, match=r"row 'gone': audio file not found: .*clips/gone\.wav"):
        prepared(recipe, "train")
    (tmp_path / "clips" / "gone.wav").write_bytes(b"not audio at all")
    with pytest.raises(ConfigError, match=r"row 'gone': cannot decode audio .*clips/gone\.wav"):
        prepared(recipe, "train")


def test_rows_without_ids_are_named_by_row_number(tmp_path: Path):
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "a.wav", tone(1.0), SR)
    rows = [{"audio": "clips/a.wav", "text": "one"}, {"audio": "clips/missing.wav", "text": "two"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = make_recipe(
        f"data.train_file={tmp_path / 'train.jsonl'}", f"data.validation_file={tmp_path / 'train.jsonl'}"
    )
    recipe.load_model()
    with pytest.raises(ConfigError, match=r"row 1: audio file not found: .*missing\.wav"):
        prepared(recipe, "train")


def test_empty_transcripts_are_reported_or_dropped(tmp_path: Path, logs):
    write_split(tmp_path, "train", [("a", 1.0, "one"), ("blank", 1.0, " ?! "), ("b", 1.0, "two")])
    args = [f"data.train_file={tmp_path / 'train.jsonl'}", f"data.validation_file={tmp_path / 'train.jsonl'}"]
    recipe = make_recipe(*args)
    recipe.load_model()
    with pytest.raises(
        ConfigError, match=r"1 row\(s\) with an empty transcript .*'blank'.*task.drop_empty_transcripts=true"
    ):
        prepared(recipe, "train")
    recipe = make_recipe(*args, "task.drop_empty_transcripts=true")
    recipe.load_model()
    assert prepared(recipe, "validation")["id"] == ["a", "b"]
    assert "validation: dropped 1 of 3 rows with an empty transcript (rows 'blank')" in logs


def test_characters_outside_the_ctc_vocabulary_are_reported(tmp_path: Path, logs):
    write_split(tmp_path, "train", [("a", 1.0, "one"), ("b", 1.0, "Hello zero!")])
    recipe = make_recipe(
        f"data.train_file={tmp_path / 'train.jsonl'}", f"data.validation_file={tmp_path / 'train.jsonl'}"
    )
    recipe.load_model()  # the bundled vocabulary holds the letters of the digit words only
    prepared(recipe, "train")
    assert any(
        line.startswith(
            "train: 1 character(s) of the transcripts are not in the model's vocabulary and become [UNK]: 'l'"
        )
        for line in logs
    ), logs


def test_audio_feature_column_is_read_without_torchcodec(tmp_path: Path, logs):
    """A hub-style Audio column (bytes in a parquet file) goes through soundfile, resampled to 16 kHz."""
    from datasets import Audio, Dataset

    buffers = []
    for seconds in (1.0, 2.0):
        path = tmp_path / f"{seconds}.flac"
        sf.write(path, tone(seconds, 8000), 8000)
        buffers.append({"bytes": path.read_bytes(), "path": path.name})
        path.unlink()
    # Cast from a plain {bytes, path} struct: encoding through Audio() itself would need torchcodec.
    dataset = Dataset.from_dict({"speech": buffers, "sentence": ["one", "two"]}).cast_column("speech", Audio())
    assert isinstance(dataset.features["speech"], Audio) and dataset.features["speech"].decode
    dataset.to_parquet(str(tmp_path / "d.parquet"))
    recipe = make_recipe(f"data.train_file={tmp_path / 'd.parquet'}", f"data.validation_file={tmp_path / 'd.parquet'}")
    recipe.load_model()
    rows = prepared(recipe, "train")
    columns = recipe.columns(rows[:8])
    assert (columns.audio, columns.text) == ("speech", "sentence")
    assert "train: 2 of 2 clips at 8000 Hz are resampled to 16000 Hz" in logs
    features = rows.map(recipe.preprocess, fn_kwargs={"split": "train"}, batched=True, remove_columns=rows.column_names)
    assert features["duration"] == pytest.approx([1.0, 2.0], abs=1e-3)


# ---------------------------------------------------------------- predictions and records


def test_ctc_records_keep_raw_and_normalised_text(data_dir: Path):
    recipe = make_recipe(*data_args(data_dir))
    _, processor = recipe.load_model()
    examples = prepared(recipe, "validation")
    vocab = processor.tokenizer.get_vocab()
    blank, space = vocab["[PAD]"], vocab["|"]

    def frames(text: str) -> list[int]:  # one frame per character, a blank after each
        ids = []
        for ch in text:
            ids += [space if ch == " " else vocab[ch], blank]
        return ids

    rows = [frames("seven nine"), frames("one too")]
    width = max(map(len, rows))
    ids = np.array([r + [-100] * (width - len(r)) for r in rows])
    result = recipe.postprocess({"frame_ids": ids}, examples, None)
    assert result.predictions == ["seven nine", "one too"]
    assert result.references == ["seven nine", "one two"]
    assert result.records[0] == {
        "id": "v1",
        "input": "clips/v1.wav",
        "prediction": "seven nine",
        "reference": "Seven, NINE!",
        "prediction_normalized": "seven nine",
        "reference_normalized": "seven nine",
    }


def test_whisper_english_normaliser_applies_to_both_sides(data_dir: Path):
    recipe = make_recipe(*data_args(data_dir), "task.normalizer=whisper_english")
    normalize = recipe.normalizer()
    assert normalize("Mr. Smith won't go.") == "mister smith will not go"
    recipe = make_recipe(*data_args(data_dir), "task.normalizer=none")
    assert recipe.normalizer()("Hello, World!") == "Hello, World!"


def test_ctc_predictions_mask_frames_beyond_each_clip():
    import torch

    from accel_tasks.recipes.speech.decode import mask_frames

    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert mask_frames(object(), ids, mask).tolist() == [[1, 2, 3, 4], [5, 6, -100, -100]]

    class Downsampling:  # wav2vec2-style: attention mask over samples, 1 frame per 2 samples
        def _get_feat_extract_output_lengths(self, lengths):
            return lengths // 2

    samples_mask = torch.tensor([[1] * 8, [1] * 4 + [0] * 4])
    assert mask_frames(Downsampling(), ids, samples_mask).tolist() == [[1, 2, 3, 4], [5, 6, -100, -100]]


def test_feature_cache_key_follows_the_vocabulary(data_dir: Path, model_without_vocab: Path):
    first = make_recipe(*data_args(data_dir))
    first.load_model()
    second = make_recipe(*data_args(data_dir))
    second.load_model()
    assert first.preprocess_fingerprint() == second.preprocess_fingerprint()
    built = make_recipe(*data_args(data_dir), f"model.name_or_path={model_without_vocab}", "task.build_vocab=true")
    built.load_model()
    assert built.preprocess_fingerprint() != first.preprocess_fingerprint()


# ---------------------------------------------------------------- end to end: CTC on the bundled sample

# One torch thread per run: on 2 shared cores the loop's default of 2 threads thrashed (10x slower steps under load).
CTC_SMALL = [
    "recipe=speech_recognition",
    "data.max_train_samples=32",
    "data.max_eval_samples=12",
    "train.batch_size=8",
    "eval.batch_size=12",
    "train.threads=1",
]


@pytest.fixture(scope="module")
def ctc_run(tmp_path_factory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("ctc")
    result = check(
        run_cli(
            [*CTC_SMALL, "train.max_steps=3", "train.log_every=1", "output_dir=run"],
            work,
            env={"HF_DATASETS_CACHE": str(work / "cache")},
        )
    )
    return work, result.stdout


def assert_scores_match_records(metrics: dict, records: list[dict]) -> None:
    """WER and CER are the corpus error rates of the normalised texts written to predictions.jsonl (jiwer, the
    reference implementation), whatever a 3-step model predicts: a scoring or gathering bug changes them."""
    import jiwer

    references = [r["reference_normalized"] for r in records]
    predictions = [r["prediction_normalized"] for r in records]
    assert metrics["wer"] == pytest.approx(jiwer.wer(references, predictions))
    assert metrics["cer"] == pytest.approx(jiwer.cer(references, predictions))


def test_ctc_default_run_trains_exports_and_scores(ctc_run):
    work, stdout = ctc_run
    out = work / "run"
    assert "speech model family: ctc (Wav2Vec2BertForCTC" in stdout
    assert "train: duration filter [0, 20] s removed 0 of 32 clips" in stdout
    assert re.search(r"step 3/3 loss \d+\.\d+", stdout), stdout
    metrics = read_json(out / "metrics.json")
    assert metrics["eval_samples"] == 12
    records = read_jsonl(out / "predictions.jsonl")
    assert len(records) == 12 and all(set(r) == RECORD_KEYS for r in records)
    assert_scores_match_records(metrics, records)
    assert records[0]["id"] == "validation-0000" and records[0]["reference"] == "six six four"
    processor = transformers.AutoProcessor.from_pretrained(out / "model")
    assert processor.tokenizer.get_vocab() == json.loads((SAMPLE / "model" / "vocab.json").read_text())
    assert (out / "model" / "model.safetensors").is_file()


def test_ctc_eval_only_on_the_export_reproduces_the_metrics(ctc_run):
    work, _ = ctc_run
    before = tree_digest(work / "run" / "model")
    # The line a user types: the export brings back the data, lengths and eval settings it was scored with.
    args = ["recipe=speech_recognition", "mode=eval", "model.name_or_path=run/model", "output_dir=eval"]
    check(run_cli(args, work, env={"HF_DATASETS_CACHE": str(work / "cache")}))
    trained, evaluated = read_json(work / "run" / "metrics.json"), read_json(work / "eval" / "metrics.json")
    assert (evaluated["wer"], evaluated["cer"]) == (trained["wer"], trained["cer"])
    assert read_jsonl(work / "eval" / "predictions.jsonl") == read_jsonl(work / "run" / "predictions.jsonl")
    assert tree_digest(work / "run" / "model") == before


# ---------------------------------------------------------------- end to end: encoder-decoder (tiny Whisper)


@pytest.fixture(scope="module")
def whisper_run(tmp_path_factory) -> tuple[Path, str]:
    """A tiny Whisper with a tokenizer trained here on the sample's transcripts; weights saved so from_pretrained
    loads."""
    from accel_tasks.recipes.speech.tiny_whisper import build_tiny_whisper, save_tiny_whisper_assets

    work = tmp_path_factory.mktemp("whisper")
    texts = [r["text"] for r in read_jsonl(SAMPLE / "train.jsonl")]
    tiny = build_tiny_whisper(texts, language="fr", task="transcribe")  # the run switches it to English
    save_tiny_whisper_assets(tiny, work / "tiny")
    tiny.model.save_pretrained(work / "tiny")
    args = [
        "recipe=speech_recognition",
        "model.name_or_path=tiny",
        f"data.train_file={SAMPLE / 'train.jsonl'}",
        f"data.validation_file={SAMPLE / 'validation.jsonl'}",
        "data.max_train_samples=16",
        "data.max_eval_samples=6",
        "train.batch_size=8",
        "eval.batch_size=6",
        "train.max_steps=2",
        "train.log_every=1",
        "train.lr=1e-3",
        "train.threads=1",
        "task.language=en",
        "task.task=transcribe",
        "generation.max_new_tokens=8",
        "output_dir=run",
    ]
    result = check(run_cli(args, work, env={"HF_DATASETS_CACHE": str(work / "cache")}))
    return work, result.stdout


def test_whisper_trains_with_language_and_task_and_exports_them(whisper_run):
    work, stdout = whisper_run
    out = work / "run"
    assert "speech model family: seq2seq (WhisperForConditionalGeneration" in stdout
    assert re.search(r"step 2/2 loss \d+\.\d+", stdout), stdout
    generation = json.loads((out / "model" / "generation_config.json").read_text())
    assert (generation["language"], generation["task"]) == ("en", "transcribe")
    tokenizer = transformers.AutoProcessor.from_pretrained(out / "model").tokenizer
    labels = tokenizer("six six four").input_ids
    assert tokenizer.convert_ids_to_tokens(labels[:4]) == [
        "<|startoftranscript|>",
        "<|en|>",
        "<|transcribe|>",
        "<|notimestamps|>",
    ]
    metrics = read_json(out / "metrics.json")
    assert metrics["eval_samples"] == 6
    records = read_jsonl(out / "predictions.jsonl")
    assert len(records) == 6 and all(set(r) == RECORD_KEYS for r in records)
    assert_scores_match_records(metrics, records)
    assert (work / "tiny" / "generation_config.json").read_text().count('"fr"') == 1  # the input model is untouched


def test_whisper_eval_only_on_the_export_reproduces_the_metrics(whisper_run):
    work, _ = whisper_run
    args = ["recipe=speech_recognition", "mode=eval", "model.name_or_path=run/model", "output_dir=eval"]
    result = check(run_cli(args, work, env={"HF_DATASETS_CACHE": str(work / "cache")}))
    assert "speech model family: seq2seq" in result.stdout
    trained, evaluated = read_json(work / "run" / "metrics.json"), read_json(work / "eval" / "metrics.json")
    assert (evaluated["wer"], evaluated["cer"]) == (trained["wer"], trained["cer"])
    assert read_jsonl(work / "eval" / "predictions.jsonl") == read_jsonl(work / "run" / "predictions.jsonl")


# ---------------------------------------------------------------- learning (slow)


def test_audio_info_reads_headers_and_decoded_arrays(tmp_path: Path):
    from accel_tasks.recipes.speech.audio import AudioLoadError, audio_info

    sf.write(tmp_path / "a.flac", tone(1.5, 22050), 22050)
    assert audio_info("a.flac", base_dir=tmp_path) == (pytest.approx(1.5, abs=1e-4), 22050)
    assert audio_info({"bytes": (tmp_path / "a.flac").read_bytes(), "path": None})[1] == 22050
    assert audio_info({"array": np.zeros((2, 8000)), "sampling_rate": 8000}) == (1.0, 8000)
    with pytest.raises(AudioLoadError, match=r"row 7: audio file not found: .*b\.flac \(relative to"):
        audio_info("b.flac", row_id=7, base_dir=tmp_path)
