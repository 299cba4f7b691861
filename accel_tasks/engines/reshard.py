"""Resume a checkpoint on another number of processes: what its layout allows, and the conversion.

What a resume on N' processes of a checkpoint written by N means here:

- the same optimizer step and learning-rate schedule (the scheduler, which steps once per process for
  every optimizer step, is rescaled from N to N');
- the same weights and optimizer state: a plain (DDP) checkpoint holds them whole; a DeepSpeed ZeRO-1/2/3
  checkpoint holds one shard per process, so it is first converted to DeepSpeed's universal checkpoint
  (``deepspeed.checkpoint.ds_to_universal``: one fp32 tensor and its Adam moments per parameter) and
  loaded with ``checkpoint.load_universal``, which re-partitions over N' processes; an FSDP2 checkpoint is a
  ``torch.distributed.checkpoint`` directory, which reshards on load by itself (engines/fsdp.py);
- the same number of examples consumed in the epoch: ``batches_in_epoch`` counts micro-batches per
  process, so it becomes ``batches_in_epoch * N / N'`` (rounded down to a whole micro-batch; a notice
  says how many examples are then seen twice).

The order of examples after the resume is not the one an uninterrupted N'-process run would have seen
(the sampler deals batches by world size), so bit-identical losses are not promised; the weights right
after loading are the checkpoint's. Processes beyond the checkpoint's N have no saved RNG state and keep
the seeded one.

What cannot work is refused in preflight, in one line, before anything loads (``check_resume_layout``):
a DeepSpeed (or FSDP2) checkpoint resumed without that engine or the other way round, a ZeRO-3 checkpoint under
another stage (or another stage's under ZeRO-3), and a ZeRO-0 checkpoint (optimizer not partitioned,
no universal conversion) on another number of processes. The layout is read from file names only: this
module imports neither torch nor DeepSpeed at module level.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from accel_tasks import log
from accel_tasks.config import RunConfig
from accel_tasks.engines.deepspeed_config import check_deepspeed_config, deepspeed_requested, world_size
from accel_tasks.engines.fsdp import fsdp_requested, is_sharded_checkpoint
from accel_tasks.errors import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator

# accelerate's save_state names: one RNG file per process, the DeepSpeed engine's tag directory.
RNG_FILE = re.compile(r"random_states_(\d+)\.pkl")
DEEPSPEED_TAG = "pytorch_model"
ZERO3_MODEL_FILE = re.compile(r"zero_pp_rank_(\d+)_mp_rank_\d+_model_states\.pt")
ZERO_OPTIM_FILE = re.compile(r"(?:bf16_|fp16_)?zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt")
UNIVERSAL_SUFFIX = ".universal"


@dataclass(frozen=True)
class CheckpointLayout:
    """How a checkpoint was written: by how many processes, with DeepSpeed or not, which ZeRO family."""

    processes: int
    deepspeed: bool
    # 3: parameters partitioned; 12: optimizer (and gradients) partitioned (ZeRO-1/2, and DeepSpeed's bf16
    # optimizer); 0: nothing partitioned (ZeRO-0); -1: no DeepSpeed.
    zero: int
    # Written under FSDP2: model and optimizer as a distributed checkpoint, which reshards on load.
    fsdp: bool = False

    def describe(self) -> str:
        if self.fsdp:
            return f"FSDP2 checkpoint written by {self.processes} process{'es' if self.processes != 1 else ''}"
        kind = {3: "DeepSpeed ZeRO-3", 12: "DeepSpeed ZeRO-1/2", 0: "DeepSpeed ZeRO-0", -1: "plain (no DeepSpeed)"}[
            self.zero
        ]
        return f"{kind} checkpoint written by {self.processes} process{'es' if self.processes != 1 else ''}"


def checkpoint_layout(path: Path) -> CheckpointLayout:
    """Read from the file names of an accelerate ``save_state`` directory."""
    names = [p.name for p in Path(path).iterdir()]
    processes = sum(1 for name in names if RNG_FILE.fullmatch(name)) or 1
    tag = Path(path) / DEEPSPEED_TAG
    if is_sharded_checkpoint(path):
        return CheckpointLayout(processes, False, -1, fsdp=True)
    if not tag.is_dir():
        return CheckpointLayout(processes, False, -1)
    shard_names = [p.name for p in tag.iterdir()]
    if any(ZERO3_MODEL_FILE.fullmatch(name) for name in shard_names):
        zero = 3
    elif any(ZERO_OPTIM_FILE.fullmatch(name) for name in shard_names):
        zero = 12
    else:
        zero = 0
    return CheckpointLayout(processes, True, zero)


def run_zero_stage(cfg: RunConfig) -> int:
    """The ZeRO stage this run will use (from the user's DeepSpeed JSON or the accelerate config); -1 without
    DeepSpeed."""
    if not deepspeed_requested(cfg):
        return -1
    ds_config = check_deepspeed_config(cfg)
    if ds_config is not None:
        return int(ds_config.get("zero_optimization", {}).get("stage", 0))
    return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0") or 0)


def check_resume_layout(cfg: RunConfig, resume_dir: Path) -> CheckpointLayout:
    """Refuse, in one line, a resume that cannot work with this launcher; returns the checkpoint's layout."""
    layout = checkpoint_layout(resume_dir)
    processes, stage = world_size(), run_zero_stage(cfg)
    where = f"train.resume_from={str(resume_dir)!r} is a {layout.describe()}"
    if layout.fsdp != fsdp_requested():
        raise ConfigError(
            f"{where}, and this run {'has no FSDP' if layout.fsdp else 'runs FSDP2'}; resume it "
            + (
                "under FSDP2 (--config_file accelerate_configs/fsdp2.yaml, any number of processes)"
                if layout.fsdp
                else "with the engine it was written with"
            )
            + f", or start from its weights with a new optimizer: model.name_or_path={resume_dir} without "
            "train.resume_from"
        )
    if layout.deepspeed and stage < 0:
        raise ConfigError(
            f"{where}, and this run has no DeepSpeed; resume it under DeepSpeed "
            f"ZeRO-{3 if layout.zero == 3 else '1/2' if layout.zero else 0} "
            f"(e.g. --config_file accelerate_configs/deepspeed_zero{3 if layout.zero == 3 else 2}.yaml), "
            f"or start from its weights with a new optimizer: model.name_or_path={resume_dir} without train.resume_from"
        )
    if not layout.deepspeed and stage >= 0:
        raise ConfigError(
            f"{where}, and this run uses DeepSpeed ZeRO-{stage}; resume it without DeepSpeed "
            f"(accelerate_configs/cpu_2proc.yaml or multi_gpu.yaml), or start from its weights with a new optimizer: "
            f"model.name_or_path={resume_dir} without train.resume_from"
        )
    if layout.deepspeed and (layout.zero == 3) != (stage == 3):
        raise ConfigError(
            f"{where}, and this run uses ZeRO-{stage}; resume it under the stage it was written with "
            f"(ZeRO-{3 if layout.zero == 3 else '1/2' if layout.zero else 0})"
        )
    if layout.deepspeed and layout.zero == 0 and processes != layout.processes:
        raise ConfigError(
            f"{where}, and this run has {processes}; a ZeRO-0 checkpoint has no universal conversion, so resume it on "
            f"{layout.processes} process{'es' if layout.processes != 1 else ''} (--num_processes {layout.processes})"
        )
    return layout


def universal_checkpoint(accelerator: Accelerator, checkpoint: Path, work_root: Path) -> Path:
    """A copy of ``checkpoint`` whose DeepSpeed part is universal (made by the main process; every process waits).

    Everything accelerate reads besides the engine (scheduler, RNG states, sampler) is linked, not copied.
    The conversion runs in a child process: ``ds_to_universal`` starts worker processes of its own, which
    must not be forked from a process that holds a process group.
    """
    target = work_root / f"{checkpoint.name}{UNIVERSAL_SUFFIX}"
    if accelerator.is_main_process:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for item in checkpoint.iterdir():
            if item.name != DEEPSPEED_TAG and item.is_file():
                os.symlink(item.resolve(), target / item.name)
        command = [
            sys.executable,
            "-m",
            "deepspeed.checkpoint.ds_to_universal",
            "--input_folder",
            str(checkpoint / DEEPSPEED_TAG),
            "--output_folder",
            str(target / DEEPSPEED_TAG),
            "--num_extract_workers",
            "1",
            "--num_merge_workers",
            "1",
            # Plain data-parallel models carry no client universal_checkpoint_info (Megatron-style layouts do):
            # only its version.
            "--inject_missing_state",
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ConfigError(
                f"converting {checkpoint} to a universal checkpoint for {accelerator.num_processes} processes "
                f"failed: {tail}"
            )
    accelerator.wait_for_everyone()
    return target


def load_resharded(accelerator: Accelerator, checkpoint: Path, layout: CheckpointLayout, work_root: Path) -> None:
    """``accelerator.load_state`` of a checkpoint written by another number of processes (weights and optimizer)."""
    if not layout.deepspeed:
        accelerator.load_state(
            str(checkpoint)
        )  # whole weights and optimizer state; RNG files of missing ranks are skipped
        return
    engine = accelerator.deepspeed_engine_wrapped.engine
    source = universal_checkpoint(accelerator, checkpoint, work_root)
    engine._config.load_universal_checkpoint = True
    try:
        accelerator.load_state(str(source))
    finally:
        engine._config.load_universal_checkpoint = False
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(source, ignore_errors=True)


def rescale_position(
    batches_in_epoch: int, saved: int, now: int, batch_size: int, saved_batch_size: Optional[int] = None
) -> tuple[int, int]:
    """(micro-batches per process on ``now`` processes of ``batch_size``, examples seen twice) for the same examples
    consumed as ``batches_in_epoch`` micro-batches on ``saved`` processes of ``saved_batch_size`` (default: the same
    batch size)."""
    examples = batches_in_epoch * saved * (saved_batch_size or batch_size)
    per_step = now * batch_size
    return examples // per_step, examples % per_step


def rescale_scheduler(scheduler: Any, saved: int, now: int) -> None:
    """The prepared scheduler steps once per process per optimizer step: move it from ``saved`` to ``now`` processes."""
    inner = getattr(scheduler, "scheduler", scheduler)
    steps = inner.last_epoch // saved
    inner.last_epoch = steps * now - 1
    inner._step_count = max(inner._step_count, 1)
    inner.step()  # sets last_epoch = steps * now and the optimizer's learning rates to the schedule's value there


def announce(layout: CheckpointLayout, now: int, step: int, repeated: int) -> str:
    """The log line of a resume on another number of processes."""
    how = (
        "universal checkpoint conversion"
        if layout.deepspeed
        else "distributed checkpoint resharded on load"
        if layout.fsdp
        else "whole weights and optimizer state"
    )
    text = (
        f"resuming a {layout.describe()} on {now} process{'es' if now != 1 else ''} at step {step} "
        f"({how}; learning-rate schedule rescaled)"
    )
    if repeated:
        log.warning(
            f"the resumed data position is rounded down to a whole batch on {now} processes: "
            f"{repeated} examples of this epoch are seen again"
        )
    return text
