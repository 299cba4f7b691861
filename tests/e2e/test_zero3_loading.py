"""Models that compute weights in their init load under DeepSpeed ZeRO-3 on 2 processes, through the real CLI.

Marian (the bundled summarization model) and Whisper build their sinusoidal position tables in ``_init_weights``
from the table's shape; under ``zero.Init`` a loaded table is partitioned (empty) when transformers runs that init
for what the weights lack, and every rank failed: Marian when it evaluated a ZeRO checkpoint, Whisper as soon as
it trained from saved weights (engines/zero3_init.py). Per model, one run of each kind: train 2 steps under ZeRO-3
on 2 processes with a checkpoint at the last step, then eval-only under ZeRO-3 on 2 processes of the export and of
the ZeRO checkpoint (shards only: the load that reassembles them), each scored against a plain 1-process eval of
the same export: equal metrics and predictions. ``accelerate launch`` for real (DeepSpeed is never forked); mixed
precision off, so every run computes in fp32.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers import ACCELERATE_CONFIGS, check, read_json, read_jsonl, run_cli

pytestmark = pytest.mark.slow

SPEECH_SAMPLE = Path(__file__).resolve().parents[2] / "accel_tasks" / "samples" / "speech_recognition"
MARIAN_ARGS = [
    "recipe=summarization",  # the bundled Marian, built from its config, on the bundled sample
    "data.max_train_samples=16",
    "data.max_eval_samples=6",
    "train.batch_size=4",
    "task.max_source_length=48",
    "generation.max_new_tokens=8",
    "generation.num_beams=1",
]
WHISPER_ARGS = [
    "recipe=speech_recognition",
    "model.name_or_path=tiny",
    f"data.train_file={SPEECH_SAMPLE / 'train.jsonl'}",
    f"data.validation_file={SPEECH_SAMPLE / 'validation.jsonl'}",
    "data.max_train_samples=16",
    "data.max_eval_samples=6",
    "train.batch_size=8",
    "eval.batch_size=6",
    "train.lr=1e-3",
    "task.language=en",
    "task.task=transcribe",
    "generation.max_new_tokens=8",
]
TRAIN = ["train.max_steps=2", "train.save_every=2", "train.log_every=1", "train.report_to=[none]"]


def zero3_launcher(work: Path) -> Path:
    """deepspeed_zero3.yaml on 2 CPU processes in fp32."""
    config = yaml.safe_load((ACCELERATE_CONFIGS / "deepspeed_zero3.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no")
    path = work / "zero3.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def zero3_runs(work: Path, train_args: list[str], env: dict) -> dict[str, Path]:
    """train (ZeRO-3), eval of the export and of the checkpoint (ZeRO-3), eval of the export (1 process, plain):
    each run's output_dir by name. Every ZeRO-3 run must say it ran on 2 DeepSpeed processes."""
    launcher = zero3_launcher(work)
    zero3 = {"config_file": launcher, "env": env}
    train = check(run_cli([*train_args, *TRAIN, "output_dir=train"], work, **zero3))
    checkpoint = work / "train" / "checkpoints" / "step_2"
    # Only ZeRO shards: the eval reassembles them (zero_to_fp32) and loads them into a partitioned model.
    assert (checkpoint / "pytorch_model").is_dir() and not (checkpoint / "model.safetensors").exists()
    outputs = [train]
    for name, source in (("eval_export", "train/model"), ("eval_checkpoint", "train/checkpoints/step_2")):
        args = ["mode=eval", f"model.name_or_path={source}", f"output_dir={name}"]
        outputs.append(check(run_cli(args, work, **zero3)))
    for result in outputs:
        assert "processes=2 distributed=DEEPSPEED" in result.stdout and "Traceback" not in result.stderr
    check(run_cli(["mode=eval", "model.name_or_path=train/model", "output_dir=eval_plain"], work, env=env))
    return {name: work / name for name in ("train", "eval_export", "eval_checkpoint", "eval_plain")}


def scores(output_dir: Path) -> dict:
    """The eval's metrics, without timings and the training summary."""
    metrics = read_json(output_dir / "metrics.json")
    return {k: v for k, v in metrics.items() if not k.endswith("_runtime_s") and not k.startswith(("train_", "best_"))}


def assert_zero3_evals_match_the_plain_one(runs: dict[str, Path]) -> None:
    plain = scores(runs["eval_plain"])
    assert plain["eval_samples"] == 6
    expected = read_jsonl(runs["eval_plain"] / "predictions.jsonl")
    for name in ("train", "eval_export", "eval_checkpoint"):  # the training run's own final eval too
        assert scores(runs[name]) == plain, name
        assert read_jsonl(runs[name] / "predictions.jsonl") == expected, name


@pytest.fixture(scope="module")
def marian_runs(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("zero3_marian")
    return zero3_runs(work, MARIAN_ARGS, {"HF_DATASETS_CACHE": str(work / "cache")})


@pytest.fixture(scope="module")
def whisper_runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny Whisper saved with weights (from_pretrained loads it). Its generation may not end, nor write a special
    token or a lone byte: the untrained model writes letters its weights choose, not the empty transcript any weights
    give."""
    from accel_tasks.recipes.speech.tiny_whisper import (
        build_tiny_whisper,
        save_tiny_whisper_assets,
        whisper_special_tokens,
    )

    work = tmp_path_factory.mktemp("zero3_whisper")
    texts = [row["text"] for row in read_jsonl(SPEECH_SAMPLE / "train.jsonl")]
    tiny = build_tiny_whisper(texts, language="en", task="transcribe")
    save_tiny_whisper_assets(tiny, work / "tiny")
    tiny.model.save_pretrained(work / "tiny")
    generation = work / "tiny" / "generation_config.json"
    settings = json.loads(generation.read_text())
    tokenizer = tiny.tokenizer
    lone_bytes = [i for i in range(len(tokenizer)) if "\ufffd" in tokenizer.decode([i])]
    settings["suppress_tokens"] = sorted({*tokenizer.convert_tokens_to_ids(whisper_special_tokens()), *lone_bytes})
    generation.write_text(json.dumps(settings))
    return zero3_runs(work, WHISPER_ARGS, {"HF_DATASETS_CACHE": str(work / "cache")})


def test_bundled_marian_under_zero3_evaluates_its_export_and_its_checkpoint_as_a_plain_eval_does(marian_runs):
    assert_zero3_evals_match_the_plain_one(marian_runs)


def test_tiny_whisper_trains_under_zero3_and_evaluates_its_export_and_its_checkpoint_as_a_plain_eval_does(
    whisper_runs,
):
    assert_zero3_evals_match_the_plain_one(whisper_runs)
    predictions = read_jsonl(whisper_runs["eval_plain"] / "predictions.jsonl")
    assert all(row["prediction"] and "\ufffd" not in row["prediction"] for row in predictions)  # letters
