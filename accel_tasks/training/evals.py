"""The run's two kinds of evaluation: periodic ones during training, and the final one that writes the results.

Both score the eval split of a :class:`~accel_tasks.training.session.RunSession` through eval_pass.run_eval
and log to the trackers; only the final one writes predictions.jsonl and metrics.json.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

from accel_tasks import log
from accel_tasks.evaluation.eval_pass import run_eval, scalar_metrics
from accel_tasks.files import write_json, write_jsonl

if TYPE_CHECKING:
    from accel_tasks.evaluation.best import BestTracker
    from accel_tasks.runs.checkpoint import LoopState
    from accel_tasks.training.session import RunSession


def periodic_eval(run: RunSession, step: int) -> dict[str, Any]:
    """Score the current weights; the metrics on the main process ({} elsewhere), also logged and appended to
    eval_history.jsonl."""
    examples, features = run.eval_split()
    metrics, _ = run_eval(run.accelerator, run.recipe, run.model, examples, features, run.plan.metric_modules, run.cfg)
    if run.accelerator.is_main_process:
        run.accelerator.log({f"eval/{k}": v for k, v in scalar_metrics(metrics).items()}, step=step)
        log.info(f"step {step} eval: " + format_metrics(metrics))
        with (run.output_dir / "eval_history.jsonl").open("a") as handle:
            handle.write(json.dumps({"step": step, **metrics}) + "\n")
    return metrics


def final_eval(
    run: RunSession,
    step: int = 0,
    extra: Optional[dict[str, Any]] = None,
    best_of_run: Optional[tuple[BestTracker, LoopState]] = None,
) -> dict[str, Any]:
    """Score, then write predictions.jsonl and metrics.json (with ``extra``, and the best eval when tracking).

    ``best_of_run``: the tracker and loop state this eval counts towards (the last step's weights, which no
    periodic eval has seen); its summary goes into metrics.json.
    """
    accelerator = run.accelerator
    examples, features = run.eval_split()
    metrics, result = run_eval(accelerator, run.recipe, run.model, examples, features, run.plan.metric_modules, run.cfg)
    if best_of_run is not None:
        tracker, state = best_of_run
        tracker.update(accelerator, metrics, step, state)  # every process: the value is broadcast from the main one
        extra = {**(extra or {}), **tracker.summary(state)}
    if accelerator.is_main_process:
        metrics.update(extra or {})
        write_jsonl(run.output_dir / "predictions.jsonl", result.records)
        write_json(run.output_dir / "metrics.json", metrics)
        accelerator.log({f"eval/{k}": v for k, v in scalar_metrics(metrics).items()}, step=step)
        log.info("eval: " + format_metrics(metrics))
        log.info(f"wrote {run.output_dir / 'metrics.json'} and {run.output_dir / 'predictions.jsonl'}")
    accelerator.wait_for_everyone()
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in scalar_metrics(metrics).items())
