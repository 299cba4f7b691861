"""What a run prints where stderr is a log file (as under pytest: no terminal), and what it reports at the end.

No carriage-return progress bars; a progress line every train.log_every steps; the end lists every artifact
and shows sample predictions beside their references; metrics.json holds the run's train loss;
train.eval_at_start scores the untrained model as step 0.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from accel_tasks.recipe import preview

from helpers import check, read_json, read_jsonl, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str, str]:
    work = tmp_path_factory.mktemp("readable")
    result = check(
        run_cli(
            [
                "recipe=summarization",
                "data.max_train_samples=64",
                "data.max_eval_samples=6",
                "train.batch_size=8",
                "train.max_steps=6",
                "train.log_every=1",
                "train.eval_every=3",
                "train.save_every=3",
                "train.eval_at_start=true",
                "generation.max_new_tokens=8",
                "output_dir=run",
            ],
            work,
        )
    )
    return work / "run", result.stdout, result.stderr


def test_no_carriage_returns_and_a_progress_line_per_log_step(run):
    out, stdout, stderr = run
    assert "\r" not in stdout and "\r" not in stderr
    progress = re.findall(r"step (\d+)/6 loss \S+ .* \| (\d+)% elapsed \S+ left \S+", stdout)
    assert [int(step) for step, _ in progress] == [1, 2, 3, 4, 5, 6]
    assert progress[-1][1] == "100"


def test_the_end_lists_every_artifact_with_what_to_do_with_it(run):
    out, stdout, _ = run
    tail = stdout[stdout.index("done: train run of recipe=summarization") :]
    for name in (
        "config.yaml",
        "logs/",
        "checkpoints/",
        "model/",
        "eval_history.jsonl",
        "predictions.jsonl",
        "metrics.json",
    ):
        assert f"\n  run/{name} " in tail, name  # as the user typed output_dir
        assert (out / name.rstrip("/")).exists()
    assert "tensorboard --logdir run/logs" in tail
    assert "train.resume_from=latest" in tail and "(2 kept)" in tail
    assert "accel-tasks report run" in tail


def test_the_end_shows_sample_predictions_beside_their_references(run):
    out, stdout, _ = run
    records = read_jsonl(out / "predictions.jsonl")
    shown = stdout[stdout.index("sample predictions") :]
    for record in records[:3]:
        assert f"[{record['id']}] input:      {preview(record['input'], 120)}" in shown
        assert f"prediction: {preview(record['prediction'], 120)}" in shown
        assert f"reference:  {preview(record['reference'], 120)}" in shown
    assert f"[{records[3]['id']}]" not in shown


def test_metrics_hold_the_train_loss_and_the_untrained_score_comes_first(run):
    out, stdout, _ = run
    metrics = read_json(out / "metrics.json")
    logged = [float(v) for v in re.findall(r"step \d+/6 loss (\S+)", stdout)]
    # log_every=1: each logged loss is one step's, so the run's mean loss is their mean.
    assert math.isclose(metrics["train_loss"], sum(logged) / len(logged), rel_tol=1e-3)
    history = read_jsonl(out / "eval_history.jsonl")
    assert [h["step"] for h in history] == [0, 3]
    assert "step 0 eval: rouge1=" in stdout
    assert metrics["best_step"] in (3, 6)  # the untrained baseline is no candidate for the best
