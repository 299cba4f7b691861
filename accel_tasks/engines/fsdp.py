"""FSDP2 (torch's ``fully_shard``): the second engine beside DeepSpeed, the same project code on GPUs and CPUs.

Why not accelerate's FSDP plugin: accelerate runs no FSDP on CPU (an FSDP plugin with ``cpu=True`` becomes
MULTI_CPU and wraps the model in DDP; measured with accelerate 1.16), so the tests here could only ever run
DDP under an FSDP name. torch's FSDP2 runs on CPU over gloo and on GPUs over NCCL alike. So the launcher config
stays accelerate's own (``distributed_type: FSDP``, ``fsdp_version: 2``: ``accelerate launch`` turns it into the
``FSDP_*`` environment read here), the Accelerator is built as plain data parallel (MULTI_GPU, or MULTI_CPU with
``cpu=True``: loaders, RNG, schedule, gathers), and this module shards the model itself, as torchtune does:

- each repeated layer (the model's ``_no_split_modules``, or ``fsdp_transformer_layer_cls_to_wrap``) is its own
  ``fully_shard`` unit, then the root, over a 1-D mesh of every process;
- ``fsdp_reshard_after_forward: true`` is full shard (ZeRO-3-like), ``false`` grad-op shard (ZeRO-2-like: the
  parameters stay gathered from forward to backward); ``fsdp_offload_params`` is FSDP2's CPU offload;
- mixed precision from the launcher becomes FSDP2's policy: bf16 compute, fp32 master weights and reductions;
- ``fsdp_activation_checkpointing`` (or ``model.gradient_checkpointing=true``) is non-reentrant activation
  checkpointing, the kind that composes with FSDP2's hooks.

Gradients are reduce-scattered after every micro-batch, accumulation included: FSDP2's ``no_sync``
(``set_requires_gradient_sync(False)``) would save that communication but hold the full, unsharded gradients between
micro-batches (measured with bench/fsdp_memory.py: 10 bytes per parameter instead of 8, 0.625 of DDP's model states
instead of 0.5), and memory is what this engine is for.

The optimizer steps on the local shards (DTensor parameters); checkpoints hold the model and optimizer as a
``torch.distributed.checkpoint`` directory (:data:`SHARDED_DIR`), which reshards on load, so a checkpoint written by
N processes resumes on N' (and an eval-only run reads it into one process). The export gathers full weights.
Checks that need no model are :func:`check_fsdp_launch`; this module imports torch only inside functions.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from accel_tasks.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

# The directory of a checkpoint that holds the distributed checkpoint of the model and the optimizer.
SHARDED_DIR = "fsdp_state"
TRUE = ("true", "1", "yes")


@dataclass(frozen=True)
class FsdpSettings:
    """What the launcher's ``fsdp_config`` asks for, read from the environment ``accelerate launch`` sets."""

    reshard_after_forward: bool = True
    offload: bool = False
    wrap_classes: tuple[str, ...] = ()  # empty: the model's _no_split_modules
    wrap_layers: bool = True  # False: fsdp_auto_wrap_policy NO_WRAP, the root alone is one unit
    activation_checkpointing: bool = False

    @property
    def sharding(self) -> str:
        return "full shard" if self.reshard_after_forward else "grad-op shard"


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP (``distributed_type: FSDP`` in the accelerate config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in TRUE


def read_fsdp_settings() -> FsdpSettings:
    """The launcher's FSDP settings; a setting this engine cannot honour is a ConfigError naming the fix."""
    version = os.environ.get("FSDP_VERSION", "1").strip() or "1"
    if version != "2":
        raise ConfigError(
            f"the accelerate config asks for FSDP version {version}; accel_tasks runs FSDP2: set fsdp_version: 2 in "
            "its fsdp_config (fsdp_sharding_strategy FULL_SHARD becomes fsdp_reshard_after_forward: true, "
            "SHARD_GRAD_OP becomes false; `accelerate to-fsdp2 --config_file OLD --output_file NEW` converts it), "
            "or start from accelerate_configs/fsdp2.yaml"
        )
    policy = (
        os.environ.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP").strip().upper() or "TRANSFORMER_BASED_WRAP"
    )
    if policy not in ("TRANSFORMER_BASED_WRAP", "NO_WRAP"):
        raise ConfigError(
            f"fsdp_auto_wrap_policy {policy} is not supported here; use TRANSFORMER_BASED_WRAP (each layer of the "
            "model's _no_split_modules, or fsdp_transformer_layer_cls_to_wrap, is one unit) or NO_WRAP"
        )
    classes = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    return FsdpSettings(
        reshard_after_forward=_reshard_after_forward(os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true")),
        offload=os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() in TRUE,
        wrap_classes=tuple(name.strip() for name in classes.split(",") if name.strip()),
        wrap_layers=policy != "NO_WRAP",
        activation_checkpointing=os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "false").lower() in TRUE,
    )


def _reshard_after_forward(raw: str) -> bool:
    value = raw.strip().upper()
    if value in ("TRUE", "1", "FULL_SHARD"):
        return True
    if value in ("FALSE", "0", "SHARD_GRAD_OP"):
        return False
    raise ConfigError(
        f"fsdp_reshard_after_forward={raw!r}: use true (full shard) or false (grad-op shard: parameters stay "
        "gathered from forward to backward)"
    )


def check_fsdp_launch(deepspeed: bool, compile_requested: bool, grad_compression: Optional[str], mode: str) -> None:
    """FSDP with what cannot go with it, refused in one line before anything loads."""
    if not fsdp_requested():
        return
    read_fsdp_settings()
    if deepspeed:
        raise ConfigError(
            "the accelerate config asks for FSDP and the run for DeepSpeed (deepspeed=...); pick one engine: drop "
            "deepspeed= for FSDP2, or launch with a DeepSpeed config (accelerate_configs/deepspeed_zero3.yaml)"
        )
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if precision == "fp16":
        raise ConfigError(
            "FSDP2 here runs fp32 or bf16 (bf16 compute, fp32 master weights and reductions); fp16 needs a sharded "
            "loss scaler it does not have: launch with --mixed_precision bf16 (or no)"
        )
    if mode != "train":
        return
    if compile_requested:
        raise ConfigError(
            "train.compile (or --dynamo_backend) is not supported under FSDP2 here: the training forward would "
            "be traced through FSDP2's gather hooks, a path not run here; drop train.compile"
        )
    if grad_compression:
        raise ConfigError(
            f"train.grad_compression={grad_compression} compresses DDP's gradient all-reduce; FSDP2 "
            "reduce-scatters sharded gradients instead: drop train.grad_compression, or launch with "
            "accelerate_configs/multi_gpu.yaml (DDP)"
        )


@contextmanager
def plain_data_parallel_state() -> Iterator[None]:
    """While the Accelerator is built: hide the FSDP request, so accelerate sets up plain data parallel and leaves
    the sharding to this module (otherwise, on GPUs, its own plugin would shard the model a second time).
    cpu-RAM-efficient loading is switched off for the whole run (why: below)."""
    saved = os.environ.get("ACCELERATE_USE_FSDP")
    os.environ["ACCELERATE_USE_FSDP"] = "false"
    # Every process loads the weights, then shards them. With accelerate's cpu-RAM-efficient loading (its default
    # when the config omits it) transformers would leave new heads on the meta device outside process 0, for a
    # broadcast that only accelerate's own FSDP preparation makes.
    os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("ACCELERATE_USE_FSDP", None)
        else:
            os.environ["ACCELERATE_USE_FSDP"] = saved


def is_sharded(model: Any) -> bool:
    """Whether ``model`` is an FSDP2 module (sharded by :func:`shard_model`)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def wrap_units(model: torch.nn.Module, settings: FsdpSettings) -> list[torch.nn.Module]:
    """The modules sharded as their own units before the root (outermost matches only): the named layer classes,
    else the ``_no_split_modules`` of the model and its submodels, else the repeated layers of its layer stacks
    (a ModuleList of one class: Marian's and Speech2Text's encoder and decoder layers name no _no_split_modules)."""
    if not settings.wrap_layers:
        return []
    names = set(settings.wrap_classes) or _layer_classes(model)
    units: list[torch.nn.Module] = []
    for _, module in model.named_modules():
        if type(module).__name__ in names and not any(_contains(unit, module) for unit in units):
            units.append(module)
    if not units:
        raise ConfigError(
            f"no module of {type(model).__name__} is a {', '.join(sorted(names)) or 'repeated layer'}; set "
            "fsdp_transformer_layer_cls_to_wrap in the accelerate config to one of its layer classes, or "
            "fsdp_auto_wrap_policy: NO_WRAP"
        )
    return units


def _layer_classes(model: torch.nn.Module) -> set[str]:
    import torch

    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    if names:
        return names
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1:
            names.add(type(module[0]).__name__)
    return names


def _contains(outer: torch.nn.Module, inner: torch.nn.Module) -> bool:
    return any(module is inner for module in outer.modules())


def shard_model(model: torch.nn.Module, accelerator: Accelerator, settings: FsdpSettings) -> torch.nn.Module:
    """``fully_shard`` each unit of :func:`wrap_units`, then the root, over every process; the same object back.

    After this every parameter is a DTensor of which this process holds one shard (dim 0 split across the mesh).
    """
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    device = accelerator.device
    if not torch.distributed.is_initialized():
        # One process: accelerate starts no process group, and a device mesh needs one (teardown.py destroys it).
        backend = "gloo" if device.type == "cpu" else "nccl"
        torch.distributed.init_process_group(backend, store=torch.distributed.HashStore(), rank=0, world_size=1)
    mesh = init_device_mesh(device.type, (accelerator.num_processes,))
    options: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": settings.reshard_after_forward}
    if accelerator.mixed_precision == "bf16":
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if settings.offload:
        # Pinned memory needs an accelerator; on a CPU-only machine the shards live in plain memory anyway.
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    elif device.type != "cpu":
        model = model.to(device)
    if settings.activation_checkpointing or checkpointing_on(model):
        enable_checkpointing(model)
    units = wrap_units(model, settings)
    for unit in units:
        fully_shard(unit, **options)
    fully_shard(model, **options)
    # FSDP2 decides which module is the root at its first forward. Generation may first call a submodule (a PEFT
    # model's base model, an encoder), which would then become a root of its own and the real root's first forward
    # fail ("already been lazily initialized"): settle it now. Private, and guarded: no public call does this.
    lazy_init = getattr(getattr(model, "_get_fsdp_state", lambda: None)(), "_lazy_init", None)
    if lazy_init is not None:
        lazy_init()
    return model


def checkpointing_on(model: torch.nn.Module) -> bool:
    """Whether model.gradient_checkpointing=true switched it on (transformers 5 renamed the attribute)."""
    value = getattr(model, "is_activation_checkpointing", None)
    return bool(value if value is not None else getattr(model, "is_gradient_checkpointing", False))


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing: the reentrant kind re-runs forward outside FSDP2's hooks."""
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers 5's name
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def describe_sharding(model: torch.nn.Module, accelerator: Accelerator, settings: FsdpSettings) -> str:
    """The engine log line: which sharding, how many units, and what this process holds."""
    local = sum(_local_numel(p) for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    units = sum(1 for module in model.modules() if is_sharded(module)) - 1
    policy = "bf16 compute, fp32 reductions" if accelerator.mixed_precision == "bf16" else "fp32"
    plural = "es" if accelerator.num_processes != 1 else ""
    return (
        f"engine: FSDP2 {settings.sharding} over {accelerator.num_processes} process{plural}, {units} layer units "
        f"+ the root, offload {'on' if settings.offload else 'off'}, activation checkpointing "
        f"{'on' if checkpointing_on(model) else 'off'}, {policy}; this process holds {local:,} of "
        f"{total:,} parameters"
    )


def _local_numel(param: torch.Tensor) -> int:
    to_local = getattr(param, "to_local", None)
    return to_local().numel() if to_local is not None else param.numel()


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor parameter; any other tensor as it is."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


@contextmanager
def gathered_root(model: torch.nn.Module) -> Iterator[None]:
    """Keep the root unit's parameters (embeddings, heads) gathered while generating.

    ``generate`` calls submodules directly (an encoder-decoder's encoder, a PEFT model's base model), never the
    root's forward, so the root's own gather hook would not run and the shared embeddings would still be shards
    (the crash reported as transformers#30228). Layer units gather themselves.
    """
    if not is_sharded(model):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight gathered, on the main process only (CPU tensors); empty elsewhere. A collective.

    Tied weights (an embedding shared with the output layer) come back as separate copies under each name.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def without_tied_copies(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the first name of each shared parameter, as a plain ``save_pretrained`` writes them: the gathered copies
    of tied weights are separate tensors, which transformers no longer recognises as tied."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    repeated = every - {name for name, _ in model.named_parameters()}
    return {name: value for name, value in state.items() if name not in repeated}


def register_sharded_checkpoints(accelerator: Accelerator, model: torch.nn.Module, optimizer: Any) -> None:
    """Make ``accelerator.save_state`` / ``load_state`` write and read the model and optimizer as a distributed
    checkpoint in ``SHARDED_DIR`` (every process its shard); accelerate keeps the schedule, RNG and sampler.

    Neither the model nor the optimizer is registered with accelerate (``prepare`` would wrap the model in DDP,
    and ``save_state`` would pickle the optimizer's shards from the main process only).
    """
    inner = getattr(optimizer, "optimizer", optimizer)

    def save(_models: list, _weights: list, output_dir: str) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(model, inner)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=Path(output_dir) / SHARDED_DIR)

    def load(_models: list, input_dir: str) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optimizer_state = get_state_dict(model, inner)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=Path(input_dir) / SHARDED_DIR)
        set_state_dict(model, inner, model_state_dict=state["model"], optim_state_dict=state["optimizer"])

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def is_sharded_checkpoint(path: Path) -> bool:
    return (Path(path) / SHARDED_DIR / ".metadata").is_file()


def load_sharded_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    """The model part of an FSDP2 checkpoint, read whole into a plain model in this process (any process count
    wrote it); the optimizer part is not read."""
    import torch.distributed.checkpoint as dcp

    state = {"model": model.state_dict()}
    with warnings.catch_warnings():  # "torch.distributed is disabled ... load in a single process": as meant
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=Path(checkpoint) / SHARDED_DIR, no_dist=True)
    model.load_state_dict(state["model"])
