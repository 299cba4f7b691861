"""Whisper guards of the speech seq2seq recipe, with the tiny Whisper: rows the model cannot take whole are dropped
and counted (or refused with task.on_too_long=error), the export generates with the language and task it was
trained with, and task.spec_augment masks input features while training only.

The row filter and the language rule as plain functions are tested in tests/unit/test_speech_logic.py; here the
recipe wires them in, and one CLI run shows what a user sees.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from accel_tasks.errors import ConfigError
from accel_tasks.preflight import resolve_config

from helpers import check, one_error_line, read_json, run_cli

sf = pytest.importorskip("soundfile")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SR = 16_000
WORDS = "one two three four five six seven eight nine zero".split()
PROMPT = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]


def write_rows(folder: Path, split: str, rows: list[tuple[str, float, str]]) -> Path:
    """Noise clips under folder/clips and a jsonl of (id, seconds, text) rows pointing at them."""
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(len(rows))
    with (folder / f"{split}.jsonl").open("w") as handle:
        for row_id, seconds, text in rows:
            sf.write(folder / "clips" / f"{row_id}.wav", 0.1 * noise.standard_normal(int(seconds * SR)), SR)
            handle.write(json.dumps({"id": row_id, "audio": f"clips/{row_id}.wav", "text": text}) + "\n")
    return folder / f"{split}.jsonl"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A tiny Whisper (4 s window, 64 decoder positions; French prompt, weights saved) and data in a folder: six
    clips it takes, one over its window, one transcript over its decoder."""
    from accel_tasks.recipes.speech.tiny_whisper import build_tiny_whisper, save_tiny_whisper_assets

    folder = tmp_path_factory.mktemp("whisper_guards")
    tiny = build_tiny_whisper([" ".join(WORDS)], language="fr", task="transcribe")
    save_tiny_whisper_assets(tiny, folder / "tiny")
    tiny.model.save_pretrained(folder / "tiny")
    fitting = [(f"r{i}", 1.0 + 0.25 * i, " ".join(WORDS[i : i + 3])) for i in range(6)]
    write_rows(folder, "train", [*fitting, ("long_clip", 5.0, "one two"), ("long_text", 1.0, " ".join(WORDS * 7))])
    write_rows(folder, "validation", [("v0", 1.0, "one two"), ("v1", 1.5, "three four")])
    return folder


def make_recipe(work: Path, *overrides: str):
    cfg, cls = resolve_config(
        [
            "recipe=speech_recognition",
            f"model.name_or_path={work / 'tiny'}",
            f"data.train_file={work / 'train.jsonl'}",
            f"data.validation_file={work / 'validation.jsonl'}",
            *overrides,
        ],
        None,
    )
    recipe = cls(cfg)
    recipe.validate_options()
    return recipe


def encoder_inputs(model, features: torch.Tensor) -> torch.Tensor:
    """The features the encoder receives from one forward (after any SpecAugment masking)."""
    seen: list[torch.Tensor] = []
    hook = model.model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        model(input_features=features.clone(), labels=torch.tensor([[5, 6, 7]]))
    finally:
        hook.remove()
    return seen[0]


def test_spec_augment_masks_features_in_train_mode_only(work: Path):
    recipe = make_recipe(work, "task.spec_augment=true", "task.mask_time_prob=0.5")
    model, _ = recipe.load_model()
    assert (model.config.apply_spec_augment, model.config.mask_time_prob, model.config.mask_feature_prob) == (
        True,
        0.5,
        0.0,
    )
    assert (recipe.cfg.task.mask_time_prob, recipe.cfg.task.mask_feature_prob) == (0.5, 0.0)  # saved settings
    features = torch.randn(1, 80, 400)
    model.train()
    masked = encoder_inputs(model, features)
    zero_frames = (masked[0] == 0).all(dim=0)
    assert 100 <= int(zero_frames.sum()) < 400  # about half the frames, in spans of 10
    assert torch.equal(masked[0][:, ~zero_frames], features[0][:, ~zero_frames])
    model.eval()
    assert torch.equal(encoder_inputs(model, features), features)  # eval and generation: untouched
    evaluating = make_recipe(work, "mode=eval", "task.spec_augment=true")
    assert evaluating.load_model()[0].config.apply_spec_augment is False  # the model's config, as trained


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.mask_time_prob=0.2"], r"task.mask_time_prob=0.2 applies only with SpecAugment; set task.spec_augment"),
        (["task.spec_augment=true", "task.mask_feature_prob=1.5"], r"task.mask_feature_prob=1.5 is not a share"),
        (["task.on_too_long=cut"], r"task.on_too_long='cut' is not one of drop, error"),
    ],
)
def test_bad_guard_settings_are_refused_before_loading(work: Path, overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=message):
        make_recipe(work, *overrides)


def test_spec_augment_is_refused_for_ctc_models():
    cfg, cls = resolve_config(["recipe=speech_recognition", "task.spec_augment=true"], None)
    with pytest.raises(ConfigError, match=r"task.spec_augment applies to encoder-decoder .* this model is ctc"):
        cls(cfg).validate_options()


def test_on_too_long_error_names_the_rows_before_features_are_made(work: Path):
    """As typed in the docs (tiny model, local data): one error line, exit 2, nothing written; then the decoder's."""
    args = [
        "recipe=speech_recognition",
        "model.name_or_path=tiny",
        "data.train_file=train.jsonl",
        "data.validation_file=validation.jsonl",
        "task.on_too_long=error",
        "output_dir=refused",
    ]
    line = one_error_line(run_cli(args, work, env={"HF_DATASETS_CACHE": str(work / "cache")}), alone=False)
    assert re.search(r"the train data has 1 clip\(s\) longer .* 4 s input window.*rows 'long_clip'; split", line)
    assert not (work / "refused").exists()
    recipe = make_recipe(work, "task.on_too_long=error")
    recipe.load_model()
    raw = recipe.load_data(("train",))["train"].filter(lambda row: row["id"] != "long_clip")
    with pytest.raises(ConfigError, match=r"1 transcript\(s\) longer than the decoder's 64 positions.*'long_text'"):
        recipe.prepare_raw(raw, "train")


def test_cli_run_drops_with_counts_exports_language_and_trains_with_spec_augment(work: Path):
    args = [
        "recipe=speech_recognition",
        "model.name_or_path=tiny",
        "data.train_file=train.jsonl",
        "data.validation_file=validation.jsonl",
        "task.language=english",
        "task.task=transcribe",
        "task.spec_augment=true",
        "train.batch_size=3",
        "eval.batch_size=2",
        "train.max_steps=2",
        "train.threads=1",
        "generation.max_new_tokens=4",
        "output_dir=run",
    ]
    stdout = check(run_cli(args, work, env={"HF_DATASETS_CACHE": str(work / "cache")})).stdout
    assert "train: removed 1 clips longer than the model's 4 s input window" in stdout
    assert (
        "train: dropped 1 of 8 rows whose transcript is longer than the decoder's 64 positions once tokenised "
        "(rows 'long_text')" in stdout
    )
    assert "SpecAugment while training (not in eval or generation): mask_time_prob=0.05" in stdout
    run, export = work / "run", work / "run" / "model"
    settings = yaml.safe_load((run / "config.yaml").read_text())["task"]
    assert (settings["spec_augment"], settings["mask_time_prob"], settings["on_too_long"]) == (True, 0.05, "drop")
    config = read_json(export / "config.json")
    assert (config["apply_spec_augment"], config["mask_time_prob"]) == (True, 0.05)
    assert read_json(work / "tiny" / "config.json")["apply_spec_augment"] is False  # the input model is untouched
    generation = read_json(export / "generation_config.json")
    assert (generation["language"], generation["task"], generation.get("forced_decoder_ids")) == (
        "english",
        "transcribe",
        None,
    )
    # Loading the export and calling generate prompts with the language and task the labels were trained with.
    model = transformers.AutoModelForSpeechSeq2Seq.from_pretrained(export).eval()
    processor = transformers.AutoProcessor.from_pretrained(export)
    seen: list[list[int]] = []
    model.model.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"][0].tolist()), with_kwargs=True
    )
    clip, _ = sf.read(work / "clips" / "v0.wav")
    model.generate(processor(clip, sampling_rate=SR, return_tensors="pt").input_features, max_new_tokens=1)
    assert processor.tokenizer.convert_ids_to_tokens(seen[0]) == PROMPT
    assert processor.tokenizer.convert_ids_to_tokens(processor.tokenizer("one").input_ids[:4]) == PROMPT
