"""metrics.json after ``train.resume_from`` describes the whole run: steps, mean train loss and tokens as the
uninterrupted run reports them, the runtime as the sum of both parts'; a checkpoint written before checkpoints carried
these totals still resumes, its figures then covering the resumed part, and one line says so.

A run stopped at a checkpoint is the uninterrupted run's checkpoint copied into a fresh output_dir (what the stopped
run would have left: the checkpoint is the same), as tests/e2e/test_summarization_e2e.py does.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from accel_tasks.manifest import write_manifest

from helpers import check, logged_losses, read_json, run_cli

ARGS = [
    "recipe=summarization",
    "data.max_train_samples=16",
    "data.max_eval_samples=2",
    "task.max_source_length=32",
    "generation.max_new_tokens=2",
    "generation.num_beams=1",
    "train.eval_at_start=false",
    "train.batch_size=2",
    "train.grad_accum=2",
    "train.max_steps=4",
    "train.save_every=2",
    "train.log_every=1",
]
NOTICE = "predates the run totals in checkpoints"


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The uninterrupted run (checkpoints at steps 2 and 4), in a folder the tests resume beside."""
    root = tmp_path_factory.mktemp("resumed_metrics")
    result = check(run_cli([*ARGS, "output_dir=whole"], root, env={"HF_DATASETS_CACHE": str(root / "cache")}))
    (root / "whole.log").write_text(result.stdout)
    return root


def totals(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "loop_state.json").read_text())["totals"]


def resume(root: Path, name: str, strip_totals: bool = False):
    """A run resumed from the uninterrupted run's step_2, in output_dir ``name`` (its totals removed and the manifest
    rewritten, as a checkpoint of an older version of the package was written)."""
    checkpoint = root / name / "checkpoints" / "step_2"
    shutil.copytree(root / "whole" / "checkpoints" / "step_2", checkpoint)
    if strip_totals:
        state = json.loads((checkpoint / "loop_state.json").read_text())
        del state["totals"]
        (checkpoint / "loop_state.json").write_text(json.dumps(state))
        write_manifest(checkpoint, kind="checkpoint", step=2)
    args = [*ARGS, f"output_dir={name}", "train.resume_from=latest"]
    return check(run_cli(args, root, env={"HF_DATASETS_CACHE": str(root / "cache")}))


def test_a_resumed_run_reports_the_whole_run(whole: Path):
    resumed = resume(whole, "resumed")
    first = (whole / "whole.log").read_text()
    assert {s: loss for s, loss in logged_losses(first, 4).items() if s > 2} == logged_losses(resumed.stdout, 4)
    assert NOTICE not in resumed.stdout
    expected, got = read_json(whole / "whole" / "metrics.json"), read_json(whole / "resumed" / "metrics.json")
    assert got["train_steps"] == expected["train_steps"] == 4
    assert got["train_tokens"] == expected["train_tokens"] > 0
    assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-6)
    # The runtime: the steps up to the checkpoint (as the checkpoint carries them) plus the resumed part's.
    part = re.search(
        r"trained 2 steps in (\S+) s \(4 steps in (\S+) s with the run\(s\) before the resume\)", resumed.stdout
    )
    assert part, resumed.stdout
    before = totals(whole / "whole" / "checkpoints" / "step_2")["runtime_s"]
    assert got["train_runtime_s"] == pytest.approx(before + float(part.group(1)), abs=0.06)
    assert float(part.group(2)) == pytest.approx(got["train_runtime_s"], abs=0.06)


def test_an_older_checkpoint_resumes_and_reports_the_resumed_part(whole: Path):
    resumed = resume(whole, "older", strip_totals=True)
    assert [line for line in resumed.stdout.splitlines() if NOTICE in line] == [
        f"[accel_tasks] older/checkpoints/step_2 {NOTICE}: metrics.json's train_steps, train_loss, train_tokens and "
        "train_runtime_s count the steps after step 2 only"
    ]
    at_2, at_4 = (totals(whole / "whole" / "checkpoints" / f"step_{step}") for step in (2, 4))
    got = read_json(whole / "older" / "metrics.json")
    assert got["train_steps"] == 2
    assert got["train_tokens"] == at_4["tokens"] - at_2["tokens"]
    steps_3_and_4 = (at_4["loss_sum"] - at_2["loss_sum"]) / (at_4["loss_count"] - at_2["loss_count"])
    assert got["train_loss"] == pytest.approx(steps_3_and_4, rel=1e-6)
    # Its own checkpoint starts the totals at step 2, so a later resume keeps counting from there.
    assert totals(whole / "older" / "checkpoints" / "step_4")["from_step"] == 2
