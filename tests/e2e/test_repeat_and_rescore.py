"""Repeating a run with its saved config, scoring a run again, and an eval run pointed at a training run's folder.

As typed: `--config OUTPUT_DIR/config.yaml` repeats the run (into OUTPUT_DIR-rerun, said in one notice, the first run
untouched); `mode=eval` twice with no output_dir gives each its own folder (outputs/RECIPE-eval, then -eval-2); an
explicit output_dir holding an earlier eval gets a hint that applies to eval; and `mode=eval ... output_dir=RUN
train.overwrite_output_dir=true` on the training run it scores is one line that deletes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import check, one_error_line, read_json, run_cli, tree_digest

TINY = [
    "recipe=summarization",
    "data.max_train_samples=16",
    "data.max_eval_samples=4",
    "train.max_steps=2",
    "train.eval_at_start=false",
    "generation.max_new_tokens=8",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("repeat")
    check(run_cli([*TINY, "output_dir=run"], work))
    return work


def test_the_saved_config_repeats_the_run_into_a_new_folder(trained):
    before = tree_digest(trained / "run")
    result = check(run_cli(["--config", "run/config.yaml"], trained))
    assert "--config run/config.yaml is the config of the run in run: repeating it into run-rerun" in result.stdout
    assert read_json(trained / "run-rerun" / "metrics.json")["train_steps"] == 2
    assert tree_digest(trained / "run") == before
    again = check(run_cli(["--config", "run/config.yaml"], trained))
    assert "repeating it into run-rerun-2" in again.stdout


def test_each_eval_without_an_output_dir_gets_its_own_folder(trained):
    args = ["mode=eval", "model.name_or_path=run/model"]
    check(run_cli(args, trained))
    second = check(run_cli(args, trained))
    assert "outputs/summarization-eval holds an earlier eval run's results: this run writes to " in second.stdout
    assert (trained / "outputs" / "summarization-eval-2" / "metrics.json").is_file()
    named = [*args, "output_dir=outputs/summarization-eval"]
    line = one_error_line(run_cli(named, trained))
    assert "already holds the results of an earlier eval run; pass another output_dir" in line
    assert "resume_from" not in line


def test_an_eval_never_replaces_the_training_run_it_scores(trained):
    before = tree_digest(trained / "run")
    args = ["mode=eval", "model.name_or_path=run/model", "output_dir=run", "train.overwrite_output_dir=true"]
    result = run_cli(args, trained)
    assert result.returncode == 2
    assert "holds a training run (its model or checkpoints); mode=eval never writes into one" in one_error_line(result)
    assert tree_digest(trained / "run") == before


def test_an_overwrite_that_diverges_puts_the_finished_run_back_and_a_retry_keeps_the_failed_logs(trained):
    before = tree_digest(trained / "run")
    diverging = [*TINY, "output_dir=run", "train.overwrite_output_dir=true", "train.lr=1e10", "train.max_steps=30"]
    result = run_cli(diverging, trained)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "the run failed; the run it replaced is back, its outputs are in run/failed-run-1" in result.stderr
    restored = {name: sha for name, sha in tree_digest(trained / "run").items() if not name.startswith("failed-run-1/")}
    assert restored == before  # the finished run, byte for byte
    assert (trained / "run" / "failed-run-1" / "config.yaml").is_file()

    fresh = trained / "fresh"
    assert run_cli([*TINY, "output_dir=fresh", "train.lr=1e10", "train.max_steps=30"], trained).returncode == 3
    retry = check(run_cli([*TINY, "output_dir=fresh"], trained))
    assert "an earlier attempt's outputs (logs, config) are kept in fresh/failed-run-1" in retry.stderr
    assert (fresh / "failed-run-1" / "logs").is_dir() and (fresh / "model").is_dir()
    overwrite = check(run_cli([*TINY, "output_dir=fresh", "train.overwrite_output_dir=true"], trained))
    assert "the previous run is kept in .replaced-run until this one ends" in overwrite.stdout
    assert not (fresh / ".replaced-run").exists() and (fresh / "model").is_dir()  # discarded once the run ended well
