"""data.preprocessing_num_workers: N worker processes really tokenize map-style data, and the features are the
ones a single process makes.

Through the CLI: a plugin recipe (the built-in summarization recipe, its ``preprocess`` also writing the PID of
the process that runs it) trains 1 step with 2 workers; the PIDs show who did the work, datasets' cache shard
files (``cache-FP_00000_of_00002.arrow`` and ``_00001_of_00002``) show how it was split, and their rows equal
the one cache file of a 1-worker run. In process, every built-in recipe's features with 2 workers equal its
features with 1 (the recipe, its options and its processor must pickle for that).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import check, run_cli

PLUGIN = """
import os
from accel_tasks.recipes.summarization import SummarizationRecipe


class PidSummarization(SummarizationRecipe):
    name = "pid_summarization"

    def preprocess(self, batch, split):
        with open(os.environ["PID_LOG"], "a") as log:
            log.write(f"{os.getpid()} {split} {len(batch['document'])}\\n")
        return super().preprocess(batch, split)
"""


def run_with_workers(tmp_path: Path, workers: int) -> tuple[list[tuple[int, str, int]], Path, str]:
    """One CLI run (1 optimizer step) in its own datasets cache; (PID log rows, cache dir, stdout)."""
    plugin = tmp_path / "pid_recipe.py"
    plugin.write_text(PLUGIN)
    cache, log = tmp_path / f"cache_{workers}", tmp_path / f"pids_{workers}.txt"
    args = [
        f"recipe={plugin}:PidSummarization",
        "data.max_train_samples=96",
        "data.max_eval_samples=8",
        "train.max_steps=1",
        "train.eval_at_start=false",
        "generation.max_new_tokens=2",
        f"output_dir={tmp_path / f'out_{workers}'}",
    ]
    if workers > 1:
        args.append(f"data.preprocessing_num_workers={workers}")
    result = check(
        run_cli(
            args,
            tmp_path,
            env={"HF_DATASETS_CACHE": str(cache), "PID_LOG": str(log), "ACCEL_TASKS_NUM_THREADS": "1"},
        )
    )
    rows = [(int(pid), split, int(n)) for pid, split, n in (line.split() for line in log.read_text().splitlines())]
    return rows, cache, result.stdout


def feature_rows(files: list[Path]) -> list[dict]:
    import datasets

    return [row for path in files for row in datasets.Dataset.from_file(str(path))]


@pytest.mark.slow
def test_two_workers_tokenize_the_training_data_and_match_one_process(tmp_path: Path):
    two, cache_two, stdout = run_with_workers(tmp_path, 2)
    one, cache_one, _ = run_with_workers(tmp_path, 1)
    train_pids = {pid for pid, split, _ in two if split == "train"}
    assert len(train_pids) == 2, two
    assert os.getpid() not in train_pids
    assert sum(n for _, split, n in two if split == "train") == 96, "each row tokenized once, split between the workers"
    assert len({pid for pid, split, _ in one if split == "train"}) == 1
    assert "train: 96 examples -> 96 features (preprocessed)" in stdout
    shards = sorted(cache_two.rglob("cache-*_0000?_of_00002.arrow"))
    # train and validation, 2 shards each; each train shard has half of the rows
    stems = {path.name.split("_0000")[0] for path in shards}
    assert len(shards) == 4 and len(stems) == 2, shards
    single = [p for p in cache_one.rglob("cache-*.arrow") if "_of_" not in p.name]
    for stem in stems:
        mine = sorted(p for p in shards if p.name.startswith(stem))
        (theirs,) = [p for p in single if p.name == f"{stem}.arrow"]
        assert feature_rows(mine) == feature_rows([theirs])
        if len(feature_rows([theirs])) == 96:
            assert [len(feature_rows([p])) for p in mine] == [48, 48]


@pytest.mark.parametrize("recipe", ["summarization", "translation", "extractive_qa", "speech_recognition"])
def test_every_recipe_makes_the_same_features_with_two_workers(tmp_path: Path, monkeypatch, recipe):
    from accel_tasks.data.raw import check_columns
    from accel_tasks.features.cache import make_features
    from accel_tasks.preflight import resolve_config

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg, recipe_cls = resolve_config(
        [f"recipe={recipe}", "data.max_train_samples=24", "data.preprocessing_num_workers=2"], None
    )
    instance = recipe_cls(cfg)
    try:
        instance.load_model()
    except ImportError as exc:  # the QA default model is an optional package
        pytest.skip(f"{recipe}'s bundled model is not installed: {exc}")
    raw = instance.load_data(("train",))["train"]
    check_columns(raw, instance.required_columns("train", raw.column_names), "train")
    raw = instance.prepare_raw(raw, "train")
    two = make_features(instance, raw, "train", cfg.data)
    cfg.data.preprocessing_num_workers = None
    cfg.data.overwrite_cache = True
    one = make_features(instance, raw, "train", cfg.data)
    assert len(two) == len(one) >= 24
    assert two.to_dict() == one.to_dict()
    assert len(two.cache_files) == 2, "two workers wrote two shards"
