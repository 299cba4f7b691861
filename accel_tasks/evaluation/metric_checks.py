"""The run's metrics checked against the recipe before anything loads: each can score the recipe's predictions,
each ``eval.metric_args`` entry names a metric of the run and arguments its ``compute`` takes, and
``eval.best_metric`` is a key the eval computes.

Why before the probe is scored: a misspelt argument reached ``compute`` as an unexpected keyword and was reported
as "the metric cannot score this task", sending the user to the wrong fix.
"""

from __future__ import annotations

import difflib
import inspect
from typing import TYPE_CHECKING, Any

from accel_tasks.errors import ConfigError, first_line
from accel_tasks.evaluation.best import best_metric_name
from accel_tasks.evaluation.eval_pass import score

if TYPE_CHECKING:
    from evaluate import EvaluationModule

    from accel_tasks.recipe import Recipe


def check_metrics_fit(recipe: Recipe, metric_modules: dict[str, EvaluationModule]) -> None:
    """Score the recipe's probe output with every metric now, so a metric that cannot read the recipe's
    predictions (rouge on QA spans) fails before training, not after it."""
    check_metric_args(recipe, metric_modules)
    probe = recipe.metric_probe()
    if probe is None:
        return
    try:
        scored = score(recipe, metric_modules, probe)  # as the eval itself scores, so the keys are the eval's keys
    except Exception:  # any failure means the same thing here: a metric cannot score this task; find which one
        for label, module in metric_modules.items():
            try:
                score(recipe, {label: module}, probe)
            except Exception as exc:
                raise ConfigError(
                    f"eval.metrics: {label} cannot score {recipe.name} predictions "
                    f"({type(exc).__name__}: {first_line(exc)}); "
                    f"use metrics made for this task, e.g. eval.metrics=[{','.join(recipe.default_metrics) or '...'}]"
                ) from None
        raise
    keys = [k for k, v in scored.items() if isinstance(v, (int, float))]
    name = best_metric_name(recipe.cfg, recipe)
    if recipe.cfg.mode == "train" and recipe.cfg.train.eval_every and name is not None:
        if name not in keys:
            raise ConfigError(f"eval.best_metric={name!r} is not a metric of this run; it computes: {', '.join(keys)}")


def check_metric_args(recipe: Recipe, metric_modules: dict[str, EvaluationModule]) -> None:
    """Each ``eval.metric_args.<metric>`` names a metric of this run, and each of its keys is an argument of that
    metric's ``compute`` (a closest match offered)."""
    for label, arguments in dict(recipe.cfg.eval.metric_args).items():
        if label not in metric_modules:
            raise ConfigError(
                f"eval.metric_args.{label}: {label!r} is not a metric of this run (its metrics: "
                f"{', '.join(metric_modules)}); name one of them, or add it to eval.metrics"
            )
        if not hasattr(arguments, "items"):
            raise ConfigError(
                f"eval.metric_args.{label} must be a mapping of {label}'s compute arguments, e.g. "
                f"'eval.metric_args={{{label}: {{name: value}}}}'"
            )
        accepted = _compute_arguments(metric_modules[label])
        if accepted is None:
            continue
        for key in arguments:
            if key not in accepted:
                close = difflib.get_close_matches(str(key), sorted(accepted), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(
                    f"eval.metric_args.{label}.{key}: {label} takes no argument {key!r}; {hint}"
                    f"its arguments: {', '.join(sorted(accepted))}"
                )


def _compute_arguments(module: Any) -> set[str] | None:
    """The keyword arguments a metric's ``_compute`` takes besides predictions and references; None when it takes
    any (``**kwargs``)."""
    parameters = inspect.signature(module._compute).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.name not in ("self", "predictions", "references")}
