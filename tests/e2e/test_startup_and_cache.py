"""Start-up: --print-config, --help and the common error lines import no heavy library; a second identical
run tokenizes nothing (the features come from the cache, and its log line says so).

bench/startup.py and bench/preprocess_cache.py measure the times; these tests keep the behaviour behind them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, check, cli_env, run_cli

HEAVY = ("torch", "transformers", "datasets", "evaluate", "accelerate", "peft", "deepspeed")
PROBE = (
    "import sys\n"
    "from accel_tasks.run import main\n"
    "code = main(sys.argv[1:])\n"
    f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules], 'EXIT', code, file=sys.stderr)\n"
)


def heavy_imports(args: list[str], cwd: Path) -> tuple[list[str], int, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    line = next(line for line in done.stderr.splitlines() if line.startswith("HEAVY"))
    heavy, _, code = line[len("HEAVY ") :].rpartition(" EXIT ")
    return eval(heavy), int(code), done.stderr  # noqa: S307 - our own probe's list literal


def _previous_run(path: Path) -> Path:
    path.mkdir()
    (path / ".accel_tasks_run").write_text("{}\n")
    (path / "metrics.json").write_text("{}\n")
    return path


@pytest.mark.parametrize(
    "args,expected",
    [
        (["recipe=summarization", "--print-config"], None),
        (["recipe=translation", "--help"], None),
        (["recipe=summarization", "train.lrr=1"], "unknown config key 'train.lrr'"),
        (["recipe=summarization", "train.lr_scheduler=cosinee"], "did you mean 'cosine'"),
        (["recipe=summarization", "data.train_file=missing.jsonl"], "data.train_file 'missing.jsonl' does not exist"),
        (["recipe=summarization", "model.name_or_path=./missing"], "does not exist"),
        (["recipe=summarization", "train.resume_from=."], "is not a checkpoint directory"),
        (["recipe=summarization", "output_dir=previous"], "already holds a previous run"),
        (["recipe=summarization", "deepspeed=missing.json"], "does not exist"),
    ],
)
def test_print_config_help_and_error_lines_import_no_heavy_library(tmp_path: Path, args, expected):
    _previous_run(tmp_path / "previous")
    heavy, code, stderr = heavy_imports(args, tmp_path)
    assert heavy == [], f"{args} imported {heavy}"
    if expected is None:
        assert code == 0, stderr
    else:
        assert code == 2 and expected in stderr, stderr


def test_schedule_names_read_from_the_source_are_transformers_names():
    from transformers import SchedulerType

    from accel_tasks.preflight import transformers_schedule_names

    assert transformers_schedule_names() == [item.value for item in SchedulerType]


COUNTING_RECIPE = '''
import os

from accel_tasks.recipes.summarization import SummarizationRecipe


class CountingSummarization(SummarizationRecipe):
    """Summarization that notes every batch it tokenizes in $PREPROCESS_LOG."""

    def preprocess(self, batch, split):
        with open(os.environ["PREPROCESS_LOG"], "a") as handle:
            handle.write(f"{split} {len(next(iter(batch.values())))}\\n")
        return super().preprocess(batch, split)
'''


def _rows(count: int) -> str:
    sample = (REPO / "accel_tasks/samples/summarization/train.jsonl").read_text().splitlines()
    return "".join(line + "\n" for line in sample[:count])


def test_a_second_identical_run_tokenizes_nothing(tmp_path: Path):
    """The same command twice (overwrite_output_dir, so it is the very same line): the second run's features come
    from the datasets cache, its log says so for both splits, and its preprocess hook is never called."""
    (tmp_path / "counting.py").write_text(COUNTING_RECIPE)
    (tmp_path / "train.jsonl").write_text(_rows(300))
    (tmp_path / "validation.jsonl").write_text(_rows(320)[len(_rows(300)) :])
    log = tmp_path / "preprocessed.txt"
    env = {"PREPROCESS_LOG": str(log), "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache")}
    command = [
        "recipe=counting.py:CountingSummarization",
        f"model.name_or_path={REPO / 'accel_tasks/samples/summarization/model'}",
        "data.train_file=train.jsonl",
        "data.validation_file=validation.jsonl",
        "train.max_steps=1",
        "train.batch_size=4",
        "task.max_source_length=64",
        "task.max_target_length=16",
        "generation.max_new_tokens=4",
        "output_dir=run",
        "train.overwrite_output_dir=true",
        "train.report_to=[none]",
    ]
    first = check(run_cli(command, tmp_path, launcher="python", env=env))
    assert "train: 300 examples -> 300 features (preprocessed)" in first.stdout
    assert "validation: 20 examples -> 20 features (preprocessed)" in first.stdout
    tokenized = log.read_text()
    assert sum(int(line.split()[1]) for line in tokenized.splitlines()) == 320
    second = check(run_cli(command, tmp_path, launcher="python", env=env))
    assert "train: 300 examples -> 300 features (loaded from cache)" in second.stdout
    assert "validation: 20 examples -> 20 features (loaded from cache)" in second.stdout
    assert log.read_text() == tokenized, "the second run called preprocess"
    # Another task option is another cache key: tokenized again, and said so.
    third = check(run_cli([*command, "task.max_source_length=32"], tmp_path, launcher="python", env=env))
    assert "train: 300 examples -> 300 features (preprocessed)" in third.stdout
    assert sum(int(line.split()[1]) for line in log.read_text().splitlines()) == 640


def test_the_cache_log_line_is_true_with_several_preprocessing_workers(tmp_path: Path, capsys):
    """With data.preprocessing_num_workers datasets writes one cache file per worker; the line must still say
    'loaded from cache' on the second pass, and the features must be the same."""
    from accel_tasks.config import run_splits
    from accel_tasks.data.raw import check_columns
    from accel_tasks.features.cache import make_features
    from accel_tasks.preflight import resolve_config

    (tmp_path / "train.jsonl").write_text(_rows(200))
    (tmp_path / "validation.jsonl").write_text(_rows(210)[len(_rows(200)) :])
    cfg, recipe_cls = resolve_config(
        [
            "recipe=summarization",
            f"data.train_file={tmp_path / 'train.jsonl'}",
            f"data.validation_file={tmp_path / 'validation.jsonl'}",
            "data.preprocessing_num_workers=2",
        ],
        None,
    )
    recipe = recipe_cls(cfg)
    recipe.load_model()
    raw = recipe.load_data(run_splits(cfg))
    check_columns(
        raw["train"], recipe.required_columns("train", raw["train"].column_names), "train"
    )  # as the loop does
    capsys.readouterr()
    first = make_features(recipe, raw["train"], "train", cfg.data)
    second = make_features(recipe, raw["train"], "train", cfg.data)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[accel_tasks] train:")]
    assert lines == [
        "[accel_tasks] train: 200 examples -> 200 features (preprocessed)",
        "[accel_tasks] train: 200 examples -> 200 features (loaded from cache)",
    ]
    assert first["input_ids"] == second["input_ids"]


def test_bench_rows_are_distinct_and_keep_the_sample_task():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from preprocess_cache import make_rows
    finally:
        sys.path.pop(0)
    rows = make_rows(24000)
    assert len({r["document"] for r in rows}) >= 23990  # distinct texts (one chance collision in 24,000)
    assert all(r["document"].startswith(r["summary"]) for r in rows)
    json.dumps(rows[:3])
