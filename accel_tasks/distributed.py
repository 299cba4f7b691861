"""The Accelerator for a run: launcher settings from the environment, training settings from the run config.

DeepSpeed's batch size, accumulation and clipping come from the run config only (one source of
truth): ``auto`` values are filled in, and an explicit value that disagrees is an error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from .config import ConfigError

# run-config value -> DeepSpeed config key it must agree with
_DS_KEYS = {
    "gradient_accumulation_steps": ("train.grad_accum", lambda cfg: cfg.train.grad_accum),
    "gradient_clipping": ("train.max_grad_norm", lambda cfg: cfg.train.max_grad_norm),
    "train_micro_batch_size_per_gpu": ("train.batch_size", lambda cfg: cfg.train.batch_size),
}


def deepspeed_requested(cfg: Any) -> bool:
    return bool(cfg.deepspeed) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def deepspeed_config_file(cfg: Any) -> Optional[str]:
    path = cfg.deepspeed or os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    return None if path in (None, "", "none") else path


def check_deepspeed_config(cfg: Any) -> Optional[dict]:
    """Read the user's DeepSpeed JSON and reject values that contradict the run config."""
    path = deepspeed_config_file(cfg)
    if path is None:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"DeepSpeed config {path!r} does not exist")
    try:
        ds_config = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"DeepSpeed config {path!r} is not valid JSON: {exc}") from None
    if "zero_optimization" not in ds_config:
        raise ConfigError(f"DeepSpeed config {path!r} has no zero_optimization section; add {{\"zero_optimization\": {{\"stage\": 2}}}}")
    for ds_key, (run_key, getter) in _DS_KEYS.items():
        value = ds_config.get(ds_key, "auto")
        expected = getter(cfg)
        if ds_key == "gradient_clipping" and expected == 0 and value in (0, 0.0):
            continue
        if value != "auto" and value != expected:
            raise ConfigError(
                f"DeepSpeed config {path!r} sets {ds_key}={value} but the run config has {run_key}={expected}; "
                f'set it to "auto" (filled from the run config) or make them equal'
            )
    return ds_config


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("ACCELERATE_NUM_PROCESSES", "1")) or 1)


def configure_threads(requested: Optional[int]) -> int:
    """Split the usable cores between the local processes: on 2 shared cores the wrong count was 20x slower."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = requested or max(1, cores // max(1, local_world_size()))
    torch.set_num_threads(threads)
    return threads


def build_accelerator(cfg: Any, output_dir: Path) -> Any:
    import torch
    from accelerate import Accelerator, DataLoaderConfiguration, DeepSpeedPlugin
    from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

    kwargs: dict[str, Any] = {}
    on_cpu = not torch.cuda.is_available()
    if deepspeed_requested(cfg):
        ds_config = check_deepspeed_config(cfg)
        plugin_kwargs: dict[str, Any] = {
            "gradient_accumulation_steps": cfg.train.grad_accum,
            "gradient_clipping": float(cfg.train.max_grad_norm),
        }
        if ds_config is not None:
            plugin_kwargs["hf_ds_config"] = ds_config
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(**plugin_kwargs)
    elif on_cpu:
        # Without cpu=True, `--multi_gpu` on a CPU machine starts independent single processes.
        kwargs["cpu"] = True
    if on_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    return Accelerator(
        gradient_accumulation_steps=cfg.train.grad_accum,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        **kwargs,
    )
