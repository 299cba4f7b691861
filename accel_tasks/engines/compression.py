"""Gradient compression of the DDP all-reduce (``train.grad_compression``), through accelerate's DDP
communication hooks.

Why its own module: the choice is checked in preflight (no torch import here at module level), turned into the
``DistributedDataParallelKwargs`` that accelerate registers on the DDP model in ``prepare``, and PowerSGD's
warm-up count is carried through checkpoints; all three are one feature and change together.

What each choice sends per optimizer step (bench/grad_compression.py measures it):

* ``fp16`` / ``bf16``: every gradient bucket cast to 16 bits, all-reduced, cast back: half the bytes; no state.
  bf16 needs CUDA and NCCL 2.10+ (torch refuses it on gloo): refused in preflight on a machine without a GPU.
* ``powersgd``: torch's ``powerSGD_hook``. For the first ``train.powersgd_start_iter`` steps the buckets are
  all-reduced in full (PowerSGD's warm-up; DDP rebuilds its buckets after the first step, so at least 2).
  Then each gradient matrix n x m (a weight viewed as ``shape[0] x rest``) is sent as P (n x r) and Q (m x r)
  with r = ``train.powersgd_rank``, when that is at least 2x smaller (torch's ``min_compression_rate``);
  1-D tensors (biases, norms) and matrices it would not shrink go uncompressed. The error of the
  approximation is fed back into the next step's gradient (error feedback) and Q is reused (warm start).

Resume: the steps already done count towards the warm-up (saved as ``powersgd_state.json`` in each
checkpoint). The error feedback and the warm-start Q are not carried: they are stored per DDP gradient bucket,
and a new process's DDP lays its buckets out afresh after its first step. So after a resume past the warm-up
PowerSGD all-reduces 2 more steps uncompressed and restarts its error feedback empty, as at its first step:
the resumed run is close to, not bit-equal with, an uninterrupted one. A resume two or more steps before
the warm-up ends is exact, and so is any resume with fp16 / bf16 (stateless).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from accel_tasks import log
from accel_tasks.config import RunConfig, TrainConfig
from accel_tasks.engines.deepspeed_config import cuda_present
from accel_tasks.errors import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

# train.grad_compression value -> accelerate's DDPCommunicationHookType member name.
GRAD_COMPRESSION_HOOKS = {"powersgd": "POWER_SGD", "fp16": "FP16", "bf16": "BF16"}
# The file of a checkpoint that carries PowerSGD's step count (written by the main process).
POWERSGD_STATE_FILE = "powersgd_state.json"
# A DDP bucket size limit (MiB) above any model's gradients: every gradient in one bucket (PowerSGD over gloo).
ONE_BUCKET_MB = 1 << 20
# DDP rebuilds its gradient buckets after the first step of a process; PowerSGD's state is per bucket.
MIN_POWERSGD_START_ITER = 2


def check_grad_compression(cfg: RunConfig, deepspeed: bool, processes: int) -> None:
    """train.grad_compression and the PowerSGD options: before anything loads, one line for each mistake.

    With one process there is no all-reduce and accelerate does not wrap the model in DDP: a notice, not an
    error, so one config serves a 1-process debug run and the multi-process run.
    """
    train = cfg.train
    value = train.grad_compression
    if train.powersgd_rank < 1:
        raise ConfigError(
            f"train.powersgd_rank={train.powersgd_rank} must be at least 1 "
            "(the rank of each gradient's low-rank approximation)"
        )
    if train.powersgd_start_iter < MIN_POWERSGD_START_ITER:
        raise ConfigError(
            f"train.powersgd_start_iter={train.powersgd_start_iter} must be at least {MIN_POWERSGD_START_ITER}: "
            "DDP rebuilds its gradient buckets after the first step and PowerSGD's error feedback is kept per bucket"
        )
    if value is None:
        return
    if value not in GRAD_COMPRESSION_HOOKS:
        close = difflib.get_close_matches(
            str(value).lower().replace("_", "").replace("-", ""), list(GRAD_COMPRESSION_HOOKS), n=1, cutoff=0.5
        )
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"train.grad_compression={value!r} is not a gradient compression; {hint}use one of "
            f"{', '.join(GRAD_COMPRESSION_HOOKS)} (or null: uncompressed)"
        )
    if deepspeed:
        raise ConfigError(
            f"train.grad_compression={value} is a DDP communication hook, "
            "and DeepSpeed does its own gradient communication: "
            "drop train.grad_compression, or drop DeepSpeed and launch with "
            "accelerate_configs/cpu_2proc.yaml or multi_gpu.yaml "
            "(DeepSpeed's compressed-communication optimizers, 1-bit Adam and 0/1 Adam, "
            "need NCCL/MPI GPU backends and a DeepSpeed that ships them)"
        )
    if value == "bf16" and not cuda_present():
        raise ConfigError(
            "train.grad_compression=bf16 needs CUDA 11+ and NCCL 2.10+ (torch's bf16_compress_hook refuses gloo); "
            "on this machine (no CUDA GPU) use train.grad_compression=fp16 or powersgd"
        )
    if processes < 2:
        log.warning(
            f"train.grad_compression={value}: with 1 process there is no gradient all-reduce to compress; "
            "it has no effect"
        )


def ddp_kwargs_handler(train: TrainConfig, gloo: bool) -> Optional[DistributedDataParallelKwargs]:
    """accelerate's DDP kwargs with the chosen communication hook; None when no compression is asked for.

    accelerate registers the hook (and builds PowerSGD's state from ``comm_state_option``) when ``prepare``
    wraps the model in DDP. PowerSGD over gloo gets one gradient bucket: its second and third all-reduce
    (P, then Q) are issued from the callback of the first, on gloo's own thread, so with several buckets
    the two ranks can issue the collectives of different buckets in different orders. Seen here with 2
    buckets: "Received data size doesn't match expected size", then an abort. One bucket per step keeps
    them in one order (the cost: no overlap of the all-reduce with the backward pass, little on 2 cores).
    """
    if train.grad_compression is None:
        return None
    from accelerate.utils import DDPCommunicationHookType, DistributedDataParallelKwargs

    hook = DDPCommunicationHookType[GRAD_COMPRESSION_HOOKS[train.grad_compression]]
    options: dict[str, Any] = {}
    if hook is DDPCommunicationHookType.POWER_SGD:
        options["comm_state_option"] = {
            "matrix_approximation_rank": train.powersgd_rank,
            "start_powerSGD_iter": train.powersgd_start_iter,
        }
        if gloo:
            options["bucket_cap_mb"] = ONE_BUCKET_MB
    return DistributedDataParallelKwargs(comm_hook=hook, **options)


def describe_compression(train: TrainConfig) -> Optional[str]:
    """The speed line's value: ``powersgd(rank=1,start=1000)``, ``fp16``, or None (off)."""
    if train.grad_compression == "powersgd":
        return f"powersgd(rank={train.powersgd_rank},start={train.powersgd_start_iter})"
    return train.grad_compression


def powersgd_states(models: list[Any]) -> list[Any]:
    """The PowerSGD states accelerate registered on the DDP models (``DistributedDataParallel._comm_hooks``)."""
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import PowerSGDState

    return [
        state for model in models for _, state in getattr(model, "_comm_hooks", ()) if isinstance(state, PowerSGDState)
    ]


class PowerSGDProgress:
    """PowerSGD's step count across resumes: a fresh DDP after a resume restarts its own count at 0."""

    def __init__(self, states: list[Any], start_iter: int) -> None:
        self.states = states  # the PowerSGDState accelerate registered on the DDP model
        self.start_iter = start_iter
        self.done_before = 0  # steps of earlier processes of this run (from the checkpoint resumed)

    def steps(self) -> int:
        return self.done_before + self.states[0].iter

    def save(self, output_dir: str, main_process: bool) -> None:
        if main_process:
            data = {
                "steps": self.steps(),
                "start_iter": self.start_iter,
                "compressing": self.steps() >= self.start_iter,
            }
            (Path(output_dir) / POWERSGD_STATE_FILE).write_text(json.dumps(data) + "\n")

    def load(self, input_dir: str) -> None:
        """Continue the warm-up where it stopped; at least 2 steps uncompressed in this process (new buckets)."""
        path = Path(input_dir) / POWERSGD_STATE_FILE
        self.done_before = int(json.loads(path.read_text())["steps"]) if path.is_file() else 0
        for state in self.states:
            state.iter = 0
            state.start_powerSGD_iter = max(MIN_POWERSGD_START_ITER, self.start_iter - self.done_before)


def track_powersgd(accelerator: Accelerator, model: Any, train: TrainConfig) -> Optional[PowerSGDProgress]:
    """Save PowerSGD's step count with every checkpoint and continue it on resume (see the module docstring).

    Called with the prepared model: accelerate keeps the unwrapped model for save_state's hooks, and the
    PowerSGD state lives on the DDP wrapper.
    """
    states = powersgd_states([model]) if train.grad_compression == "powersgd" else []
    if not states:
        return None
    progress = PowerSGDProgress(states, train.powersgd_start_iter)
    accelerator.register_save_state_pre_hook(
        lambda models, weights, output_dir: progress.save(output_dir, accelerator.is_main_process)
    )
    accelerator.register_load_state_pre_hook(lambda models, input_dir: progress.load(input_dir))
    return progress
