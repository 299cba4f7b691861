"""Summarization end to end through `accelerate launch`: train, periodic eval, checkpoints, export,
eval-only on the export and on a checkpoint, exact resume, feature cache, and learning."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from helpers import REPO, check, read_json, read_jsonl, run_cli, tree_digest

SAMPLE = REPO / "accel_tasks" / "samples" / "summarization"

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SMALL = [
    "recipe=summarization",
    "data.max_train_samples=64",
    "data.max_eval_samples=12",
    "train.batch_size=8",
    "eval.batch_size=8",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_summarization_run) -> tuple[Path, str]:
    """The session's trained summarization run (conftest.py: 240 steps, checkpoints at 120 and 240), copied here
    because the checks below write next to it."""
    work = tmp_path_factory.mktemp("summ")
    shared_summarization_run.copy_to(work)
    return work, shared_summarization_run.stdout


def test_training_logs_evaluates_checkpoints_and_exports(trained):
    work, stdout = trained
    out = work / "run"
    assert re.search(r"step 80/240 loss \d+\.\d+ lr \S+ \d+\.\d samples/s \d+ tokens/s", stdout), stdout
    assert "step 120 eval: rouge1=" in stdout
    assert (out / "config.yaml").is_file()
    history = read_jsonl(out / "eval_history.jsonl")
    # Step 0: the bundled model's preset scores the untrained model first (train.eval_at_start).
    assert [h["step"] for h in history] == [0, 120] and all(k in history[1] for k in ROUGE_KEYS)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_240"
    ]  # save_total_limit=1 dropped step_120
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((out / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/samples_per_s", "train/tokens_per_s", "eval/rougeL"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [80, 160, 240]


def test_export_is_a_loadable_model_with_tokenizer_and_generation_config(trained):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    model_dir = trained[0] / "run" / "model"
    assert (model_dir / "model.safetensors").is_file()
    assert not list(model_dir.glob("*.bin"))
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    GenerationConfig.from_pretrained(model_dir)
    # The export alone, with the settings it saved, writes the summary the run wrote for the first example.
    import yaml

    saved = yaml.safe_load((model_dir / "accel_tasks_config.yaml").read_text())
    first = read_jsonl(SAMPLE / "validation.jsonl")[0]
    ids = tokenizer(
        [first["document"]], max_length=saved["task"]["max_source_length"], truncation=True, return_tensors="pt"
    )
    out = model.generate(
        **ids, num_beams=saved["generation"]["num_beams"], max_new_tokens=saved["generation"]["max_new_tokens"]
    )
    summary = tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()
    assert summary and summary == read_jsonl(trained[0] / "run" / "predictions.jsonl")[0]["prediction"]


def test_predictions_and_metrics_are_written(trained):
    out = trained[0] / "run"
    records = read_jsonl(out / "predictions.jsonl")
    assert len(records) == 12
    assert all({"id", "prediction", "reference"} <= set(r) for r in records)
    metrics = read_json(out / "metrics.json")
    assert all(0.0 < metrics[k] < 1.0 for k in ROUGE_KEYS), metrics
    assert metrics["eval_samples"] == 12
    assert all(r["prediction"].strip() for r in records), "the trained model writes non-empty summaries"


@pytest.mark.parametrize("model_path", ["run/model", "run/checkpoints/step_240"])
def test_eval_only_reproduces_the_training_metrics_and_leaves_the_model_alone(trained, model_path):
    """The README line as a user types it: the model path and nothing else (plus where to write)."""
    work, _ = trained
    before = tree_digest(work / model_path)
    out = f"eval_{Path(model_path).name}"
    check(run_cli(["recipe=summarization", "mode=eval", f"model.name_or_path={model_path}", f"output_dir={out}"], work))
    trained_metrics = read_json(work / "run" / "metrics.json")
    eval_metrics = read_json(work / out / "metrics.json")
    assert {k: eval_metrics[k] for k in ROUGE_KEYS} == {k: trained_metrics[k] for k in ROUGE_KEYS}
    assert read_jsonl(work / out / "predictions.jsonl") == read_jsonl(work / "run" / "predictions.jsonl")
    assert tree_digest(work / model_path) == before


def test_the_readme_eval_line_on_other_data_and_the_test_split(trained):
    """README: ``mode=eval model.name_or_path=outputs/summarization/model data.validation_file=my_dev.jsonl
    output_dir=outputs/eval``; and ``eval.split=test`` with a tsv test file (tsv is a documented format)."""
    work, _ = trained
    rows = read_jsonl(SAMPLE / "validation.jsonl")
    (work / "my_dev.jsonl").write_text(
        "".join(json.dumps({"text": r["document"], "summary": r["summary"]}) + "\n" for r in rows[:20])
    )
    check(
        run_cli(
            [
                "recipe=summarization",
                "mode=eval",
                "model.name_or_path=run/model",
                "data.validation_file=my_dev.jsonl",
                "output_dir=outputs/eval",
            ],
            work,
        )
    )
    metrics = read_json(work / "outputs" / "eval" / "metrics.json")
    assert metrics["eval_samples"] == 20, "other data: the saved data settings (max_eval_samples=12) do not apply"
    assert 0.0 < metrics["rougeL"] < 1.0
    plain = [(r["document"].replace('"', "'"), r["summary"].replace('"', "'")) for r in rows[20:27]]
    with (work / "my_test.tsv").open("w") as handle:
        handle.write("text\tsummary\n" + "".join(f"{text}\t{summary}\n" for text, summary in plain))
    check(
        run_cli(
            [
                "recipe=summarization",
                "mode=eval",
                "model.name_or_path=run/model",
                "eval.split=test",
                "data.test_file=my_test.tsv",
                "output_dir=outputs/test",
            ],
            work,
        )
    )
    records = read_jsonl(work / "outputs" / "test" / "predictions.jsonl")
    assert [r["reference"] for r in records] == [summary for _, summary in plain]


def test_overwrite_output_dir_replaces_our_run_and_keeps_other_files(tmp_path: Path):
    args = [*SMALL, "train.max_steps=2", "output_dir=run"]
    check(run_cli(args, tmp_path))
    (tmp_path / "run" / "notes.txt").write_text("mine")
    refused = run_cli(args, tmp_path)
    assert refused.returncode == 2 and "already holds a previous run" in refused.stderr
    first = (tmp_path / "run" / "model" / "model.safetensors").stat().st_mtime_ns
    check(run_cli([*args, "train.overwrite_output_dir=true"], tmp_path))
    assert (tmp_path / "run" / "model" / "model.safetensors").stat().st_mtime_ns != first
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine", "overwrite deletes only what a run of ours wrote"


def test_resume_from_the_saved_config_matches_the_uninterrupted_run(tmp_path: Path):
    """Run A trains 6 steps with a checkpoint at 3; run B repeats A from A's config.yaml, resumes at 3."""
    env = {"HF_DATASETS_CACHE": str(tmp_path / "ds_cache")}
    args = [
        *SMALL,
        "train.max_steps=6",
        "train.grad_accum=2",
        "train.save_every=3",
        "train.save_total_limit=2",
        "train.log_every=1",
    ]
    first = check(run_cli([*args, "output_dir=a"], tmp_path, env=env))
    assert "(preprocessed)" in first.stdout
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_3", tmp_path / "b" / "checkpoints" / "step_3")
    second = check(
        run_cli(["--config", "a/config.yaml", "output_dir=b", "train.resume_from=latest"], tmp_path, env=env)
    )
    assert "train: 64 examples -> 64 features (loaded from cache)" in second.stdout
    assert "resumed from b/checkpoints/step_3 at step 3" in second.stdout

    def losses(text: str) -> dict[int, str]:
        return {int(m.group(1)): m.group(2) for m in re.finditer(r"step (\d+)/6 loss (\S+)", text)}

    assert {step: loss for step, loss in losses(first.stdout).items() if step > 3} == losses(second.stdout)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
