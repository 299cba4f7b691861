"""The Accelerator for a run, and the one place that answers "DeepSpeed? which ZeRO stage?".

Launcher settings come from the environment that ``accelerate launch`` sets; training settings from
the run config (checked against a DeepSpeed JSON in ``deepspeed_config``). Threads per process are
set here too, since the right count depends on how many processes share the machine.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from accel_tasks.config import RunConfig
from accel_tasks.engines.compression import ddp_kwargs_handler
from accel_tasks.engines.deepspeed_config import (
    check_cpu_adam_settings,
    check_deepspeed_config,
    deepspeed_requested,
    fill_deepspeed_config,
    world_size,
)
from accel_tasks.engines.fsdp import (
    describe_sharding,
    fsdp_requested,
    plain_data_parallel_state,
    read_fsdp_settings,
    register_sharded_checkpoints,
    shard_model,
)
from accel_tasks.engines.precision import accelerator_settings, adapter_kept_in_fp32, cast_parameters, weights_dtype
from accel_tasks.engines.trackers import point_trackers_at, resolve_trackers
from accel_tasks.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator, DeepSpeedPlugin
    from transformers import PreTrainedModel


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("ACCELERATE_NUM_PROCESSES", "1")) or 1)


THREADS_ENV = "ACCEL_TASKS_NUM_THREADS"


def configure_threads(requested: Optional[int]) -> int:
    """Split the usable cores between the local processes: on 2 shared cores the wrong count was 20x slower.

    `train.threads` wins, then ACCEL_TASKS_NUM_THREADS (a per-machine setting, e.g. for jobs sharing a node;
    OMP_NUM_THREADS cannot serve, `accelerate launch` always overwrites it), then cores / local processes.
    """
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = requested or threads_from_env() or max(1, cores // max(1, local_world_size()))
    torch.set_num_threads(threads)
    return threads


def threads_from_env() -> Optional[int]:
    """ACCEL_TASKS_NUM_THREADS as a positive int, None when unset; checked in preflight before any work."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{THREADS_ENV}={value!r} must be a whole number of threads >= 1; fix or unset it")
    return int(value)


def build_deepspeed_plugin(cfg: RunConfig, on_cpu: bool) -> DeepSpeedPlugin:
    """DeepSpeedPlugin from the launcher's environment (or the user's JSON), with the run config filled in."""
    from accelerate import DeepSpeedPlugin

    ds_config = check_deepspeed_config(cfg)
    plugin_kwargs: dict[str, Any] = {
        "gradient_accumulation_steps": cfg.train.grad_accum,
        "gradient_clipping": float(cfg.train.max_grad_norm),
    }
    if ds_config is not None:
        plugin_kwargs["hf_ds_config"] = ds_config
    plugin = DeepSpeedPlugin(**plugin_kwargs)
    config = plugin.deepspeed_config
    # Filled now rather than from the first prepared dataloader, so an eval-only prepare(model) works too.
    for key, value in fill_deepspeed_config({}, cfg).items():
        if config.get(key, "auto") == "auto":
            config[key] = value
    offload = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") not in (
        None,
        "none",
    )
    if offload and "zero_force_ds_cpu_optimizer" not in config:
        if on_cpu:
            # Without a GPU the client AdamW already runs on CPU tensors; DeepSpeedCPUAdam would only add a
            # ~140 s one-time JIT build of the cpu_adam op.
            config["zero_force_ds_cpu_optimizer"] = False
        else:
            check_cpu_adam_settings(cfg)
    return plugin


def build_accelerator(cfg: RunConfig, output_dir: Path) -> Accelerator:
    """The run's Accelerator; an eval-only run's mixed precision is the one its evals compute in (eval.precision,
    engines/precision.py), the launcher's only where that is unset."""
    import torch
    from accelerate.utils import InitProcessGroupKwargs

    kwargs: dict[str, Any] = {}
    mixed_precision, handlers = accelerator_settings(cfg)
    if mixed_precision is not None:
        kwargs["mixed_precision"] = mixed_precision
    on_cpu = not torch.cuda.is_available()
    if deepspeed_requested(cfg):
        # Never with cpu=True: Accelerator(cpu=True) silently drops the DeepSpeed plugin.
        kwargs["deepspeed_plugin"] = build_deepspeed_plugin(cfg, on_cpu)
    elif on_cpu:
        # Without cpu=True, `--multi_gpu` on a CPU machine starts independent single processes.
        kwargs["cpu"] = True
    if on_cpu and world_size() > 1:
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    compression = ddp_kwargs_handler(cfg.train, gloo=on_cpu) if not deepspeed_requested(cfg) else None
    if compression is not None:
        handlers.append(compression)  # registered on the DDP model by prepare (gloo on CPU, NCCL on GPUs)
    if handlers:
        kwargs["kwargs_handlers"] = handlers
    trackers = resolve_trackers(cfg.train.report_to)
    if trackers:
        point_trackers_at(output_dir)
    # FSDP2: accelerate builds plain data parallel, engines/fsdp.py shards the model (same code on CPU and GPU).
    with plain_data_parallel_state() if fsdp_requested() else nullcontext():
        accelerator = _accelerator(cfg, output_dir, trackers, kwargs)
    return accelerator


def _accelerator(cfg: RunConfig, output_dir: Path, trackers: list[Any], kwargs: dict[str, Any]) -> Accelerator:
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import ProjectConfiguration

    return Accelerator(
        gradient_accumulation_steps=cfg.train.grad_accum,
        # Never accelerate's own torch.compile in prepare(): its wrapper puts `_orig_mod.` into every saved key.
        # The loop compiles the training forward instead (train.compile, or `accelerate launch --dynamo_backend`).
        dynamo_backend="no",
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        **kwargs,
    )


def engine_name(accelerator: Accelerator) -> str:
    """What the run line calls the engine: FSDP2 (which accelerate sees as plain data parallel), else accelerate's
    distributed type (NO, MULTI_CPU, MULTI_GPU, DEEPSPEED)."""
    return "FSDP2" if fsdp_requested() else accelerator.distributed_type.value


def is_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type.value == "DEEPSPEED"


def unwrap_model(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """``accelerator.unwrap_model(model)``, without importing DeepSpeed into a run that has none.

    Why: accelerate imports ``deepspeed`` whenever it is installed, only to test ``isinstance(model,
    DeepSpeedEngine)``, and deepspeed imports MLflow when that is installed: 1.6-1.9 s measured here at the
    first eval of a plain run. An eval-only run now never imports it (a training run still does, at the
    export: transformers' ``save_pretrained`` unwraps through accelerate itself). Where ``deepspeed`` was never
    imported, no object can be its engine, and a prepared model is at most DDP/DataParallel-wrapped (the
    loop never lets accelerate compile).
    """
    if "deepspeed" in sys.modules or accelerator.distributed_type.value in ("FSDP", "XLA"):
        return accelerator.unwrap_model(model)
    from torch.nn import DataParallel
    from torch.nn.parallel import DistributedDataParallel

    while isinstance(model, (DistributedDataParallel, DataParallel)):
        model = model.module
    return model


def zero_stage(accelerator: Accelerator) -> int:
    """The ZeRO stage of a DeepSpeed run; -1 without DeepSpeed."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None or not is_deepspeed(accelerator):
        return -1
    return int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", plugin.zero_stage))


def optimizer_offloaded(accelerator: Accelerator) -> bool:
    """Whether DeepSpeed keeps the optimizer on the CPU or NVMe (ZeRO-Offload); False without DeepSpeed."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None or not is_deepspeed(accelerator):
        return False
    offload = plugin.deepspeed_config.get("zero_optimization", {}).get("offload_optimizer") or {}
    return offload.get("device", "none") not in (None, "none")


def prepare_eval_model(
    accelerator: Accelerator, model: PreTrainedModel, precision: str, source: Optional[str] = None
) -> PreTrainedModel:
    """The model for an eval-only run that computes in ``precision`` (the run's ``eval.precision``) of ``source``
    (model.name_or_path: an adapter saved in fp32 keeps that dtype, engines/precision.py).

    Under ZeRO-3 the DeepSpeed engine shards the weights, which is why one would run eval under it. ZeRO
    0-2 shard only optimizer state and gradients and DeepSpeed refuses to build them without an
    optimizer ("zero stage 2 requires an optimizer"): the plain model is used, with the parameters the engine
    would have given it (DeepSpeed bf16/fp16 keeps half-precision parameters and has no autocast). A plain engine
    asked for DeepSpeed's or FSDP2's precision casts the parameters the same way, and does not ``prepare`` the
    model: accelerate would wrap its forward in an autocast, which neither of those engines does.
    """
    if fsdp_requested():
        return shard_for_run(accelerator, model)
    if is_deepspeed(accelerator) and zero_stage(accelerator) == 3:
        return accelerator.prepare(model)
    dtype = weights_dtype(precision)
    if dtype is None and not is_deepspeed(accelerator):
        return accelerator.prepare(model)
    model = model.to(accelerator.device)
    if dtype is None:
        return model
    return cast_parameters(model, dtype, adapter_kept_in_fp32(model, precision, source))


def shard_for_run(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: the model sharded over every process as the launcher's settings say, and the engine line logged."""
    from accel_tasks import log

    settings = read_fsdp_settings()
    model = shard_model(model, accelerator, settings)
    log.info(describe_sharding(model, accelerator, settings))
    return model


def prepare_for_training(
    accelerator: Accelerator, model: torch.nn.Module, optimizer_for: Callable[[torch.nn.Module], Any], loader: Any
) -> tuple[torch.nn.Module, Any, Any]:
    """(model, optimizer, loader) ready to train under this run's engine; ``loader`` None: a stream, not prepared.

    ``optimizer_for(model)`` builds the optimizer over the model it is given: under FSDP2 that must be the sharded
    model (the optimizer steps on its shards), which accelerate never sees: ``prepare`` would wrap it in DDP, and
    ``save_state`` would save the optimizer's shards from the main process alone. Its checkpoints are distributed
    checkpoints (engines/fsdp.py); the optimizer is wrapped as ``prepare`` would (steps only at the end of an
    accumulation) without being registered.
    """
    if not fsdp_requested():
        optimizer = optimizer_for(model)
        if loader is None:
            model, optimizer = accelerator.prepare(model, optimizer)
        else:
            model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        return model, optimizer, loader
    from accelerate.optimizer import AcceleratedOptimizer

    model = shard_for_run(accelerator, model)
    optimizer = AcceleratedOptimizer(optimizer_for(model), device_placement=False)
    register_sharded_checkpoints(accelerator, model, optimizer)
    return model, optimizer, accelerator.prepare(loader) if loader is not None else None


@contextmanager
def zero3_init_disabled() -> Iterator[None]:
    """Build plain CPU models on the main process even under ZeRO-3.

    transformers wraps model construction in ``deepspeed.zero.Init`` while its global DeepSpeed config is
    set, and that partitions with collectives the other ranks never join (a hang). Accelerate's
    ``zero3_init_context_manager(enable=False)`` re-creates that global config, so unset it here.
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:
        yield
        return
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def cast_floating_inputs(
    batch: dict[str, torch.Tensor], accelerator: Accelerator, model: torch.nn.Module, precision: Optional[str] = None
) -> dict[str, torch.Tensor]:
    """Float inputs in the weights' dtype where the weights are half precision and no autocast covers them:
    DeepSpeed fp16/bf16, and an eval whose ``precision`` casts the parameters on a plain engine (DeepSpeed's, or
    FSDP2's, whose root casts its inputs so; under FSDP2 itself the parameters stay fp32 here: nothing changes)."""
    half = is_deepspeed(accelerator) and accelerator.mixed_precision != "no"
    if not half and (precision is None or weights_dtype(precision) is None):
        return batch
    dtype = next(model.parameters()).dtype
    return {
        k: v.to(dtype) if hasattr(v, "is_floating_point") and v.is_floating_point() else v for k, v in batch.items()
    }
