"""A resume with another train.batch_size continues at the same example of the epoch (one notice), not at the same
batch count: the recording plugin (tests/helpers.py) logs the train rows of every batch, and the rows the resumed run
sees follow, in order, the ones the first run consumed, as an uninterrupted run with the new batch size sees them."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import check, recording_recipe, run_cli

ARGS = ["data.max_train_samples=40", "data.max_eval_samples=2", "generation.max_new_tokens=4", "train.save_every=2"]


def rows(record: Path) -> list[str]:
    path = record / "rank0.jsonl"
    return [row for line in path.read_text().splitlines() for row in json.loads(line)]


def test_a_resume_with_another_batch_size_continues_at_the_same_example(tmp_path: Path):
    for name in ("full", "first", "resumed"):
        (tmp_path / "records" / name).mkdir(parents=True)
    recipe, env = recording_recipe(tmp_path / "records" / "full")
    check(run_cli([recipe, *ARGS, "train.batch_size=2", "train.max_steps=6", "output_dir=full"], tmp_path, env=env))
    full = rows(Path(env["RECORD_DIR"]))

    recipe, env = recording_recipe(tmp_path / "records" / "first")
    check(run_cli([recipe, *ARGS, "train.batch_size=4", "train.max_steps=2", "output_dir=run"], tmp_path, env=env))
    first = rows(Path(env["RECORD_DIR"]))
    # The loader reads one batch ahead (accelerate's prefetch): the rows trained on are the first ones recorded.
    assert first[:8] == full[:8]  # the same shuffled order: 2 batches of 4

    recipe, env = recording_recipe(tmp_path / "records" / "resumed")
    resume = [recipe, *ARGS, "train.batch_size=2", "train.max_steps=4", "output_dir=run", "train.resume_from=latest"]
    result = check(run_cli(resume, tmp_path, env=env))
    assert (
        "resuming with train.batch_size=2 where the checkpoint used 4: the 2 batches consumed in this epoch are "
        "4 batches now" in result.stderr
    )
    assert rows(Path(env["RECORD_DIR"]))[:4] == full[8:12]  # steps 3-4: the next 4 examples, none skipped or seen again
