"""train.report_to: TensorBoard and MLflow (its local file store) for real, none, and the one-line errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from helpers import check, one_error_line, read_jsonl, run_cli

SHORT = [
    "recipe=summarization",
    "data.max_train_samples=64",
    "data.max_eval_samples=6",
    "train.batch_size=8",
    "train.max_steps=4",
    "train.log_every=2",
    "train.eval_every=2",
    "generation.max_new_tokens=6",
]


def tensorboard_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # logs/<mode>/ holds the scalars; accelerate writes the hparams into a timestamped folder below it.
    events = EventAccumulator(str(logdir / "train"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_tensorboard_and_mlflow_receive_the_same_values(tmp_path: Path, monkeypatch):
    pytest.importorskip("mlflow", reason="MLflow is in the test extra: pip install -e '.[test]'")
    from mlflow.tracking import MlflowClient

    check(
        run_cli(
            [*SHORT, "train.report_to=[tensorboard,mlflow]", "output_dir=run"],
            tmp_path,
            env={"MLFLOW_TRACKING_URI": ""},
        )
    )
    out = tmp_path / "run"
    board = tensorboard_scalars(out / "logs")
    assert [step for step, _ in board["train/loss"]] == [2, 4]
    # MLflow's file store inside output_dir, found without a server.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what the run set for itself, for this reader
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    runs = [run for experiment in client.search_experiments() for run in client.search_runs([experiment.experiment_id])]
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["train.max_steps"] == "4" and run.data.params["recipe"] == "summarization"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [step for step, _ in board["train/loss"]]
    assert [m.value for m in history] == pytest.approx([value for _, value in board["train/loss"]], rel=1e-6)
    evals = client.get_metric_history(run.info.run_id, "eval/rougeL")
    assert [m.step for m in evals] == [0, 2, 4]  # 0: the bundled model's preset evaluates at the start
    assert evals[0].value == pytest.approx(read_jsonl(out / "eval_history.jsonl")[0]["rougeL"])


@pytest.mark.slow
def test_report_to_none_writes_no_tracker_files(tmp_path: Path):
    check(run_cli([*SHORT, "train.report_to=[none]", "output_dir=run"], tmp_path))
    assert not (tmp_path / "run" / "logs").exists() and not (tmp_path / "run" / "mlruns").exists()
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_an_unknown_tracker_is_one_line(tmp_path: Path):
    line = one_error_line(run_cli(["recipe=summarization", "train.report_to=[tensorbord]"], tmp_path))
    assert "'tensorbord' is not a tracker accelerate knows" in line and "tensorboard" in line
    assert not (tmp_path / "outputs").exists()


def test_a_tracker_that_is_not_installed_is_one_line_naming_the_pip_command(tmp_path: Path):
    absent = next(
        (name for name in ("clearml", "comet_ml", "swanlab", "aim") if importlib.util.find_spec(name) is None), None
    )
    if absent is None:
        pytest.skip("every candidate tracker package is installed here")
    line = one_error_line(run_cli(["recipe=summarization", f"train.report_to=[{absent}]"], tmp_path))
    assert f"train.report_to: {absent} is not installed here; pip install" in line
    assert not (tmp_path / "outputs").exists()
