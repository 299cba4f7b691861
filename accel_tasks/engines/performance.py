"""The GPU path: fused AdamW, TF32 matmuls, SDPA attention, lengths padded to multiples of 8 under mixed
precision, and torch.compile of the training forward.

Why one module: every switch is a small function of the device type and the run config, so the CUDA choices
are unit-tested on a CPU machine by passing ``device_type="cuda"``; the loop, ``modeling`` and the recipes'
collators only ask. torch is imported inside the functions that need it, so importing this module is free.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Optional

from accel_tasks.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from accel_tasks.config import TrainConfig

# Device types whose AdamW runs as one fused kernel over every parameter (the Trainer's default optim,
# adamw_torch_fused, on both). On CPU, for the bundled 1.06M-parameter Marian, one step took 1.8-2.5 ms fused
# against 6.9-9.1 ms for the foreach kernel (1 thread): about 4% of a training step.
FUSED_ADAMW_DEVICES = ("cuda", "cpu")
# Tensor cores multiply half-precision tiles in multiples of 8 elements: padded lengths that are multiples of 8
# keep every matmul on them (transformers' examples use the same 8 under fp16/bf16).
PAD_MULTIPLE = 8
HALF_PRECISIONS = ("fp16", "bf16", "fp8")
# accelerate's environment for `accelerate launch --dynamo_backend X`; the loop compiles instead of accelerate
# (whose prepare() wraps the model so that checkpoints get `_orig_mod.` keys).
DYNAMO_ENV = "ACCELERATE_DYNAMO_"
DEFAULT_COMPILE_BACKEND = "inductor"


def fused_adamw(device_type: str, optimizer_offloaded: bool = False) -> bool:
    """Whether AdamW should be the fused kernel: on CUDA and CPU, unless DeepSpeed's offload owns the optimizer step."""
    return device_type in FUSED_ADAMW_DEVICES and not optimizer_offloaded


def build_adamw(
    param_groups: list[dict[str, Any]], tcfg: TrainConfig, device_type: str, optimizer_offloaded: bool = False
) -> torch.optim.AdamW:
    """The run's AdamW (train.lr, betas, epsilon; weight decay per group), fused where :func:`fused_adamw` says.

    Built before ``accelerator.prepare`` moves the weights: torch checks a fused optimizer's devices at its first
    step, and under DeepSpeed this same object is the client optimizer that DeepSpeed wraps.
    """
    import torch

    kwargs: dict[str, Any] = {"lr": tcfg.lr, "betas": (tcfg.adam_beta1, tcfg.adam_beta2), "eps": tcfg.adam_epsilon}
    if fused_adamw(device_type, optimizer_offloaded):
        kwargs["fused"] = True
    return torch.optim.AdamW(param_groups, **kwargs)


def pad_multiple(mixed_precision: str) -> Optional[int]:
    """What collators pad lengths up to: 8 under fp16/bf16 (tensor cores), None (the longest row) in fp32."""
    return PAD_MULTIPLE if str(mixed_precision).lower() in HALF_PRECISIONS else None


def tf32_applies(device_type: str, enabled: bool) -> bool:
    """TF32 is a CUDA setting (Ampere and newer; older GPUs ignore it); the CPU's fp32 is left alone."""
    return enabled and device_type == "cuda"


def set_tf32(device_type: str, enabled: bool) -> bool:
    """fp32 matmuls on TF32 tensor cores where :func:`tf32_applies`; returns whether TF32 is on.

    ``set_float32_matmul_precision`` rather than torch 2.9's ``fp32_precision`` attributes: it sets the legacy
    ``allow_tf32`` flag and the new setting together, while setting only the new one makes every later read of
    ``allow_tf32`` (libraries still read it) raise "mix of the legacy and new APIs". cuDNN convolutions use
    TF32 by default already.
    """
    if device_type != "cuda":
        return False
    import torch

    torch.set_float32_matmul_precision("high" if enabled else "highest")
    return enabled


def attention_kwargs(requested: Optional[str]) -> dict[str, str]:
    """``from_pretrained`` / ``from_config`` keyword arguments for model.attn_implementation.

    None passes nothing: transformers 5 then takes SDPA (torch's fused ``scaled_dot_product_attention``) for every
    model class that supports it and eager attention for the others, which is the choice wanted here; a value
    (eager, sdpa, flash_attention_2, flex_attention, a kernels repo) is passed as given and checked by transformers.
    """
    return {"attn_implementation": requested} if requested else {}


def attention_in_use(model: Any) -> Optional[str]:
    """The attention implementation a loaded model runs (``config._attn_implementation``), for the log."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) if config is not None else None


def compile_settings(train_compile: bool, environ: Optional[Mapping[str, str]] = None) -> Optional[dict[str, Any]]:
    """``torch.compile`` keyword arguments for the training forward, or None (no compiling).

    ``train.compile=true`` compiles with inductor; ``accelerate launch --dynamo_backend X`` (and its
    ``--dynamo_mode``, ``--dynamo_use_fullgraph``, ``--dynamo_use_dynamic``) asks for the same with backend X.
    """
    env = os.environ if environ is None else environ
    backend = (env.get(DYNAMO_ENV + "BACKEND") or "no").strip().lower()
    if backend == "no" and not train_compile:
        return None
    settings: dict[str, Any] = {"backend": DEFAULT_COMPILE_BACKEND if backend == "no" else backend}
    mode = env.get(DYNAMO_ENV + "MODE")
    if mode and mode != "default":
        settings["mode"] = mode
    if _env_flag(env.get(DYNAMO_ENV + "USE_FULLGRAPH")):
        settings["fullgraph"] = True
    dynamic = env.get(DYNAMO_ENV + "USE_DYNAMIC")
    if dynamic is not None and dynamic.strip():
        settings["dynamic"] = _env_flag(dynamic)
    return settings


def _env_flag(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "y", "on")


def check_compile_supported(settings: Optional[dict[str, Any]], deepspeed: bool) -> None:
    """train.compile under DeepSpeed is refused before anything loads.

    DeepSpeed compiles its module in place (``engine.compile``), so evaluation's ``generate`` would run
    through the compiled graph too, recompiling for every new length; that path has not been run here.
    """
    if settings is not None and deepspeed:
        raise ConfigError(
            "train.compile (or accelerate's --dynamo_backend) is not supported under DeepSpeed here: "
            "DeepSpeed compiles its module in place and evaluation would generate through the compiled graph; "
            "drop train.compile, or run without DeepSpeed (accelerate_configs/single_gpu.yaml, multi_gpu.yaml)"
        )


def compile_for_training(model: torch.nn.Module, settings: Optional[dict[str, Any]]) -> torch.nn.Module:
    """What the training step calls: ``torch.compile(model)``, or the model itself when not compiling.

    The compiled wrapper shares the model's parameters and is used only for the training forward (its backward
    is compiled with it); the model itself stays what is checkpointed, exported and evaluated, so state dicts
    keep their keys (no ``_orig_mod.``) and generation stays eager (its shapes change every step).
    """
    if settings is None:
        return model
    import torch

    return torch.compile(model, **settings)


def describe(**switches: Any) -> str:
    """One log line of the speed switches in effect: ``speed: name=value ...`` (None and False read "off")."""

    def shown(value: Any) -> str:
        if value is None or value is False:
            return "off"
        if value is True:
            return "on"
        if isinstance(value, dict):
            return ",".join(f"{k}:{v}" for k, v in value.items())
        return str(value)

    return "speed: " + " ".join(f"{name}={shown(value)}" for name, value in switches.items())
