"""model.gradient_checkpointing=true (README, docs/scaling-and-engines.md) through the real CLI: the model trains with
activation checkpointing on, saves fewer activations for the backward, and logs the same losses as without it.

A recipe plugin records, for every training step, what the model passed to the loss says (checkpointing on, training
mode) and how many bytes of tensors the forward saved for the backward: a checkpointed layer keeps only its inputs
and recomputes the rest in the backward, so the bytes drop when it is really on, whatever a flag says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import check, logged_losses, read_json, run_cli

PROBE = '''
import json
import os
from pathlib import Path

import torch
from accelerate.utils import extract_model_from_parallel
from transformers.modeling_layers import GradientCheckpointingLayer

from accel_tasks.recipes import PRESETS_DIR
from accel_tasks.recipes.summarization import SummarizationRecipe


class CheckpointProbe(SummarizationRecipe):
    """The built-in summarization recipe, recording each training forward's checkpointing and saved activations."""

    name = "checkpoint_probe"
    preset_file = PRESETS_DIR / "summarization.yaml"

    def training_loss(self, model, batch):
        saved = []

        def pack(tensor):
            saved.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = super().training_loss(model, batch)
        inner = extract_model_from_parallel(model)
        layers = [m for m in inner.modules() if isinstance(m, GradientCheckpointingLayer)]
        record = {
            "checkpointing": inner.is_activation_checkpointing,  # transformers 5's name for is_gradient_checkpointing
            "layers": len(layers),
            "checkpointed_layers": sum(layer.gradient_checkpointing for layer in layers),
            "training": inner.training,
            "saved_bytes": sum(saved),
        }
        with (Path(os.environ["RECORD_DIR"]) / "steps.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\\n")
        return loss
'''

TIMINGS = ("train_runtime_s", "eval_runtime_s")
ARGS = [
    "data.max_train_samples=32",
    "data.max_eval_samples=4",
    "train.batch_size=8",
    "train.max_steps=4",
    "train.log_every=1",
    "train.eval_at_start=false",
    "generation.max_new_tokens=4",
    "train.report_to=[none]",
]


def probe_run(work: Path, name: str, *extra: str) -> tuple[str, list[dict], dict]:
    """A 4-step run of the probe; its stdout, the record of each training forward and its metrics.json."""
    record = work / f"record-{name}"
    record.mkdir()
    result = check(
        run_cli(
            [f"recipe={work / 'probe.py'}:CheckpointProbe", *ARGS, *extra, f"output_dir={name}"],
            work,
            env={"RECORD_DIR": str(record)},
        )
    )
    steps = [json.loads(line) for line in (record / "steps.jsonl").read_text().splitlines()]
    return result.stdout, steps, read_json(work / name / "metrics.json")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[str, list[dict], dict]]:
    work = tmp_path_factory.mktemp("gradient_checkpointing")
    (work / "probe.py").write_text(PROBE)
    return {
        "plain": probe_run(work, "plain"),
        "checkpointed": probe_run(work, "checkpointed", "model.gradient_checkpointing=true"),
    }


def test_gradient_checkpointing_is_on_in_every_training_step(runs):
    _, plain, _ = runs["plain"]
    _, checkpointed, _ = runs["checkpointed"]
    assert len(plain) == len(checkpointed) == 4
    # Every encoder and decoder layer of the bundled 2+2-layer Marian checkpoints its forward, in training mode.
    for step in checkpointed:
        assert step["checkpointing"] and step["training"] and step["checkpointed_layers"] == step["layers"] == 4, step
    assert not any(step["checkpointing"] or step["checkpointed_layers"] for step in plain), plain
    # What it is for: the forward keeps fewer activations for the backward (the same batches in both runs).
    for without, with_it in zip(plain, checkpointed):
        assert with_it["saved_bytes"] < 0.5 * without["saved_bytes"], (plain, checkpointed)


def test_gradient_checkpointing_logs_the_same_losses(runs):
    plain_out, _, plain_metrics = runs["plain"]
    checkpointed_out, _, checkpointed_metrics = runs["checkpointed"]
    plain, checkpointed = logged_losses(plain_out, 4), logged_losses(checkpointed_out, 4)
    assert sorted(plain) == [1, 2, 3, 4]
    assert checkpointed == plain  # as printed; the recompute is the same arithmetic
    # The mean training loss at full precision, and the final scores, are the same too.
    assert checkpointed_metrics == {**plain_metrics, **{k: checkpointed_metrics[k] for k in TIMINGS}}
