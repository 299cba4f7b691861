"""The best evaluation so far: which metric decides, which direction is better, and when to stop early.

Trainer users know these as ``metric_for_best_model``, ``greater_is_better``, ``load_best_model_at_end`` and
``EarlyStoppingCallback``; here they are ``eval.best_metric``, ``eval.greater_is_better``, ``train.export_best``
and ``train.early_stopping_patience`` / ``_threshold``. The state lives in the loop's checkpointed position,
so a resumed run keeps its best-so-far and its patience count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from accel_tasks.config import RunConfig

if TYPE_CHECKING:
    from accelerate import Accelerator

    from accel_tasks.recipe import Recipe
    from accel_tasks.runs.checkpoint import LoopState

# Metric names (or their endings) where lower is better; everything else is a score, higher is better.
LOWER_IS_BETTER = ("wer", "cer", "ter", "loss", "perplexity", "error")


def best_metric_name(cfg: RunConfig, recipe: Recipe) -> Optional[str]:
    """eval.best_metric, else the recipe's primary metric; None when neither names one."""
    return cfg.eval.best_metric or recipe.primary_metric


def greater_is_better(cfg: RunConfig, name: str) -> bool:
    if cfg.eval.greater_is_better is not None:
        return bool(cfg.eval.greater_is_better)
    return not any(name == word or name.endswith(f"_{word}") for word in LOWER_IS_BETTER)


def tracking(cfg: RunConfig) -> bool:
    """Whether the run keeps a best evaluation (periodic evals happen)."""
    return cfg.mode == "train" and cfg.train.eval_every > 0


class BestTracker:
    """Updates the loop state after each periodic eval, the same way on every process."""

    def __init__(self, cfg: RunConfig, recipe: Recipe) -> None:
        self.name = best_metric_name(cfg, recipe)
        self.greater = greater_is_better(cfg, self.name) if self.name else True
        self.patience = cfg.train.early_stopping_patience
        self.threshold = cfg.train.early_stopping_threshold

    def update(self, accelerator: Accelerator, metrics: dict[str, Any], step: int, state: LoopState) -> bool:
        """Record this eval (metrics exist on the main process only); True when it is the new best."""
        from accelerate.utils import broadcast_object_list

        value = [metrics.get(self.name) if accelerator.is_main_process and self.name else None]
        if accelerator.num_processes > 1:
            value = broadcast_object_list(value, from_process=0)
        current = value[0]
        if current is None:
            return False
        if state.best_value is None or self._better(float(current), state.best_value):
            state.best_value, state.best_step, state.evals_without_improvement = float(current), step, 0
            return True
        state.evals_without_improvement += 1
        return False

    def should_stop(self, state: LoopState) -> bool:
        return self.patience > 0 and state.evals_without_improvement >= self.patience

    def _better(self, value: float, best: float) -> bool:
        return value > best + self.threshold if self.greater else value < best - self.threshold

    def summary(self, state: LoopState) -> dict[str, Any]:
        """What metrics.json records about the best evaluation."""
        if self.name is None or state.best_value is None:
            return {}
        return {"best_step": state.best_step, f"best_{self.name}": state.best_value}
