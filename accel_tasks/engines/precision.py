"""The precision a run's evaluations compute in (``eval.precision``): saved by a training run, adopted by eval-only.

Why: "bf16" is another computation on each engine, and each gives other figures for the same weights:

- plain and DDP: accelerate's bf16 autocast over the weights as they are (fp32): ``bf16``;
- DeepSpeed: the parameters themselves in bf16 (buffers stay fp32), no autocast: ``bf16-weights``;
- FSDP2 (``MixedPrecisionPolicy``): bf16 copies of the fp32 parameters, each layer unit's floating inputs cast to
  bf16, under accelerate's autocast: ``bf16-fsdp2``.

(``fp16`` and ``fp16-weights`` likewise; ``no``: no mixed precision, the weights as saved.) So an export scored in
fp32 after a bf16 run gave other figures than the run's final eval. A training run now writes the one its evals ran
in into the session's config (config.yaml, each checkpoint, the export's accel_tasks_config.yaml and its card hold
it), and an eval-only or predict run of that model computes in it whatever the launcher's ``--mixed_precision``
says (the saved settings come back through preflight), with one notice line; ``eval.precision=launcher`` (or any
other value) overrides it.

A plain engine (one process, or DDP) computes each of them: ``bf16``/``fp16`` as accelerate's mixed precision, the
``-weights`` ones with the parameters cast and autocast off, ``bf16-fsdp2`` with the parameters cast under
autocast: all of FSDP2's bf16 but its per-unit input cast, so that one is close to the run's figures, not exact.
DeepSpeed and FSDP2 compute only their own (FSDP2 exactly only with the run's fsdp_config); another one asked of
them is said in the notice. This module imports torch only inside functions.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from accel_tasks.config import RunConfig
from accel_tasks.errors import ConfigError

if TYPE_CHECKING:
    import torch

LAUNCHER = "launcher"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
WEIGHTS = "-weights"
FSDP2 = "-fsdp2"
DESCRIPTIONS = {
    "no": "no mixed precision, the weights as saved",
    "bf16": "bf16 autocast over the weights as saved, as plain and DDP runs compute",
    "fp16": "fp16 autocast over the weights as saved, as plain and DDP runs compute",
    "fp8": "accelerate's fp8 over the weights as saved",
    "bf16-weights": "the weights cast to bf16, no autocast, as DeepSpeed's bf16 computes",
    "fp16-weights": "the weights cast to fp16, no autocast, as DeepSpeed's fp16 computes",
    "bf16-fsdp2": "bf16 copies of the weights under bf16 autocast, as FSDP2's bf16 computes",
}


def engine_precision(mixed_precision: str, deepspeed: bool, fsdp: bool) -> str:
    """How an engine computes under the Accelerator's ``mixed_precision``, as an ``eval.precision`` value."""
    if mixed_precision in ("bf16", "fp16") and deepspeed:
        return mixed_precision + WEIGHTS
    if mixed_precision == "bf16" and fsdp:
        return mixed_precision + FSDP2
    return mixed_precision


def requested_precision(cfg: RunConfig) -> Optional[str]:
    """The precision an eval-only or predict run is asked for (saved with its model, or set); None where the
    launcher decides: a training run, ``eval.precision`` unset or ``launcher``."""
    value = cfg.eval.precision
    return None if cfg.mode == "train" or value in (None, LAUNCHER) else str(value)


def accelerator_settings(cfg: RunConfig) -> tuple[Optional[str], list[Any]]:
    """(``mixed_precision`` for the Accelerator, its kwargs handlers) for the requested precision; (None, []) where
    the launcher decides. The ``-weights`` precisions switch accelerate's autocast off: their engine has none."""
    precision = requested_precision(cfg)
    if precision is None:
        return None, []
    import torch
    from accelerate.utils import AutocastKwargs

    half = precision.split("-")[0]
    cuda = torch.cuda.is_available()
    if (half == "fp16" and not cuda) or (half == "bf16" and cuda and not torch.cuda.is_bf16_supported()):
        lacks = "no GPU" if not cuda else "its GPU has no bf16"
        raise ConfigError(
            f"eval.precision={precision} computes in {half}, which this machine cannot ({lacks}); "
            "eval.precision=launcher scores in the launcher's precision (the figures may then differ from the run's)"
        )
    return half, [AutocastKwargs(enabled=False)] if precision.endswith(WEIGHTS) else []


def run_precision(cfg: RunConfig, mixed_precision: str, deepspeed: bool, fsdp: bool) -> str:
    """What this run's evals compute in, the value its config saves: the requested precision on a plain engine
    (which computes each one), else the engine's own."""
    requested = requested_precision(cfg)
    if requested is None or deepspeed or fsdp:
        return engine_precision(mixed_precision, deepspeed, fsdp)
    return requested


def precision_notice(cfg: RunConfig, mixed_precision: str, deepspeed: bool, fsdp: bool) -> Optional[str]:
    """The one line where the evals compute otherwise than the launcher says, or than was asked; None: as both say."""
    own = engine_precision(mixed_precision, deepspeed, fsdp)
    asked = requested_precision(cfg)
    if asked is None:
        value = cfg.eval.precision
        if cfg.mode != "train" or value in (None, LAUNCHER, own):
            return None
        return (
            f"eval.precision={value} is for eval-only runs: a training run's evals compute in its launcher's "
            f"precision, here {own} ({DESCRIPTIONS.get(own, own)}), which its export saves"
        )
    engine = "DeepSpeed" if deepspeed else "FSDP2" if fsdp else None
    if engine is not None and own != asked:
        return (
            f"eval.precision={asked} ({DESCRIPTIONS.get(asked, asked)}) is not how {engine} computes: this run "
            f"computes {own} ({DESCRIPTIONS.get(own, own)}), so its figures may differ from the run that saved "
            f"{asked}; an eval-only run without DeepSpeed or FSDP (one process, or DDP) computes {asked}"
        )
    if asked.endswith(FSDP2) and not fsdp:
        return (
            f"eval.precision={asked}: {DESCRIPTIONS[asked]}, but without FSDP2 no layer's inputs are cast to bf16 as "
            "FSDP2 casts them, so the figures may differ slightly from the run's; under FSDP2 with the run's "
            "fsdp_config (any number of processes) they are the run's"
        )
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if asked == engine_precision(launcher, deepspeed, fsdp):
        return None
    return (
        f"eval.precision={asked}: {DESCRIPTIONS.get(asked, asked)}, not the launcher's --mixed_precision {launcher} "
        "(a training run saves the precision its evals ran in with its model; eval.precision=launcher uses the "
        "launcher's)"
    )


def weights_dtype(precision: str) -> Optional[torch.dtype]:
    """The dtype the parameters are cast to for ``precision`` on a plain engine; None: the weights as saved."""
    import torch

    if not precision.endswith((WEIGHTS, FSDP2)):
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision.split("-")[0]]


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype, keep: frozenset[str] = frozenset()) -> torch.nn.Module:
    """The model with its floating parameters in ``dtype`` (but those named in ``keep``) and its buffers as they
    were: what DeepSpeed's engine does under bf16/fp16 (0.19: "cast params only; preserve fp32 buffers", e.g.
    rotary inv_freq) and what FSDP2's policy computes with. The same object back."""
    for name, param in model.named_parameters():
        if name not in keep and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    return model


def adapter_kept_in_fp32(model: torch.nn.Module, precision: str, source: Optional[str]) -> frozenset[str]:
    """Under a ``-weights`` precision, the adapter parameters a plain engine leaves in fp32 (the dtype PEFT loads
    them in): those of an adapter that was saved in fp32.

    Why: DeepSpeed computes each parameter in the dtype it holds it in, and the export saves it so. ZeRO-3 casts
    only what ``zero.Init`` built, the base model: an adapter added afterwards computes and is saved in fp32.
    ZeRO 0-2 cast every parameter: their adapters are saved in bf16/fp16 (and PEFT loads them back in fp32).
    """
    path = Path(source) / ADAPTER_WEIGHTS if source else None
    adapter = getattr(model, "active_adapter", None)
    if not precision.endswith(WEIGHTS) or path is None or not path.is_file() or not isinstance(adapter, str):
        return frozenset()
    from safetensors import safe_open

    with safe_open(str(path), "pt") as saved:
        dtypes = {saved.get_slice(key).get_dtype() for key in saved.keys()}
    if dtypes <= {"BF16", "F16"}:
        return frozenset()
    return frozenset(name for name, _ in model.named_parameters() if f".{adapter}." in name)


@contextmanager
def torch_linear() -> Iterator[None]:
    """torch's own ``F.linear`` while scoring, where DeepSpeed's ZeRO-3 ``zero.Init`` replaced it.

    Why: ``zero.Init`` swaps ``torch.nn.functional.linear`` for its memory-saving autograd function for the rest of
    the process, and that adds the bias after the matmul (two roundings) where torch fuses it: in bf16 that alone
    changed 2 of 12 predictions of a tiny Qwen2 (biased q/k/v) between a ZeRO-3 run's final eval and the same
    weights in a plain model. Scoring runs no backward, so the swap saves nothing there: with torch's own function
    a ZeRO-3 eval computes as every other engine does. Read from DeepSpeed only where it is already imported.
    """
    partition = sys.modules.get("deepspeed.runtime.zero.partition_parameters")
    original = getattr(getattr(partition, "InsertPostInitMethodToModuleSubClasses", None), "linear_bk", None)
    if original is None:
        yield
        return
    import torch.nn.functional as functional

    replaced = functional.linear
    functional.linear = original
    try:
        yield
    finally:
        functional.linear = replaced
