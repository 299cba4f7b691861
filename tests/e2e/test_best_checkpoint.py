"""Best checkpoint and early stopping through the CLI (issue 14, point 1), and label smoothing (point 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import check, one_error_line, read_json, read_jsonl, run_cli

# A short run a user could type; a huge threshold means no evaluation after the first one counts as better,
# so when the run stops and which checkpoint is best do not depend on how well the tiny model learns.
SHORT = [
    "recipe=summarization",
    "data.max_train_samples=64",
    "data.max_eval_samples=4",
    "generation.max_new_tokens=4",
    "train.batch_size=8",
    "train.eval_every=5",
]


def test_early_stopping_after_patience_evaluations(tmp_path: Path):
    result = check(
        run_cli(
            [
                *SHORT,
                "train.max_steps=40",
                "train.early_stopping_patience=2",
                "train.early_stopping_threshold=1000",
                "train.save_every=5",
                "output_dir=run",
            ],
            tmp_path,
        )
    )
    assert "early stopping at step 15: rougeL has not improved for 2 evaluations (best" in result.stdout
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert (metrics["train_steps"], metrics["stopped_early_at_step"], metrics["best_step"]) == (15, 15, 5)
    assert metrics["best_rougeL"] == read_jsonl(tmp_path / "run" / "eval_history.jsonl")[0]["rougeL"]
    # The patience count and the best so far are part of the checkpointed loop position (a resume keeps them).
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_15" / "loop_state.json").read_text())
    assert (state["best_step"], state["evals_without_improvement"]) == (5, 2)


def test_export_best_exports_the_best_checkpoint_and_retention_keeps_it(tmp_path: Path):
    check(
        run_cli(
            [
                *SHORT,
                "train.max_steps=20",
                "train.export_best=true",
                "train.early_stopping_threshold=1000",
                "train.save_every=5",
                "train.save_total_limit=1",
                "output_dir=run",
            ],
            tmp_path,
        )
    )
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_20", "step_5"], (
        "the best (step 5) is never deleted"
    )
    metrics = read_json(out / "metrics.json")
    assert (metrics["best_step"], metrics["exported_step"]) == (5, 5)
    from safetensors.torch import load_file

    exported = load_file(out / "model" / "model.safetensors")
    best = load_file(out / "checkpoints" / "step_5" / "model.safetensors")
    last = load_file(out / "checkpoints" / "step_20" / "model.safetensors")
    shared = [k for k in exported if k in best]
    assert shared and all(torch.equal(exported[k], best[k]) for k in shared)
    assert not all(torch.equal(exported[k], last[k]) for k in shared if k in last)
    # metrics.json describes the exported model: eval-only on it reproduces them.
    check(
        run_cli(
            ["recipe=summarization", "mode=eval", "model.name_or_path=run/model", "output_dir=eval"],
            tmp_path,
        )
    )
    evaluated = read_json(tmp_path / "eval" / "metrics.json")
    assert evaluated["rougeL"] == metrics["rougeL"] and evaluated["rouge1"] == metrics["rouge1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train.early_stopping_patience=2"],
            "train.early_stopping_patience needs periodic evaluations to compare: set train.eval_every=N",
        ),
        (
            ["train.eval_every=5", "eval.best_metric=rouge"],
            "eval.best_metric='rouge' is not a metric of this run; it computes: rouge1, rouge2, rougeL, rougeLsum",
        ),
        (["train.label_smoothing=1.5"], "train.label_smoothing=1.5 must be in [0, 1)"),
        (["recipe=extractive_qa", "train.label_smoothing=0.1"], "train.label_smoothing applies to generative recipes"),
        (["metric_for_best_model=wer"], "did you mean 'eval.best_metric'?"),
    ],
)
def test_bad_best_and_smoothing_settings_are_one_line(tmp_path: Path, args, message):
    assert message in one_error_line(run_cli(["recipe=summarization", *args, "output_dir=out"], tmp_path))


def test_direction_is_known_per_metric():
    from accel_tasks.evaluation.best import greater_is_better
    from accel_tasks.preflight import resolve_config

    cfg, _ = resolve_config(["recipe=summarization"], None)
    assert greater_is_better(cfg, "rougeL") and greater_is_better(cfg, "sacrebleu") and greater_is_better(cfg, "f1")
    assert (
        not greater_is_better(cfg, "wer")
        and not greater_is_better(cfg, "cer")
        and not greater_is_better(cfg, "eval_loss")
    )
    cfg, _ = resolve_config(["recipe=summarization", "eval.greater_is_better=false"], None)
    assert not greater_is_better(cfg, "rougeL")


def test_label_smoothing_is_smoothed_cross_entropy_over_the_model_logits():
    """Hand check: with smoothing eps, the loss is (1 - eps) * NLL(target) + eps * mean(NLL over the vocabulary)."""
    from types import SimpleNamespace

    from accel_tasks.recipe import PAD_INT, smoothed_loss

    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])
    labels = torch.tensor([[0, PAD_INT]])  # the second position is padding and must not count

    def model(**batch):
        return SimpleNamespace(loss=torch.tensor(123.0), logits=logits)

    log_probs = torch.log_softmax(logits[0, 0], dim=-1)
    expected = 0.9 * -log_probs[0] + 0.1 * -log_probs.mean()
    assert torch.allclose(smoothed_loss(model, {"labels": labels}, 0.1), expected)
    assert smoothed_loss(model, {"labels": labels}, 0.0) == 123.0, "without smoothing the model's own loss is used"
