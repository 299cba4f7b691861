"""data.streaming: the train split read as a stream through the real CLI, on 1 and 2 processes.

Which rows each process trained on is recorded by a real recipe plugin (``recipe=probe.py:Class``): the
bundled summarization recipe whose ``preprocess`` keeps each train row's id as a feature and whose
``collate`` appends the ids of every batch it builds to ``$RECORD_DIR/rank<R>.jsonl`` before padding.
Nothing of the loop, accelerate or datasets is replaced: the ids are those of the batches trained on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import ACCELERATE_CONFIGS, REPO, check, logged_losses, one_error_line, read_json, recording_recipe, run_cli

SAMPLE = REPO / "accel_tasks" / "samples" / "summarization" / "train.jsonl"
# Small and fast: the bundled tiny model, short eval, no trackers.
FAST = ["data.max_eval_samples=4", "generation.max_new_tokens=4", "train.report_to=[none]", "train.log_every=1"]


def sample_rows(count: int) -> list[dict]:
    lines = SAMPLE.read_text().splitlines()[:count]
    return [json.loads(line) for line in lines]


def write_rows(path: Path, rows: list[dict]) -> Path:
    """rows as .jsonl, .json (one JSON array), .csv or .parquet."""
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False)
    else:
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


def batches_of(tmp_path: Path, rank: int) -> list[list[str]]:
    path = tmp_path / "record" / f"rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


# -- one line, exit 2, before anything loads -----------------------------------------------------------


@pytest.mark.parametrize(
    "args,expected",
    [
        (["train.max_steps=-1", "train.epochs=1"], "data.streaming=true needs train.max_steps=N"),
        (["train.group_by_length=true"], "train.group_by_length sorts the whole train split"),
        (["data.preprocessing_num_workers=2"], "set data.preprocessing_num_workers=null or data.streaming=false"),
        (["data.dataloader_num_workers=2"], "set data.dataloader_num_workers=0"),
        (["data.shuffle_buffer=-1"], "data.shuffle_buffer=-1 must be 0 (no shuffling) or a number of rows"),
    ],
)
def test_settings_a_stream_cannot_take_are_one_line_before_loading(tmp_path: Path, args: list[str], expected: str):
    result = run_cli(["recipe=summarization", "data.streaming=true", *args, "output_dir=out"], tmp_path)
    assert expected in one_error_line(result)
    assert not (tmp_path / "out").exists()


def test_the_stream_checks_import_no_heavy_library(tmp_path: Path):
    """They are preflight's: no torch, transformers or datasets is imported before the line."""
    from test_startup_and_cache import heavy_imports

    heavy, code, stderr = heavy_imports(["recipe=summarization", "data.streaming=true", "train.max_steps=-1"], tmp_path)
    assert heavy == [] and code == 2 and "data.streaming=true needs train.max_steps=N" in stderr, (heavy, stderr)


WHOLE_SPLIT_PLUGIN = '''
from accel_tasks.recipes import PRESETS_DIR
from accel_tasks.recipes.summarization import SummarizationRecipe


class WholeSplit(SummarizationRecipe):
    """A plugin whose prepare_raw needs the whole split (len) and that has no prepare_stream."""

    name = "whole_split"
    preset_file = PRESETS_DIR / "summarization.yaml"

    def prepare_raw(self, dataset, split):
        return dataset.select(range(len(dataset) // 2))
'''


def test_a_recipe_that_fixes_up_whole_splits_cannot_stream(tmp_path: Path):
    """A plugin with a prepare_raw and no prepare_stream is refused in one line (the built-in recipes all stream)."""
    (tmp_path / "plugin.py").write_text(WHOLE_SPLIT_PLUGIN)
    spec = f"recipe={tmp_path / 'plugin.py'}:WholeSplit"
    result = run_cli([spec, "data.streaming=true", "output_dir=out"], tmp_path)
    line = one_error_line(result)
    assert (
        "cannot stream its train data: its prepare_raw checks or fixes up the whole split and it has no prepare_stream"
        in line
    ), line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_bad_row_far_into_a_stream_is_one_line(tmp_path: Path):
    """The bad line sits past the first 1 MiB read: preflight and the first rows pass, training meets it."""
    rows = [{**row, "padding": "x" * 6000} for row in sample_rows(200)]
    train = write_rows(tmp_path / "train.jsonl", rows)
    with train.open("a") as handle:
        handle.write('{"id": "broken", "document": \n')
    valid = write_rows(tmp_path / "valid.jsonl", sample_rows(4))
    result = run_cli(
        [
            "recipe=summarization",
            "data.streaming=true",
            f"data.train_file={train}",
            f"data.validation_file={valid}",
            "data.shuffle_buffer=0",
            "train.max_steps=5",
            "output_dir=out",
            *FAST,
        ],
        tmp_path,
    )
    line = one_error_line(result, alone=False)
    # Named by its line in the file: the reader's own message counts rows of its block.
    assert "the train stream cannot be read on (pass 1, after 0 batches): data.train_file " in line, line
    assert "train.jsonl' line 201 is not valid JSON (Expecting value at column 29); fix or remove that line" in line


# -- training from a stream -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_stream_trains_and_evaluates(tmp_path: Path):
    """The bundled sample streamed on one process: the loss falls and the final eval scores the export."""
    result = check(
        run_cli(
            [
                "recipe=summarization",
                "data.streaming=true",
                "train.max_steps=30",
                "train.batch_size=8",
                "output_dir=out",
                *FAST,
            ],
            tmp_path,
        )
    )
    assert (
        "train: streamed (1 shard, whole shards to 1 process, shuffle buffer 1000), preprocessed on the fly"
        in result.stdout
    )
    assert "training: streamed features, 30 steps" in result.stdout
    loss = {step: float(value) for step, value in logged_losses(result.stdout, 30).items()}
    assert len(loss) == 30 and loss[30] < loss[1] - 1.0, loss
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["train_steps"] == 30 and metrics["eval_samples"] == 4 and "rougeL" in metrics


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_every_file_format_streams_each_row_once_per_pass(tmp_path: Path, suffix: str):
    """24 rows, batches of 4, 9 steps: pass 1 is every row once in a shuffled order, pass 2 a new order."""
    rows = sample_rows(24)
    train = write_rows(tmp_path / f"train{suffix}", rows)
    valid = write_rows(tmp_path / f"valid{suffix}", sample_rows(4))
    spec, env = recording_recipe(tmp_path)
    check(
        run_cli(
            [
                spec,
                "data.streaming=true",
                f"data.train_file={train}",
                f"data.validation_file={valid}",
                "data.shuffle_buffer=8",
                "train.max_steps=9",
                "train.batch_size=4",
                "output_dir=out",
                *FAST,
            ],
            tmp_path,
            env=env,
        )
    )
    seen = [row for batch in batches_of(tmp_path, 0) for row in batch]
    ids = [row["id"] for row in rows]
    assert len(seen) == 36
    first, second = seen[:24], seen[24:]
    assert sorted(first) == sorted(ids) and first != ids  # every row once, not in file order
    assert len(set(second)) == 12 and second != first[:12]  # the next pass: distinct rows, reshuffled


@pytest.mark.slow
def test_two_processes_read_disjoint_rows_of_one_file(tmp_path: Path):
    """One jsonl file is one shard: each process keeps every other row of the one shuffled stream."""
    rows = sample_rows(40)
    train = write_rows(tmp_path / "train.jsonl", rows)
    spec, env = recording_recipe(tmp_path)
    result = check(
        run_cli(
            [
                spec,
                "data.streaming=true",
                f"data.train_file={train}",
                "data.validation_file=" + str(write_rows(tmp_path / "v.jsonl", sample_rows(4))),
                "data.shuffle_buffer=16",
                "train.max_steps=5",
                "train.batch_size=4",
                "output_dir=out",
                *FAST,
            ],
            tmp_path,
            num_processes=2,
            env=env,
        )
    )
    assert "1 shard, every row in turn to 2 processes" in result.stdout
    ranks = [[row for batch in batches_of(tmp_path, rank) for row in batch] for rank in (0, 1)]
    assert [len(r) for r in ranks] == [20, 20]
    assert not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == sorted(row["id"] for row in rows)  # every row exactly once


@pytest.mark.slow
def test_two_processes_read_whole_shards_of_a_dataset_directory(tmp_path: Path):
    """data.name=<local dataset dir> (a hub data set's layout: two parquet train shards): one shard per process."""
    rows = sample_rows(32)
    shards = [rows[:16], rows[16:]]
    for index, shard in enumerate(shards):
        write_rows(tmp_path / "dataset" / "data" / f"train-0000{index}-of-00002.parquet", shard)
    write_rows(tmp_path / "dataset" / "data" / "validation-00000-of-00001.parquet", sample_rows(4))
    spec, env = recording_recipe(tmp_path)
    result = check(
        run_cli(
            [
                spec,
                "data.streaming=true",
                f"data.name={tmp_path / 'dataset'}",
                "train.max_steps=4",
                "train.batch_size=4",
                "output_dir=out",
                *FAST,
            ],
            tmp_path,
            num_processes=2,
            env=env,
        )
    )
    assert "2 shards, whole shards to 2 processes" in result.stdout
    ranks = [[row for batch in batches_of(tmp_path, rank) for row in batch] for rank in (0, 1)]
    shard_ids = [{row["id"] for row in shard} for shard in shards]
    assert sorted(ranks[0] + ranks[1]) == sorted(row["id"] for row in rows)  # every row exactly once
    assert {frozenset(ranks[0]), frozenset(ranks[1])} == {frozenset(s) for s in shard_ids}


# -- exact resume mid-stream ----------------------------------------------------------------------------


def zero3_config(tmp_path: Path) -> Path:
    """The shipped ZeRO-3 launcher config on 2 CPU processes in fp32."""
    import yaml

    config = yaml.safe_load((ACCELERATE_CONFIGS / "deepspeed_zero3.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no")
    path = tmp_path / "zero3.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("processes,launcher,accumulation", [(1, None, 1), (2, None, 1), (2, "zero3", 2)])
def test_a_resumed_stream_ends_with_the_uninterrupted_weights(
    tmp_path: Path, processes: int, launcher: str, accumulation: int
):
    """4 steps straight vs 2 steps + resume to 4, bit for bit. 12 rows in batches of 4 with a buffer of 8: the
    resumed half crosses into the next (reshuffled) pass; on 2 processes batches straddle passes. Also under
    DeepSpeed ZeRO-3 with 2 micro-batches per step (the stream position counts micro-batches)."""
    from safetensors.torch import load_file

    config_file = zero3_config(tmp_path) if launcher == "zero3" else None
    args = [
        "recipe=summarization",
        "data.streaming=true",
        "data.max_train_samples=12",
        "data.shuffle_buffer=8",
        "train.batch_size=4",
        "train.max_steps=4",
        "train.save_every=2",
        f"train.grad_accum={accumulation}",
        *FAST,
    ]
    whole = check(run_cli([*args, "output_dir=a"], tmp_path, num_processes=processes, config_file=config_file))
    state = read_json(tmp_path / "a" / "checkpoints" / "step_2" / "stream_state.json")
    assert state["features_per_process"] == 2 * accumulation * 4 and state["layout"]["processes"] == processes
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_2", tmp_path / "b" / "checkpoints" / "step_2")
    resumed = check(
        run_cli(
            [*args, "output_dir=b", "train.resume_from=latest"],
            tmp_path,
            num_processes=processes,
            config_file=config_file,
        )
    )
    assert "resumed from b/checkpoints/step_2 at step 2" in resumed.stdout
    assert {s: v for s, v in logged_losses(whole.stdout, 4).items() if s > 2} == logged_losses(resumed.stdout, 4)
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    if launcher is not None:
        return

    # The same checkpoint with another stream layout, or as map-style data: one line, before anything loads.
    other = run_cli([*args, "data.shuffle_buffer=4", "output_dir=b", "train.resume_from=latest"], tmp_path)
    line = one_error_line(other)
    assert "streamed with other settings (" in line and "shuffle_buffer 8 -> 4" in line
    plain = run_cli([*args, "data.streaming=false", "output_dir=b", "train.resume_from=latest"], tmp_path)
    assert "was trained on a stream; resume it with data.streaming=true" in one_error_line(plain)
