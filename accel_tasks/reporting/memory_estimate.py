"""Memory needed for model states (weights, gradients, Adam states) under ZeRO 0-3 and FSDP2, with and without offload.

Two estimates side by side, per GPU and per node of CPU RAM:

* the ZeRO paper's formulas for mixed-precision Adam (2 bytes fp16/bf16 weights + 2 bytes gradients +
  12 bytes fp32 master weights, momentum and variance = 16 bytes per parameter, Psi parameters, N GPUs,
  M nodes): ZeRO-0 16Psi, ZeRO-1 4Psi + 12Psi/N, ZeRO-2 2Psi + 14Psi/N, ZeRO-3 16Psi/N. Offloading the
  optimizer moves the 12Psi fp32 states and fp32 gradients (16Psi in all) into CPU RAM, spread over the
  nodes; offloading parameters too moves the 2Psi weights as well (18Psi).
* the same 16 bytes per parameter for FSDP2 (torch's ``fully_shard``, bf16 compute), counted as FSDP2 holds them:
  fp32 sharded parameters (the master weights), fp32 sharded gradients and Adam states, all /N, plus the bf16
  parameters while gathered (see :func:`fsdp_formula`).
* DeepSpeed's own "cold" estimators (``estimate_zero2/3_model_states_mem_needs``, with their 1.5x
  CPU buffer factor and the largest layer gathered in full under ZeRO-3), where DeepSpeed has one (none for FSDP2).

Activations, temporary buffers and the CUDA context come on top: the numbers say what cannot fit, not
what surely will.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import click

from accel_tasks.errors import ConfigError

GIB = 1024**3
# Offload choices in the order they trade speed for memory.
OFFLOADS = ("none", "optimizer", "optimizer+params")
# FSDP2 settings as (stage it partitions like, offload), least memory-saving first: grad-op shard (2: parameters
# stay gathered from forward to backward), full shard (3), then both with FSDP2's CPUOffloadPolicy ("cpu").
FSDP_SETTINGS = ((2, "none"), (3, "none"), (2, "cpu"), (3, "cpu"))


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts that the estimates need; tied weights are counted once."""

    name: str
    params: int
    largest_layer: int


@dataclass(frozen=True)
class Estimate:
    """Model-state bytes of one ZeRO or FSDP2 setting; None where the estimator does not exist.

    FSDP2 rows reuse ``stage`` for the ZeRO stage they partition like (engines/fsdp.py draws the same analogy):
    3 is full shard, 2 is grad-op shard (gradients and optimizer state sharded, parameters gathered through the
    step). Their ``offload`` is "none" or "cpu" (CPUOffloadPolicy: shards, gradients and the step on the CPU).
    """

    stage: int
    offload: str
    gpu_formula: float
    cpu_formula: float
    gpu_deepspeed: Optional[int] = None
    cpu_deepspeed: Optional[int] = None
    engine: str = "ZeRO"  # or "FSDP2"

    @property
    def label(self) -> str:
        if self.engine == "FSDP2":
            sharding = "full shard" if self.stage == 3 else "grad-op shard"
            return f"FSDP2 {sharding}" + ("" if self.offload == "none" else " + CPU offload")
        return f"ZeRO-{self.stage}" + ("" if self.offload == "none" else f" + offload {self.offload}")

    @property
    def preference(self) -> tuple[bool, bool, bool]:
        """Sort key of :func:`recommend`, fastest first: no offload before offload (the step and the shards
        cross PCIe), then settings that gather the parameters once per step (ZeRO 0-2, FSDP2 grad-op shard) before
        those that gather them again for backward (ZeRO-3, FSDP2 full shard: 1.5x the traffic), then ZeRO before
        FSDP2 (ties keep the ZeRO picks of before, and ZeRO rows have DeepSpeed's estimator as a second check)."""
        return (self.offload != "none", self.stage == 3, self.engine != "ZeRO")


def model_size(model: Any, name: str = "") -> ModelSize:
    """Parameters (shared ones once) and the largest module's own parameters (ZeRO-3 gathers it whole)."""
    params = sum(p.numel() for p in model.parameters())
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    return ModelSize(name=name or type(model).__name__, params=params, largest_layer=largest)


def model_size_from_config(
    source: str, auto_model_class: str, trust_remote_code: bool = False, revision: str = "main"
) -> ModelSize:
    """Build the model on the meta device from its config: no weights are read or allocated."""
    import torch
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the model config of {source!r}: {str(exc).splitlines()[0]}") from None
    auto_model = getattr(transformers, auto_model_class)
    with torch.device("meta"):
        model = auto_model.from_config(config, trust_remote_code=trust_remote_code)
    return model_size(model, type(model).__name__)


def zero_formula(params: int, stage: int, offload: str, gpus_per_node: int, nodes: int) -> tuple[float, float]:
    """(bytes per GPU, bytes of CPU RAM per node) for mixed-precision Adam, from the ZeRO papers."""
    n = gpus_per_node * nodes
    psi = float(params)
    if offload == "none":
        gpu = {0: 16 * psi, 1: 4 * psi + 12 * psi / n, 2: 2 * psi + 14 * psi / n, 3: 16 * psi / n}[stage]
        return gpu, 0.0
    if stage == 0:
        raise ValueError("DeepSpeed offload needs ZeRO stage 1 or higher")
    if offload == "optimizer":
        # fp32 master weights + Adam states (12) and fp32 gradients (4) live in CPU RAM, partitioned over all GPUs.
        gpu = {1: 4 * psi, 2: 2 * psi, 3: 2 * psi / n}[stage]
        return gpu, 16 * psi / nodes
    if stage != 3:
        raise ValueError("parameter offload needs ZeRO stage 3")
    return 0.0, 18 * psi / nodes


def fsdp_formula(
    size: ModelSize, full_shard: bool, offload: bool, gpus_per_node: int, nodes: int
) -> tuple[float, float]:
    """(bytes per GPU, bytes of CPU RAM per node) under FSDP2 with bf16 compute and mixed-precision Adam.

    The same 16 bytes per parameter as the ZeRO rows, held differently: FSDP2 keeps no persistent 16-bit copy. Its
    sharded parameters are the fp32 master weights (4), gradients are reduced into fp32 shards (4), Adam's
    momentum and variance are fp32 (8): 16Psi/N on each of the N processes. The bf16 parameters exist only while a
    unit is gathered, so they are counted as that working set:

    * full shard (``fsdp_reshard_after_forward: true``): 16Psi/N + 4L. L is the largest layer's parameters,
      gathered in bf16 (2 bytes) twice over, the unit computing and the one prefetched. A unit (a whole block, or
      the root's remainder) holds at least that layer, so 4L is a floor, as the numbers are a floor throughout.
    * grad-op shard (``false``): 2Psi + 16Psi/N. Every unit stays gathered from its forward to its backward, so
      at the end of forward the whole model is resident in bf16 (2Psi), on top of the fp32 shards.
    * CPU offload (``fsdp_offload_params: true``): the fp32 shards, gradients and Adam states (16Psi/N per
      process) live in CPU RAM, so a node holds that times its processes; the GPU keeps only the gathered bf16
      units: 4L under full shard, 2Psi under grad-op shard.
    """
    n = gpus_per_node * nodes
    psi = float(size.params)
    shard = 16 * psi / n
    gathered = 4.0 * size.largest_layer if full_shard else 2 * psi
    if offload:
        return gathered, 16 * psi * gpus_per_node / n
    return gathered + shard, 0.0


def deepspeed_estimate(
    size: ModelSize, stage: int, offload: str, gpus_per_node: int, nodes: int
) -> tuple[Optional[int], Optional[int]]:
    """DeepSpeed's own estimator for ZeRO-2 and ZeRO-3 (it has none for 0 and 1)."""
    if stage == 2:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        cpu, gpu = estimate_zero2_model_states_mem_needs(
            size.params, gpus_per_node, nodes, cpu_offload=offload != "none"
        )
        return gpu, cpu
    if stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            size.params,
            size.largest_layer,
            gpus_per_node,
            nodes,
            cpu_offload=offload != "none",
            cpu_offload_params=offload == "optimizer+params",
            zero_init=True,
        )
        return gpu, cpu
    return None, None


def settings() -> list[tuple[int, str]]:
    """Every ZeRO setting DeepSpeed supports, least memory-saving first."""
    return [
        (0, "none"),
        (1, "none"),
        (2, "none"),
        (3, "none"),
        (1, "optimizer"),
        (2, "optimizer"),
        (3, "optimizer"),
        (3, "optimizer+params"),
    ]


def estimate_all(size: ModelSize, gpus_per_node: int, nodes: int, use_deepspeed: bool = True) -> list[Estimate]:
    """The ZeRO rows of :func:`settings`, then the FSDP2 rows of :data:`FSDP_SETTINGS` (no DeepSpeed estimate)."""
    if gpus_per_node < 1 or nodes < 1:
        raise ConfigError(f"--gpus-per-node and --nodes must be at least 1, got {gpus_per_node} and {nodes}")
    estimates = []
    for stage, offload in settings():
        gpu, cpu = zero_formula(size.params, stage, offload, gpus_per_node, nodes)
        ds_gpu, ds_cpu = (
            deepspeed_estimate(size, stage, offload, gpus_per_node, nodes) if use_deepspeed else (None, None)
        )
        estimates.append(Estimate(stage, offload, gpu, cpu, ds_gpu, ds_cpu))
    for stage, offload in FSDP_SETTINGS:
        gpu, cpu = fsdp_formula(size, stage == 3, offload == "cpu", gpus_per_node, nodes)
        estimates.append(Estimate(stage, offload, gpu, cpu, engine="FSDP2"))
    return estimates


def recommend(estimates: Sequence[Estimate], gpu_memory_gib: float) -> Optional[Estimate]:
    """The fastest setting whose model states fit, by :attr:`Estimate.preference` (the order of ``estimates``
    breaks ties, so the ZeRO rows keep their order of before: lower stage first, optimizer before parameters).

    With every row: ZeRO-0, 1, 2, FSDP2 grad-op shard, ZeRO-3, FSDP2 full shard, then the offloaded ones in the same
    order. Grad-op shard comes before full shard because it gathers the parameters once per step, not twice.
    """
    limit = gpu_memory_gib * GIB
    for estimate in sorted(estimates, key=lambda e: e.preference):
        worst = max(estimate.gpu_formula, estimate.gpu_deepspeed or 0)
        if worst <= limit:
            return estimate
    return None


def format_bytes(value: Optional[float]) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1 ("-" for no estimate)."""
    if value is None:
        return "-"
    for unit, size in (("TiB", 1024**4), ("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= size:
            return f"{value / size:,.2f} {unit}"
    return f"{value:,.0f} B"


def format_report(
    size: ModelSize, estimates: Sequence[Estimate], gpus_per_node: int, nodes: int, gpu_memory_gib: float
) -> str:
    lines = [
        f"{size.name}: {size.params:,} parameters (largest layer {size.largest_layer:,}); "
        f"{nodes} node(s) x {gpus_per_node} GPU(s) = {nodes * gpus_per_node} GPUs; mixed-precision Adam",
        "model states only (activations and buffers come on top); formula = ZeRO paper (FSDP2: the same 16 bytes "
        "per parameter, sharded, + gathered bf16), DeepSpeed = its cold estimator",
        "",
        f"{'setting':<33} {'per GPU formula':>16} {'per GPU DeepSpeed':>18} "
        f"{'CPU/node formula':>17} {'CPU/node DeepSpeed':>19}  fits {gpu_memory_gib:g} GiB",
    ]
    for est in estimates:
        fits = max(est.gpu_formula, est.gpu_deepspeed or 0) <= gpu_memory_gib * GIB
        lines.append(
            f"{est.label:<33} {format_bytes(est.gpu_formula):>16} {format_bytes(est.gpu_deepspeed):>18} "
            f"{format_bytes(est.cpu_formula):>17} {format_bytes(est.cpu_deepspeed):>19}  {'yes' if fits else 'no'}"
        )
    choice = recommend(estimates, gpu_memory_gib)
    lines.append("")
    if choice is None:
        lines.append(f"nothing fits {gpu_memory_gib:g} GiB per GPU: add GPUs or nodes, or use a smaller model / PEFT")
    else:
        config = _config_for(choice)
        lines.append(
            f"pick {choice.label}: the fastest setting whose model states fit {gpu_memory_gib:g} GiB per GPU "
            f"(accelerate_configs/{config}); leave room for activations"
        )
    return "\n".join(lines)


def _config_for(estimate: Estimate) -> str:
    """The shipped launcher config of a setting, with the keys to change in it."""
    if estimate.engine == "FSDP2":
        changes = (["fsdp_reshard_after_forward: false"] if estimate.stage == 2 else []) + (
            ["fsdp_offload_params: true"] if estimate.offload == "cpu" else []
        )
        return "fsdp2.yaml" + (f" with {', '.join(changes)}" if changes else "")
    if estimate.offload == "optimizer+params":
        return "deepspeed_zero3_offload.yaml"
    if estimate.offload == "optimizer":
        return f"deepspeed_zero{estimate.stage}.yaml with offload_optimizer_device: cpu"
    return {0: "multi_gpu.yaml", 1: "deepspeed_zero1.yaml", 2: "deepspeed_zero2.yaml", 3: "deepspeed_zero3.yaml"}[
        estimate.stage
    ]


@click.command(
    name="estimate-memory",
    context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]},
    epilog="Example: accel-tasks estimate-memory recipe=summarization model.name_or_path=facebook/bart-large "
    "--gpus-per-node 8 --nodes 1",
)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--config", "config_file", metavar="FILE.yaml", help="A run config; key=value overrides win over it.")
@click.option("--gpus-per-node", default=8, show_default=True, type=int, help="GPUs (processes) per node.")
@click.option("--nodes", default=1, show_default=True, type=int, help="Number of nodes.")
@click.option(
    "--gpu-memory",
    default=80.0,
    show_default=True,
    type=float,
    help="Memory of one GPU in GiB, to say which setting fits.",
)
def estimate_memory_cli(
    overrides: tuple[str, ...], config_file: Optional[str], gpus_per_node: int, nodes: int, gpu_memory: float
) -> None:
    """Model-state memory per GPU and per node for ZeRO 0-3 and FSDP2, with and without CPU offload."""
    from accel_tasks.models.loading import load_model_config, resolve_model_source
    from accel_tasks.preflight import resolve_config

    cfg, recipe_cls = resolve_config(overrides, config_file)
    recipe = recipe_cls(cfg)
    default_dir = recipe.default_model_dir() if cfg.model.name_or_path is None else None
    source = resolve_model_source(cfg.model, default_dir)
    model_class = recipe.auto_model_class_for(load_model_config(cfg.model, default_dir))
    size = model_size_from_config(source, model_class, cfg.model.trust_remote_code, cfg.model.revision)
    click.echo(format_report(size, estimate_all(size, gpus_per_node, nodes), gpus_per_node, nodes, gpu_memory))
    if cfg.peft.method:
        click.echo(
            "note: the estimate assumes full fine-tuning; with PEFT only the adapter has gradients and Adam states"
        )
