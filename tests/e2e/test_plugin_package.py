"""The plugin path for real: install the example package and run its recipe by entry-point name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, check, read_json, read_jsonl, run_cli

PLUGIN = REPO / "examples" / "text_classification_plugin"


@pytest.fixture(scope="module")
def installed_plugin():
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(PLUGIN)]
    subprocess.run(install, check=True, capture_output=True, text=True)
    yield
    subprocess.run(
        [sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", "accel-tasks-textcls"], capture_output=True
    )


def test_the_entry_point_recipe_is_listed_with_its_package(installed_plugin, tmp_path: Path):
    result = check(run_cli(["--list"], tmp_path))
    row = next(line for line in result.stdout.splitlines() if line.startswith("text_classification "))
    assert "entry point (accel-tasks-textcls 0.1.0)" in row
    assert "accel_tasks_textcls.recipe:TextClassificationRecipe" in row


def test_the_plugin_trains_and_scores_through_accelerate_launch_in_bf16(installed_plugin, tmp_path: Path):
    result = check(
        run_cli(
            ["recipe=text_classification", "train.max_steps=60", "output_dir=run"],
            tmp_path,
            launcher="accelerate",
            mixed_precision="bf16",
        )
    )
    assert "mixed_precision=bf16" in result.stdout
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["accuracy"] >= 0.9 and metrics["f1"] >= 0.9, metrics
    records = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert len(records) == 100 and {"input", "prediction", "reference"} <= set(records[0])


def test_eval_only_takes_the_label_order_from_the_trained_model(installed_plugin, tmp_path: Path):
    """Labels typed in another order than training used must not silently mis-score: the model's id2label wins."""
    check(run_cli(["recipe=text_classification", "train.max_steps=60", "output_dir=run"], tmp_path))
    result = check(
        run_cli(
            [
                "recipe=text_classification",
                "mode=eval",
                "model.name_or_path=run/model",
                "task.labels=[positive,negative]",
                "output_dir=eval",
            ],
            tmp_path,
        )
    )
    assert "task.labels=['negative', 'positive'] from the model" in result.stdout
    trained, evaluated = read_json(tmp_path / "run" / "metrics.json"), read_json(tmp_path / "eval" / "metrics.json")
    assert trained["f1"] >= 0.9 and (evaluated["accuracy"], evaluated["f1"]) == (trained["accuracy"], trained["f1"])
    # mode=predict on the same texts without their labels: the plugin's predictions, no metrics.
    rows = read_jsonl(PLUGIN / "accel_tasks_textcls" / "sample" / "validation.jsonl")
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": row["text"]}) + "\n" for row in rows))
    check(
        run_cli(
            [
                "recipe=text_classification",
                "mode=predict",
                "model.name_or_path=run/model",
                "data.test_file=texts.jsonl",
                "output_dir=predict",
            ],
            tmp_path,
        )
    )
    predicted = read_jsonl(tmp_path / "predict" / "predictions.jsonl")
    assert [r["prediction"] for r in predicted] == [
        r["prediction"] for r in read_jsonl(tmp_path / "run" / "predictions.jsonl")
    ]
    assert "reference" not in predicted[0] and "accuracy" not in read_json(tmp_path / "predict" / "metrics.json")
