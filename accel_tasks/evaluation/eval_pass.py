"""The evaluation pass shared by periodic eval, final eval and eval-only runs.

Outputs are padded across processes, gathered with ``gather_for_metrics`` (each example counted once
on any number of processes) and put back in input order before the recipe postprocesses them.
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from accel_tasks import log
from accel_tasks.config import RunConfig
from accel_tasks.data.sampling import feature_lengths
from accel_tasks.engines.accelerator import cast_floating_inputs, unwrap_model, zero_stage
from accel_tasks.engines.fsdp import gathered_root, is_sharded
from accel_tasks.engines.precision import torch_linear
from accel_tasks.errors import ConfigError
from accel_tasks.evaluation.batching import (
    BatchPlan,
    PlannedBatches,
    padded_tokens,
    place_rows,
    token_budget_batches,
)
from accel_tasks.recipe import EvalOutput, Recipe, pad_value_for

if TYPE_CHECKING:
    import datasets
    import torch
    from accelerate import Accelerator
    from evaluate import EvaluationModule


def load_metrics(names: list[str]) -> dict[str, EvaluationModule]:
    """Load every metric up front so a bad id fails before the model is trained."""
    from accel_tasks.metrics import MetricLoadError, load_metric

    if not names:
        raise ConfigError("no metric configured: set eval.metrics=[name,...]")
    try:
        return {_metric_label(name): load_metric(name) for name in names}
    except MetricLoadError as exc:
        raise ConfigError(str(exc)) from None


def _metric_label(name: str) -> str:
    return (
        Path(name.rstrip("/")).stem
        if ("/" in name or name.endswith(".py")) and Path(name).exists()
        else name.rsplit("/", 1)[-1]
    )


def length_order(features: datasets.Dataset, column: str) -> Optional[np.ndarray]:
    """Longest first, so similar lengths share a batch and an out-of-memory shows up at once."""
    lengths = feature_lengths(features, column)
    return None if lengths is None else np.argsort(-lengths, kind="stable")


def budget_plan(
    accelerator: Accelerator, recipe: Recipe, features: datasets.Dataset, cfg: RunConfig
) -> Optional[BatchPlan]:
    """The batches of ``eval.max_tokens_per_batch`` (None when unset, or when the features have no length to
    measure)."""
    budget = cfg.eval.max_tokens_per_batch
    if not budget:
        return None
    lengths = feature_lengths(features, recipe.length_column)
    if lengths is None:
        log.info(
            f"eval.max_tokens_per_batch: the eval features have no {recipe.length_column!r} column to measure; "
            "batches of eval.batch_size instead"
        )
        return None
    batches = token_budget_batches(lengths, budget)
    sizes = [len(b) for b in batches]
    if sizes:
        log.info(
            f"eval: {len(features)} features in {len(batches)} batches of {min(sizes)}-{max(sizes)} rows under "
            f"{budget} tokens ({padded_tokens(lengths, batches)} padded positions for {int(lengths.sum())} tokens)"
        )
    return BatchPlan(batches, accelerator.num_processes)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    # bf16 has no numpy dtype
    return (tensor.float() if tensor.is_floating_point() else tensor).cpu().numpy()


def run_eval(
    accelerator: Accelerator,
    recipe: Recipe,
    model: torch.nn.Module,
    examples: datasets.Dataset,
    features: datasets.Dataset,
    metric_modules: dict[str, EvaluationModule],
    cfg: RunConfig,
) -> tuple[dict[str, Any], Optional[EvalOutput]]:
    """Predict, gather, postprocess and score; metrics and outputs are returned on the main process only."""
    import torch
    from accelerate.utils import send_to_device
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    start = time.perf_counter()
    plan = budget_plan(accelerator, recipe, features, cfg)
    order = None
    if plan is not None:
        # Batches of varying size: dealt to the processes by the plan, gathered rows placed by feature index.
        loader = DataLoader(
            features,
            batch_sampler=PlannedBatches(plan, accelerator.process_index),
            collate_fn=recipe.collate,
            num_workers=cfg.data.dataloader_num_workers,
        )
    else:
        order = length_order(features, recipe.length_column) if cfg.eval.group_by_length else None
        ordered = features.select(order) if order is not None else features
        loader = accelerator.prepare_data_loader(
            DataLoader(
                ordered,
                batch_size=cfg.eval.batch_size,
                collate_fn=recipe.collate,
                num_workers=cfg.data.dataloader_num_workers,
            )
        )
    was_training = model.training
    model.eval()
    unwrapped = unwrap_model(accelerator, model)
    # Parameters sharded across processes (ZeRO-3, FSDP2): every forward is a collective, so a process that has
    # finished generating keeps stepping until all have (generate's synced_gpus), or the others wait forever.
    synced_gpus = (zero_stage(accelerator) == 3 or is_sharded(unwrapped)) and accelerator.num_processes > 1
    collected: dict[str, list[np.ndarray]] = defaultdict(list)
    placed: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    # No bar where stderr is no terminal: a bar there is carriage returns in a log file.
    for step, batch in enumerate(
        tqdm(loader, desc="eval", disable=not (accelerator.is_local_main_process and sys.stderr.isatty()), leave=False)
    ):
        if plan is not None:
            batch = send_to_device(batch, accelerator.device)
        batch = cast_floating_inputs(batch, accelerator, unwrapped, cfg.eval.precision)
        # torch_linear: a ZeRO-3 eval computes linear layers as every other engine does (engines/precision.py).
        with torch.no_grad(), accelerator.autocast(), gathered_root(unwrapped), torch_linear():
            outputs = recipe.predict(unwrapped, batch, synced_gpus=synced_gpus)
        for key, tensor in outputs.items():
            tensor = tensor.contiguous()
            if tensor.dim() > 1:
                tensor = accelerator.pad_across_processes(tensor, dim=1, pad_index=pad_value_for(tensor))
            if plan is not None:
                tensor = accelerator.pad_across_processes(tensor, dim=0, pad_index=pad_value_for(tensor))
                gathered = to_numpy(accelerator.gather(tensor))
                positions, indices = plan.gathered_rows(step, len(tensor))
                placed[key].append((indices, gathered[positions]))
                continue
            gathered = accelerator.gather_for_metrics(tensor)
            collected[key].append(to_numpy(gathered))
    if was_training:
        model.train()
    if plan is not None:
        arrays = {key: place_rows(parts, len(features), pad_value_for(parts[0][1])) for key, parts in placed.items()}
    else:
        arrays = {key: concat_padded(parts) for key, parts in collected.items()}
    if order is not None:
        arrays = {key: restore_order(value, order) for key, value in arrays.items()}
    for key, value in arrays.items():
        if len(value) != len(features):
            raise RuntimeError(f"eval gathered {len(value)} rows of {key!r} for {len(features)} features")
    if not accelerator.is_main_process:
        return {}, None
    result = recipe.postprocess(arrays, examples, features)
    metrics = score(recipe, metric_modules, result) if result.scorable else {}
    runtime = time.perf_counter() - start
    prefix = "predict" if cfg.mode == "predict" else "eval"
    metrics.update({f"{prefix}_samples": len(examples), f"{prefix}_runtime_s": round(runtime, 3)})
    return metrics, result


def score(recipe: Recipe, metric_modules: dict[str, EvaluationModule], result: EvalOutput) -> dict[str, Any]:
    """Run every metric and flatten the results into one dict."""
    merged: dict[str, Any] = {}
    for label, module in metric_modules.items():
        value = module.compute(
            predictions=result.predictions, references=result.references, **recipe.metric_kwargs(label)
        )
        if not isinstance(value, dict):
            value = {label: value}
        for key, item in value.items():
            name = label if key == "score" else key
            if name in merged:
                name = f"{label}_{key}"
            merged[name] = _plain(item)
    return merged


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def concat_padded(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate batches whose second dimension differs, padding with the loop's pad value."""
    if parts[0].ndim == 1:
        return np.concatenate(parts)
    width = max(part.shape[1] for part in parts)
    fill = pad_value_for(parts[0])
    padded = []
    for part in parts:
        if part.shape[1] < width:
            pad = [(0, 0), (0, width - part.shape[1])] + [(0, 0)] * (part.ndim - 2)
            part = np.pad(part, pad, constant_values=fill)
        padded.append(part)
    return np.concatenate(padded)


def restore_order(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    restored = np.empty_like(values)
    restored[order] = values
    return restored
