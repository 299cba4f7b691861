"""train.packing through the CLI: the packing line, a run that trains and scores, and exact resume on 1 and 2
processes (packed rows are made the same way again, so the resumed run sees the batches the whole run saw)."""

from __future__ import annotations

import re
import shutil

import pytest
from llm_fixtures import save_tiny_causal_lm

from helpers import check, one_error_line, run_cli

ARGS = [
    "recipe=summarization",
    "data.max_train_samples=64",
    "data.max_eval_samples=4",
    "train.batch_size=2",
    "train.packing=true",
    "train.packing_length=256",
    "train.max_steps=8",
    "train.save_every=4",
    "train.log_every=1",
    "task.max_source_length=32",
    "generation.max_new_tokens=6",
    "generation.num_beams=1",
    "train.report_to=[none]",
]


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("packing") / "qwen2", "qwen2")


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_resumed_packed_run_ends_with_the_uninterrupted_weights(tmp_path, qwen2, processes):
    from safetensors.torch import load_file

    args = [*ARGS, f"model.name_or_path={qwen2}"]
    whole = check(run_cli([*args, "output_dir=a"], tmp_path, num_processes=processes))
    line = re.search(
        r"packing: 64 training examples into (\d+) rows of 256 tokens, efficiency (\d+\.\d)%", whole.stdout
    )
    assert line and int(line.group(1)) <= 32 and float(line.group(2)) > 70, whole.stdout
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_4", tmp_path / "b" / "checkpoints" / "step_4")
    resumed = check(run_cli([*args, "output_dir=b", "train.resume_from=latest"], tmp_path, num_processes=processes))
    losses = [re.findall(r"step ([5-8])/8 loss (\S+)", run.stdout) for run in (whole, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in "ab")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_packing_is_refused_in_one_line_where_it_cannot_work(tmp_path, qwen2):
    cases = [
        (["recipe=summarization", "train.packing=true"], "train.packing needs a decoder-only model"),
        (
            [*ARGS, f"model.name_or_path={qwen2}", "train.group_by_length=true"],
            "train.packing and train.group_by_length",
        ),
        ([*ARGS, f"model.name_or_path={qwen2}", "train.packing_length=20"], "is shorter than"),
        ([*ARGS, f"model.name_or_path={qwen2}", "train.packing_length=4096"], "more than the model's 256 positions"),
    ]
    for args, message in cases:
        result = run_cli([*args, "output_dir=x"], tmp_path)
        assert result.returncode == 2 and message in one_error_line(result), (args, result.stderr[-800:])
        assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_packed_rows_and_logits_at_labels_under_zero3_follow_the_ddp_losses(tmp_path, qwen2):
    """The block-diagonal mask and the output layer at labelled positions only, under ZeRO-3 sharding (2 processes):
    the same per-step losses and learning rates as plain DDP on the same packed rows."""
    import yaml

    from helpers import ACCELERATE_CONFIGS, scalars

    config = yaml.safe_load((ACCELERATE_CONFIGS / "deepspeed_zero3.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no")
    (tmp_path / "zero3.yaml").write_text(yaml.safe_dump(config))
    args = [*ARGS, f"model.name_or_path={qwen2}", "train.report_to=[tensorboard]", "train.save_every=0"]
    for name, launcher_config in (("ddp", ACCELERATE_CONFIGS / "cpu_2proc.yaml"), ("zero3", tmp_path / "zero3.yaml")):
        check(run_cli([*args, f"output_dir={name}"], tmp_path, config_file=launcher_config))
    ddp, zero3 = (scalars(tmp_path / name, "train/loss") for name in ("ddp", "zero3"))
    assert sorted(ddp) == sorted(zero3) == list(range(1, 9))
    assert all(abs(ddp[step] - zero3[step]) <= 1e-4 * abs(ddp[step]) for step in ddp), (ddp, zero3)
