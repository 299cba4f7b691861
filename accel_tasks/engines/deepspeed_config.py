"""DeepSpeed JSON and launcher checks, and ``auto`` filling from the run config.

One source of truth: DeepSpeed's batch size, accumulation, clipping and (if a user's DeepSpeed JSON has
them) optimizer and scheduler settings come from the run config. ``auto`` and missing values are filled
in from it; an explicit value that disagrees, in the JSON or in the accelerate config, is an error.
Pure checks on files and the environment: this module imports neither torch nor DeepSpeed.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

from accel_tasks.config import RunConfig
from accel_tasks.errors import ConfigError

# DeepSpeed key -> (run-config key, getter); the DeepSpeed value must be "auto", missing, or equal.
_DS_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "gradient_accumulation_steps": ("train.grad_accum", lambda cfg: cfg.train.grad_accum),
    "gradient_clipping": ("train.max_grad_norm", lambda cfg: float(cfg.train.max_grad_norm)),
    "train_micro_batch_size_per_gpu": ("train.batch_size", lambda cfg: cfg.train.batch_size),
}


# Environment set by `accelerate launch` from an accelerate config -> the run-config key it duplicates.
_LAUNCHER_ENV = {
    "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": (
        "gradient_accumulation_steps",
        "train.grad_accum",
        lambda cfg: cfg.train.grad_accum,
    ),
    "ACCELERATE_GRADIENT_CLIPPING": (
        "gradient_clipping",
        "train.max_grad_norm",
        lambda cfg: float(cfg.train.max_grad_norm),
    ),
}


# Launcher DeepSpeed fields that a DeepSpeed JSON also sets (accelerate refuses to combine them).
_LAUNCHER_DS_FIELDS = ("zero_stage", "offload_optimizer_device", "offload_param_device", "zero3_save_16bit_model")


# DeepSpeed optimizer params -> run-config values (the loop builds torch AdamW from these).
_OPTIMIZER_PARAMS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "lr": ("train.lr", lambda cfg: cfg.train.lr),
    "weight_decay": ("train.weight_decay", lambda cfg: cfg.train.weight_decay),
    "betas": ("train.adam_beta1/adam_beta2", lambda cfg: [cfg.train.adam_beta1, cfg.train.adam_beta2]),
    "eps": ("train.adam_epsilon", lambda cfg: cfg.train.adam_epsilon),
}


# DeepSpeed scheduler type -> the train.lr_scheduler that does the same.
_SCHEDULERS = {"WarmupDecayLR": "linear", "WarmupLR": "constant_with_warmup", "WarmupCosineLR": "cosine"}


# Scheduler params that may hold a fixed value and still agree with the run config.
_SCHEDULER_FIXED_OK = {"warmup_min_lr": (0, 0.0), "warmup_type": ("linear",), "cos_min_ratio": (0, 0.0)}


# DeepSpeedCPUAdam as accelerate builds it for ZeRO-Offload: only lr and weight decay are carried over.
_DS_CPU_ADAM_DEFAULTS = {"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8}


def deepspeed_requested(cfg: RunConfig) -> bool:
    return bool(cfg.deepspeed) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def deepspeed_config_file(cfg: RunConfig) -> Optional[str]:
    """The user's DeepSpeed JSON: ``deepspeed=`` in the run config, or the accelerate config's file."""
    launcher_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    launcher_file = None if launcher_file in (None, "", "none") else launcher_file
    if cfg.deepspeed and launcher_file and Path(cfg.deepspeed).resolve() != Path(launcher_file).resolve():
        raise ConfigError(
            f"deepspeed={cfg.deepspeed!r} but the accelerate config names deepspeed_config_file {launcher_file!r}; "
            "keep one of them"
        )
    path = cfg.deepspeed or launcher_file
    return None if path in (None, "", "none") else str(path)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def check_launcher_settings(cfg: RunConfig) -> None:
    """An accelerate config must not carry training settings that contradict the run config."""
    if not deepspeed_requested(cfg):
        return
    for env_name, (field, run_key, getter) in _LAUNCHER_ENV.items():
        raw = os.environ.get(env_name)
        if raw in (None, "", "auto", "none"):
            continue
        expected = getter(cfg)
        try:
            value = type(expected)(float(raw))
        except ValueError:
            raise ConfigError(f"the accelerate config sets {field}={raw!r}, which is not a number; remove it") from None
        if value != expected and not (field == "gradient_clipping" and value == 0 and expected == 0):
            raise ConfigError(
                f"the accelerate config sets deepspeed_config.{field}={raw} "
                f"but the run config has {run_key}={expected}; "
                f"remove {field} from the accelerate config (the run config is the one source of truth) "
                f"or set {run_key}={raw}"
            )
    if cfg.deepspeed:
        fields = set(os.environ.get("ACCELERATE_CONFIG_DS_FIELDS", "").split(",")) & set(_LAUNCHER_DS_FIELDS)
        if fields:
            raise ConfigError(
                f"deepspeed={cfg.deepspeed!r} is given, but the accelerate config also sets DeepSpeed options "
                f"({', '.join(sorted(fields))}); launch with a non-DeepSpeed accelerate config "
                "(accelerate_configs/multi_gpu.yaml or cpu_2proc.yaml) or drop deepspeed="
            )


def check_deepspeed_config(cfg: RunConfig) -> Optional[dict]:
    """Validate the user's DeepSpeed JSON against the run config; returns it with ``auto`` values filled.

    Runs in preflight (before anything heavy) and again when the Accelerator is built.
    """
    check_launcher_settings(cfg)
    path = deepspeed_config_file(cfg)
    if path is None:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"DeepSpeed config {path!r} does not exist; pass deepspeed=path/to/ds_config.json")
    try:
        ds_config = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"DeepSpeed config {path!r} is not valid JSON: {exc}") from None
    if not isinstance(ds_config, dict):
        raise ConfigError(f"DeepSpeed config {path!r} must hold a JSON object")
    if "zero_optimization" not in ds_config:
        raise ConfigError(
            f'DeepSpeed config {path!r} has no zero_optimization section; add {{"zero_optimization": {{"stage": 2}}}}'
        )
    return fill_deepspeed_config(ds_config, cfg, path)


def _contradiction(path: str, ds_key: str, value: Any, run_key: str, expected: Any) -> ConfigError:
    return ConfigError(
        f"DeepSpeed config {path!r} sets {ds_key}={value} but the run config has {run_key}={expected}; "
        f'set it to "auto" (filled from the run config) or make them equal'
    )


def _equal(value: Any, expected: Any) -> bool:
    if isinstance(expected, list):
        return (
            isinstance(value, (list, tuple))
            and len(value) == len(expected)
            and all(_equal(v, e) for v, e in zip(value, expected))
        )
    if isinstance(expected, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return abs(float(value) - float(expected)) <= 1e-12 * max(1.0, abs(float(expected)))
    return value == expected


def fill_deepspeed_config(ds_config: dict, cfg: RunConfig, path: str = "<deepspeed config>") -> dict:
    """A copy of ``ds_config`` with every run-config value filled in; contradictions raise ConfigError."""
    filled = copy.deepcopy(ds_config)
    for ds_key, (run_key, getter) in _DS_KEYS.items():
        expected = getter(cfg)
        value = filled.get(ds_key, "auto")
        if value != "auto" and not _equal(value, expected):
            raise _contradiction(path, ds_key, value, run_key, expected)
        filled[ds_key] = expected
    expected_total = cfg.train.batch_size * cfg.train.grad_accum * world_size()
    total = filled.get("train_batch_size", "auto")
    if total != "auto" and total != expected_total:
        raise _contradiction(
            path,
            "train_batch_size",
            total,
            "train.batch_size x train.grad_accum x processes",
            f"{cfg.train.batch_size} x {cfg.train.grad_accum} x {world_size()} = {expected_total}",
        )
    filled["train_batch_size"] = expected_total
    if "optimizer" in filled:
        _check_optimizer_section(filled.pop("optimizer"), cfg, path)
    if "scheduler" in filled:
        _check_scheduler_section(filled.pop("scheduler"), cfg, path)
    return filled


# DeepSpeed's compressed-communication optimizers (config "type", lower case) -> their names.
_ONEBIT_OPTIMIZERS = {"onebitadam": "1-bit Adam", "zerooneadam": "0/1 Adam", "onebitlamb": "1-bit LAMB"}


def _onebit_problem(kind: str, path: str) -> Optional[str]:
    """Why a 1-bit optimizer cannot run here, or None where it could.

    They compress the gradient exchange with DeepSpeed's own NCCL, MPI or HCCL backends (``comm_backend_name``),
    which work on CUDA/HPU tensors only: on gloo and CPU tensors there is nothing they can use. DeepSpeed
    0.19 removed them altogether (deepspeed/runtime/fp16/onebit is gone; DeepSpeed issue 8489). Read from the
    file system, not by importing torch or DeepSpeed, so it answers in preflight.
    """
    import importlib.metadata
    import importlib.util

    name = _ONEBIT_OPTIMIZERS[kind.lower()]
    spec = importlib.util.find_spec("deepspeed")  # a top-level find_spec imports nothing
    shipped = (
        spec is not None
        and spec.origin is not None
        and (Path(spec.origin).parent / "runtime" / "fp16" / "onebit").is_dir()
    )
    start = f"DeepSpeed config {path!r} asks for optimizer {kind!r} ({name})"
    if not cuda_present():
        return (
            f"{start}, which compresses communication through DeepSpeed's NCCL/MPI/HCCL GPU backends and cannot run on "
            "this machine (no CUDA GPU); on CPU use train.grad_compression=powersgd|fp16|bf16 without DeepSpeed "
            "(accelerate_configs/cpu_2proc.yaml)"
        )
    if not shipped:
        version = importlib.metadata.version("deepspeed") if spec is not None else "not installed"
        return (
            f"{start}, which the installed DeepSpeed ({version}) no longer ships; remove the optimizer section, "
            "or use train.grad_compression=powersgd|fp16|bf16 without DeepSpeed (accelerate_configs/multi_gpu.yaml)"
        )
    return None


def cuda_present() -> bool:
    """An NVIDIA driver with at least one GPU, without importing torch (preflight stays light)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def _check_optimizer_section(section: dict, cfg: RunConfig, path: str) -> None:
    """An Adam/AdamW section whose values agree with train.* is the loop's own AdamW: it is dropped."""
    kind = str(section.get("type", ""))
    problem = _onebit_problem(kind, path) if kind.lower() in _ONEBIT_OPTIMIZERS else None
    if problem is not None:
        raise ConfigError(problem)
    if kind.lower() not in ("adam", "adamw"):
        raise ConfigError(
            f"DeepSpeed config {path!r} asks for optimizer {kind!r}; accel_tasks trains with AdamW set by train.lr, "
            "train.weight_decay and train.adam_*; remove the optimizer section"
        )
    for name, value in (section.get("params") or {}).items():
        if name not in _OPTIMIZER_PARAMS:
            if name in ("adam_w_mode", "torch_adam") and value in (True, False):
                continue
            raise ConfigError(
                f"DeepSpeed config {path!r}: optimizer param {name!r} has no run-config equivalent; remove it"
            )
        run_key, getter = _OPTIMIZER_PARAMS[name]
        if value != "auto" and not _equal(value, getter(cfg)):
            raise _contradiction(path, f"optimizer.params.{name}", value, run_key, getter(cfg))


def _check_scheduler_section(section: dict, cfg: RunConfig, path: str) -> None:
    """A scheduler section is accepted only when it is the run config's train.lr_scheduler with ``auto`` values."""
    kind = str(section.get("type", ""))
    if _SCHEDULERS.get(kind) != cfg.train.lr_scheduler:
        same = [k for k, v in _SCHEDULERS.items() if v == cfg.train.lr_scheduler]
        hint = f'"type": "{same[0]}"' if same else "no scheduler section"
        raise ConfigError(
            f"DeepSpeed config {path!r} sets scheduler {kind!r} but the run config has train.lr_scheduler="
            f"{cfg.train.lr_scheduler}; remove the scheduler section (train.* drives the schedule) or use {hint}"
        )
    for name, value in (section.get("params") or {}).items():
        if value == "auto" or value in _SCHEDULER_FIXED_OK.get(name, ()):
            continue
        raise ConfigError(
            f'DeepSpeed config {path!r} sets scheduler.params.{name}={value}; set it to "auto" '
            "(filled from train.lr, train.warmup_* and the step count) or remove the scheduler section"
        )


def check_cpu_adam_settings(cfg: RunConfig) -> None:
    """accelerate swaps AdamW for DeepSpeedCPUAdam under ZeRO-Offload and keeps only lr and weight decay."""
    for key, default in _DS_CPU_ADAM_DEFAULTS.items():
        value = getattr(cfg.train, key)
        if value != default:
            raise ConfigError(
                f"train.{key}={value} would be ignored: under ZeRO-Offload the optimizer becomes DeepSpeedCPUAdam "
                f'with {key}={default}; use the default, or a DeepSpeed JSON with "zero_force_ds_cpu_optimizer": false '
                "(keeps torch AdamW on CPU, slower)"
            )
