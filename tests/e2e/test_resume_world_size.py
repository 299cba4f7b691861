"""Resume on another number of processes (accel_tasks/reshard.py), run for real on CPU.

A tiny BART (tests/ds_fixtures.py, fp32, no dropout) trains 4 steps with checkpoints at 2 and 4, batch 2
per process, warmup 1 then linear decay. Each checkpoint at step 2 is then resumed on the other number
of processes, twice:

    zero2 / zero3   written by 2 DeepSpeed processes, resumed on 1 (universal checkpoint conversion)
    ddp             written by 1 plain process, resumed on 2 (cpu_2proc.yaml)

- ``stop at 2`` (train.max_steps=2, the checkpoint's step): nothing is trained, so the export holds the
  weights right after loading; they must equal the checkpoint's own (DeepSpeed: reassembled by
  zero_to_fp32; plain: its model.safetensors).
- ``continue to 4``: steps 3 and 4 run at the learning rates of the original run (the schedule is
  rescaled to the new world size), and the loss continues from the checkpoint's weights, not from scratch.

The combinations that cannot work are one line each, exit 2, before anything loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ds_fixtures import build_world
from helpers import ACCELERATE_CONFIGS, check, one_error_line, read_json, run_cli, scalars

STEPS = 4
COMMON = [
    "train.batch_size=2",
    "train.grad_accum=1",
    "train.log_every=1",
    "train.lr=2e-2",
    "train.warmup_steps=1",
    "train.save_every=2",
    "eval.batch_size=4",
    "task.max_target_length=16",
]
# Linear warmup over 1 step to 2e-2, then linear decay to 0 at step 4 (high: 4 steps must move the loss).
EXPECTED_LR = {1: 2e-2, 2: 2e-2 * 2 / 3, 3: 2e-2 / 3, 4: 0.0}


def launcher_config(source: str, target: Path, **changes) -> Path:
    config = yaml.safe_load((ACCELERATE_CONFIGS / source).read_text())
    config.update(changes)
    target.write_text(yaml.safe_dump(config))
    return target


class Runs:
    """Each named run is started on first use and shared by the tests that need it."""

    # name -> (launcher written by, launcher resumed on)
    PAIRS = {"zero2": ("zero2_2", "zero2_1"), "zero3": ("zero3_2", "zero3_1"), "ddp": ("plain_1", "plain_2")}

    def __init__(self, root: Path) -> None:
        self.root = root
        self.world = build_world(root / "world")
        self.base = [
            f"recipe={self.world['recipe']}:ForcedLengthSummarization",
            f"model.name_or_path={self.world['model']}",
            f"data.train_file={self.world['train']}",
            f"data.validation_file={self.world['validation']}",
        ]
        fp32 = {"mixed_precision": "no"}
        self.configs = {
            "zero2_2": launcher_config("deepspeed_zero2.yaml", root / "zero2_2.yaml", num_processes=2, **fp32),
            "zero2_1": launcher_config("deepspeed_zero2.yaml", root / "zero2_1.yaml", num_processes=1, **fp32),
            "zero3_2": launcher_config("deepspeed_zero3.yaml", root / "zero3_2.yaml", num_processes=2, **fp32),
            "zero3_1": launcher_config("deepspeed_zero3.yaml", root / "zero3_1.yaml", num_processes=1, **fp32),
            "plain_1": launcher_config("cpu.yaml", root / "plain_1.yaml"),
            "plain_2": launcher_config("cpu_2proc.yaml", root / "plain_2.yaml"),
        }
        self.done: dict[str, tuple[Path, str]] = {}

    def written(self, name: str) -> Path:
        """The output_dir of the 4-step run that wrote the checkpoints."""
        key = f"{name}/written"
        if key not in self.done:
            out = self.root / name / "written"
            result = self.launch(self.PAIRS[name][0], [*COMMON, f"train.max_steps={STEPS}"], out)
            self.done[key] = (out, result.stdout)
        return self.done[key][0]

    def resumed(self, name: str, max_steps: int) -> tuple[Path, str]:
        key = f"{name}/resumed{max_steps}"
        if key not in self.done:
            checkpoint = self.written(name) / "checkpoints" / "step_2"
            out = self.root / name / f"resumed{max_steps}"
            args = [*COMMON, f"train.max_steps={max_steps}", f"train.resume_from={checkpoint}"]
            result = self.launch(self.PAIRS[name][1], args, out)
            self.done[key] = (out, result.stdout)
        return self.done[key]

    def launch(self, config: str, args: list[str], out: Path):
        return check(run_cli([*self.base, *args, f"output_dir={out}"], self.root, config_file=self.configs[config]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("resume_world_size"))


def checkpoint_weights(checkpoint: Path) -> dict:
    """The weights a checkpoint holds: DeepSpeed's fp32 reassembly, or accelerate's model.safetensors."""
    from safetensors.torch import load_file

    from accel_tasks.models.loading import load_deepspeed_checkpoint_weights

    if (checkpoint / "pytorch_model").is_dir():
        return load_deepspeed_checkpoint_weights(checkpoint)
    return load_file(checkpoint / "model.safetensors")


# ------------------------------------------------------------------ through the CLI


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zero2", "zero3", "ddp"])
def test_weights_right_after_loading_on_another_process_count_are_the_checkpoints(runs, name):
    import torch
    from safetensors.torch import load_file

    out, log = runs.resumed(name, max_steps=2)
    written, now = (2, 1) if name != "ddp" else (1, 2)
    kind = {"zero2": "DeepSpeed ZeRO-1/2", "zero3": "DeepSpeed ZeRO-3", "ddp": "plain (no DeepSpeed)"}[name]
    assert f"resuming a {kind} checkpoint written by {written} process" in log
    assert f"on {now} process{'es' if now > 1 else ''} at step 2" in log
    assert f"processes={now} " in log
    saved = checkpoint_weights(runs.written(name) / "checkpoints" / "step_2")
    exported = load_file(out / "model" / "model.safetensors")
    initial = load_file(Path(runs.world["model"]) / "model.safetensors")
    compared = 0
    for key, tensor in exported.items():
        if key in saved:
            assert torch.equal(tensor, saved[key].to(tensor.dtype)), key
            compared += 1
    assert compared == len(exported) > 5
    # ... and they are trained weights, not the initial ones.
    assert not torch.equal(exported["model.encoder.layers.0.fc1.weight"], initial["model.encoder.layers.0.fc1.weight"])
    assert read_json(out / "metrics.json")["eval_samples"] == 11
    # The universal conversion is a temporary: nothing of it is left in the output_dir.
    assert not list(out.rglob("*.universal"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zero2", "zero3", "ddp"])
def test_training_continues_on_another_process_count_at_the_same_step_and_schedule(runs, name):
    out, log = runs.resumed(name, max_steps=STEPS)
    original = runs.written(name)
    assert "at step 2" in log
    lr = scalars(out, "train/lr")
    assert sorted(lr) == [3, 4]  # the optimizer step continues: 3, 4 (not 1, 2)
    assert lr == pytest.approx({3: EXPECTED_LR[3], 4: EXPECTED_LR[4]}, abs=1e-9)
    assert scalars(original, "train/lr") == pytest.approx(EXPECTED_LR, abs=1e-9)
    loss, original_loss = scalars(out, "train/loss"), scalars(original, "train/loss")
    # Same weights, and the next examples of the same shuffled order (half or twice the global batch):
    # the loss goes on from where the checkpoint was, well below the untrained loss of step 1.
    assert loss[3] == pytest.approx(original_loss[3], rel=0.05), (loss, original_loss)
    assert loss[3] < original_loss[1] - 0.05, (loss, original_loss)
    metrics = read_json(out / "metrics.json")
    assert metrics["train_steps"] == 4 and metrics["eval_samples"] == 11  # the whole run, as uninterrupted
    assert (out / "checkpoints" / "step_4").is_dir()


# ------------------------------------------------------------------ combinations that cannot work


def fake_checkpoint(root: Path, processes: int, deepspeed_files: list[str]) -> Path:
    """A complete-looking checkpoint laid out as accelerate and DeepSpeed name their files (layout read from names)."""
    from accel_tasks.manifest import write_manifest

    path = root / "step_2"
    path.mkdir(parents=True)
    (path / "loop_state.json").write_text(json.dumps({"global_step": 2, "epoch": 0, "batches_in_epoch": 2}))
    for rank in range(processes):
        (path / f"random_states_{rank}.pkl").write_bytes(b"x")
    if deepspeed_files:
        (path / "pytorch_model").mkdir()
        for name in deepspeed_files:
            (path / "pytorch_model" / name).write_bytes(b"x")
    else:
        (path / "model.safetensors").write_bytes(b"x")
    write_manifest(path, kind="checkpoint", step=2)
    return path


ZERO3_FILES = [f"zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1) for kind in ("model", "optim")]
ZERO2_FILES = ["mp_rank_00_model_states.pt"] + [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)]


# What `accelerate launch` puts in a worker's environment for each launcher (the checks read only these).
NO_DEEPSPEED = {"WORLD_SIZE": "1"}


def deepspeed_env(stage: int, processes: int = 1) -> dict:
    return {
        "WORLD_SIZE": str(processes),
        "ACCELERATE_USE_DEEPSPEED": "true",
        "ACCELERATE_DEEPSPEED_ZERO_STAGE": str(stage),
    }


@pytest.mark.parametrize(
    "case, files, processes, env, expected",
    [
        (
            "zero3 without deepspeed",
            ZERO3_FILES,
            2,
            NO_DEEPSPEED,
            "is a DeepSpeed ZeRO-3 checkpoint written by 2 processes, and this run has no DeepSpeed; "
            "resume it under DeepSpeed ZeRO-3",
        ),
        (
            "plain under deepspeed",
            [],
            1,
            deepspeed_env(2),
            "is a plain (no DeepSpeed) checkpoint written by 1 process, and this run uses DeepSpeed ZeRO-2; "
            "resume it without DeepSpeed",
        ),
        (
            "zero3 under zero2",
            ZERO3_FILES,
            2,
            deepspeed_env(2),
            "is a DeepSpeed ZeRO-3 checkpoint written by 2 processes, and this run uses ZeRO-2; "
            "resume it under the stage it was written with (ZeRO-3)",
        ),
        (
            "zero2 under zero3",
            ZERO2_FILES,
            2,
            deepspeed_env(3),
            "is a DeepSpeed ZeRO-1/2 checkpoint written by 2 processes, and this run uses ZeRO-3; "
            "resume it under the stage it was written with (ZeRO-1/2)",
        ),
        (
            "zero0 on 1 process",
            ["mp_rank_00_model_states.pt"],
            2,
            deepspeed_env(0),
            "is a DeepSpeed ZeRO-0 checkpoint written by 2 processes, and this run has 1; "
            "a ZeRO-0 checkpoint has no universal conversion, so resume it on 2 processes",
        ),
    ],
)
def test_a_resume_that_cannot_work_is_one_line_before_anything_loads(tmp_path, case, files, processes, env, expected):
    checkpoint = fake_checkpoint(tmp_path / "old" / "checkpoints", processes, files)
    out = tmp_path / "new"
    result = run_cli(
        ["recipe=summarization", f"train.resume_from={checkpoint}", f"output_dir={out}"],
        tmp_path,
        launcher="python",  # the environment of a DeepSpeed launch (WORLD_SIZE ...) is read at import: no fork
        env=env,
    )
    line = one_error_line(result)
    assert expected in line, line
    assert not out.exists()  # nothing written


# ------------------------------------------------------------------ the arithmetic, on real torch objects


def test_the_data_position_keeps_the_examples_consumed():
    from accel_tasks.engines.reshard import rescale_position

    assert rescale_position(2, saved=2, now=1, batch_size=2) == (4, 0)  # 8 examples: 4 batches of 2 on 1 process
    assert rescale_position(2, saved=1, now=2, batch_size=2) == (1, 0)  # 4 examples: 1 batch of 2 on each of 2
    assert rescale_position(3, saved=1, now=2, batch_size=2) == (1, 2)  # 6 examples: 4 now, 2 seen again


def test_the_schedule_is_rescaled_to_the_new_process_count():
    import torch
    from transformers import get_scheduler

    from accel_tasks.engines.reshard import rescale_scheduler

    def scheduler(processes: int):
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-2)
        return get_scheduler(
            "linear", optimizer=optimizer, num_warmup_steps=processes, num_training_steps=4 * processes
        )

    two = scheduler(2)
    for _ in range(2 * 2):  # 2 optimizer steps, stepped once per process
        two.step()
    one = scheduler(1)
    one.load_state_dict(two.state_dict())  # what load_state does: the 2-process position
    rescale_scheduler(one, saved=2, now=1)
    assert one.last_epoch == 2  # optimizer step 2, once per process on 1 process
    assert one.get_last_lr()[0] == pytest.approx(EXPECTED_LR[2])
    assert one.optimizer.param_groups[0]["lr"] == pytest.approx(EXPECTED_LR[2])
    one.step()
    assert one.get_last_lr()[0] == pytest.approx(EXPECTED_LR[3])
    # Without the rescale, the 2-process position read on 1 process would be step 4: the schedule's end.
    stale = scheduler(1)
    stale.load_state_dict(two.state_dict())
    assert stale.last_epoch == 4
