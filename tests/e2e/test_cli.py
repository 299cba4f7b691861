"""The command line: listing, printing the config, and one-line errors (exit 2) before anything heavy."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import one_error_line, run_cli


def test_list_names_each_recipe_and_where_it_comes_from(tmp_path: Path):
    result = run_cli(["--list"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    for name in ("summarization", "translation", "extractive_qa", "speech_recognition"):
        assert "built-in" in rows[name]


def test_print_config_shows_the_resolved_config_and_exits(tmp_path: Path):
    result = run_cli(
        ["recipe=summarization", "train.lr=3e-4", "generation.num_beams=2", "--print-config"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["train"]["lr"] == pytest.approx(3e-4)
    assert cfg["generation"]["num_beams"] == 2
    assert cfg["recipe"] == "summarization"
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["recipe=nope"], "unknown recipe 'nope'; available: "),
        (["recipe=summarization", "train.lrr=1"], "did you mean 'train.lr'"),
        (["recipe=summarization", "train.batch_size=many"], "wrong type for train.batch_size"),
        (["recipe=summarization", "oops"], "malformed override 'oops'"),
        (["recipe=summarization", "--frobnicate"], "unknown option '--frobnicate'"),
        (
            ["recipe=summarization", "--learning_rate", "3e-5"],
            "Trainer-style flag --learning_rate 3e-5: here it is train.lr=3e-5",
        ),
        (["train.lr=1"], "no recipe given; pass recipe=NAME"),
        (["recipe=summarization", "data.train_file=missing.jsonl"], "data.train_file 'missing.jsonl' does not exist"),
        (["recipe=summarization", "model.name_or_path=./no/such/dir"], "does not exist"),
        (["recipe=summarization", "eval.metrics=[./no_such_metric_dir]"], "no_such_metric_dir"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(tmp_path: Path, args, message):
    line = one_error_line(run_cli([*args, "output_dir=out"], tmp_path))
    assert message in line
    assert not (tmp_path / "out").exists()


def test_a_bad_thread_count_in_the_environment_is_one_line_before_anything_is_written(tmp_path: Path):
    line = one_error_line(
        run_cli(
            ["recipe=summarization", "output_dir=out"],
            tmp_path,
            env={"ACCEL_TASKS_NUM_THREADS": "0"},
        )
    )
    assert "ACCEL_TASKS_NUM_THREADS='0' must be a whole number of threads >= 1" in line
    assert not (tmp_path / "out").exists()


def test_errors_come_through_accelerate_launch_the_same_way(tmp_path: Path):
    result = run_cli(["recipe=summarization", "train.lrr=1"], tmp_path, launcher="accelerate")
    assert result.returncode != 0
    assert (
        "accel-tasks: error: unknown config key 'train.lrr' in command-line overrides; did you mean 'train.lr'?"
        in result.stderr
    )
    # The worker prints the line once; what the launcher adds (it cannot be avoided from inside the worker) is its
    # own traceback, which accelerate 1.16 ends by quoting the worker's stderr after "RuntimeError: ".
    worker_lines = [line for line in result.stderr.splitlines() if line.startswith("accel-tasks: error:")]
    assert len(worker_lines) == 1 and "returned non-zero exit status 2" in result.stderr


def test_a_previous_run_is_never_silently_overwritten(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".accel_tasks_run").write_text("{}\n")  # the marker: a run of ours wrote here
    (out / "metrics.json").write_text('{"keep": true}')
    line = one_error_line(run_cli(["recipe=summarization", "output_dir=out"], tmp_path))
    assert "already holds a previous run" in line and "train.overwrite_output_dir=true" in line
    assert (out / "metrics.json").read_text() == '{"keep": true}'


def test_eval_only_refuses_to_write_into_the_model_directory(tmp_path: Path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"weights")
    line = one_error_line(
        run_cli(
            ["recipe=summarization", "mode=eval", "model.name_or_path=model", "output_dir=model/eval"],
            tmp_path,
        )
    )
    assert "inside the model directory" in line
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]
