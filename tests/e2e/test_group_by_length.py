"""train.group_by_length: Trainer's length-grouped order, less padding, and exact resume on 1 and 2 processes."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
import torch

from accel_tasks.data.sampling import LengthGroupedSampler, length_grouped_indices, padding_fraction

from helpers import check, run_cli


@pytest.mark.parametrize("count,batch_size,seed", [(1000, 8, 0), (37, 4, 3), (5, 16, 7), (500, 1, 11)])
def test_the_order_is_transformers_length_grouped_order(count, batch_size, seed):
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = [random.Random(seed * 1000 + i).randint(1, 300) for i in range(count)]
    ours = length_grouped_indices(lengths, batch_size, seed)
    theirs = get_length_grouped_indices(lengths, batch_size, generator=torch.Generator().manual_seed(seed))
    assert ours == theirs
    assert sorted(ours) == list(range(count))  # a permutation: every row once per epoch


def test_epochs_differ_and_the_same_epoch_repeats():
    sampler = LengthGroupedSampler([random.Random(i).randint(1, 50) for i in range(200)], batch_size=8, seed=42)
    first = list(sampler)
    assert list(sampler) == first  # a resumed run replays the epoch it stopped in
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == sorted(first)


def test_grouping_cuts_the_padding_of_dynamic_batches():
    lengths = [random.Random(i).randint(5, 400) for i in range(2000)]
    shuffled = list(range(len(lengths)))
    random.Random(0).shuffle(shuffled)
    grouped = length_grouped_indices(lengths, 16, seed=0)

    def batches(order):
        return [order[i : i + 16] for i in range(0, len(order), 16)]

    plain, with_groups = padding_fraction(lengths, batches(shuffled)), padding_fraction(lengths, batches(grouped))
    assert plain > 0.3 and with_groups < 0.05, (plain, with_groups)


def _losses(text: str, total: int) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(rf"step (\d+)/{total} loss (\S+)", text)}


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_resumed_length_grouped_run_ends_with_the_uninterrupted_weights(tmp_path: Path, processes: int):
    """4 steps straight vs 2 steps + resume to 4, with a second epoch inside (so set_epoch must reach the sampler)."""
    from safetensors.torch import load_file

    args = [
        "recipe=summarization",
        "data.max_train_samples=48",
        "data.max_eval_samples=4",
        "train.batch_size=8",
        "train.group_by_length=true",
        "train.max_steps=8",
        "train.save_every=4",
        "train.log_every=1",
        "generation.max_new_tokens=4",
        "train.report_to=[none]",
    ]
    whole = check(run_cli([*args, "output_dir=a"], tmp_path, num_processes=processes))
    assert "length-grouped batches" in whole.stdout
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_4", tmp_path / "b" / "checkpoints" / "step_4")
    resumed = check(run_cli([*args, "output_dir=b", "train.resume_from=latest"], tmp_path, num_processes=processes))
    assert "resumed from b/checkpoints/step_4 at step 4" in resumed.stdout
    assert {s: v for s, v in _losses(whole.stdout, 8).items() if s > 4} == _losses(resumed.stdout, 8)
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
