"""What the run report reads: one output_dir's logs, turned into series, tables and ranked examples.

Only what a run already writes is read (no second logging path): the TensorBoard events under ``logs/`` with
tensorboard's own event reader, ``eval_history.jsonl``, ``metrics.json``, ``predictions.jsonl`` and
``config.yaml``. A run still in progress, or one that stopped early, reads as far as it got. Nothing here
draws or writes; ``report_plots`` draws and ``report`` writes the page.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from accel_tasks.errors import ConfigError, first_line
from accel_tasks.reporting.model_card import model_scores
from accel_tasks.runs.output_dir import CONFIG_FILE

EVENTS_PREFIX = "events.out.tfevents"
EVAL_PREFIX = "eval/"
# TensorBoard-style smoothing of the train loss: an exponential moving average, debiased at the start.
SMOOTHING = 0.6
# Best and worst predictions shown per run.
SHOWN_EXAMPLES = 5


@dataclass
class Series:
    """One scalar against the optimizer step, steps ascending and unique."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.steps)


@dataclass
class Ranking:
    """The best and worst predictions of a run by its recipe's per-example score, or why there are none."""

    score_name: Optional[str] = None
    higher_is_better: bool = True
    best: list[tuple[float, dict]] = field(default_factory=list)
    worst: list[tuple[float, dict]] = field(default_factory=list)
    scored: int = 0
    note: Optional[str] = None


@dataclass
class RunData:
    """Everything the report shows of one output_dir."""

    directory: Path
    label: str
    config: dict[str, Any]
    config_text: str
    scalars: dict[str, Series]
    eval_history: list[dict[str, Any]]
    metrics: dict[str, Any]
    records: list[dict[str, Any]]
    recipe_cls: Optional[type] = None
    recipe_problem: Optional[str] = None

    @property
    def recipe_name(self) -> str:
        return str(self.config.get("recipe", "?"))


def load_run(directory: Path, label: Optional[str] = None) -> RunData:
    """Read one output_dir; a missing directory, or one that holds no run (no config.yaml), is a ConfigError."""
    if not directory.exists():
        raise ConfigError(f"report: {str(directory)!r} does not exist; pass the output_dir of a run")
    if not directory.is_dir():
        raise ConfigError(f"report: {str(directory)!r} is a file; pass the output_dir of a run")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(
            f"report: {str(directory)!r} holds no run (no {CONFIG_FILE}); "
            "pass the output_dir a run wrote, e.g. outputs/summarization"
        )
    config_text = config_path.read_text()
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"report: {config_path} is not valid YAML ({first_line(exc)}); it is not a run's config"
        ) from None
    run = RunData(
        directory=directory,
        label=label or directory.resolve().name,
        config=config if isinstance(config, dict) else {},
        config_text=config_text,
        scalars=read_scalars(directory / "logs"),
        eval_history=read_jsonl(directory / "eval_history.jsonl"),
        metrics=read_json(directory / "metrics.json"),
        records=read_jsonl(directory / "predictions.jsonl"),
    )
    run.recipe_cls, run.recipe_problem = _recipe_class(run.recipe_name)
    return run


def _recipe_class(name: str) -> tuple[Optional[type], Optional[str]]:
    """The run's recipe class through the registry, or why it cannot be had (a plugin not installed here)."""
    from accel_tasks.registry import load_recipe_class

    try:
        return load_recipe_class(name), None
    except ConfigError as exc:
        return None, str(exc)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The lines of a JSON-lines file; a line cut short by a run still writing is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_scalars(logs_dir: Path) -> dict[str, Series]:
    """Every scalar tag of every event file under ``logs/`` (train, eval and resumed runs alike).

    A resumed run logs the steps after its checkpoint again; for a step logged twice the later write wins.
    """
    if not logs_dir.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[str, dict[int, tuple[float, float]]] = {}
    for root, _, files in os.walk(logs_dir):
        if not any(name.startswith(EVENTS_PREFIX) for name in files):
            continue
        events = EventAccumulator(root, size_guidance={"scalars": 0})  # 0: keep every point, not a sample
        events.Reload()
        for tag in events.Tags().get("scalars", []):
            for event in events.Scalars(tag):
                previous = points.setdefault(tag, {}).get(event.step)
                if previous is None or event.wall_time >= previous[0]:
                    points[tag][event.step] = (event.wall_time, float(event.value))
    return {tag: Series(sorted(by_step), [by_step[s][1] for s in sorted(by_step)]) for tag, by_step in points.items()}


def eval_curves(run: RunData) -> dict[str, Series]:
    """Each model score against step: eval_history.jsonl (periodic evals) joined with the TensorBoard eval/* points.

    TensorBoard also holds the final eval; eval_history.jsonl wins where both have a step (same values).
    """
    by_metric: dict[str, dict[int, float]] = {}
    for tag, series in run.scalars.items():
        if tag.startswith(EVAL_PREFIX):
            by_metric.setdefault(tag[len(EVAL_PREFIX) :], {}).update(zip(series.steps, series.values))
    for row in run.eval_history:
        step = row.get("step")
        if isinstance(step, int):
            for name, value in model_scores({k: v for k, v in row.items() if k != "step"}).items():
                by_metric.setdefault(name, {})[step] = value
    scores = model_scores({name: 0.0 for name in by_metric})
    return {
        name: Series(sorted(points), [points[s] for s in sorted(points)])
        for name, points in by_metric.items()
        if name in scores
    }


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are not pulled to 0."""
    out, last, count = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        count += 1
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**count))
    return out


def best_metric(run: RunData) -> Optional[str]:
    """The metric the run tracked as best: eval.best_metric, else the recipe's primary metric."""
    name = (run.config.get("eval") or {}).get("best_metric")
    return name or (getattr(run.recipe_cls, "primary_metric", None) if run.recipe_cls else None)


def higher_is_better(run: RunData, name: str) -> bool:
    """The direction of a metric, by the loop's own rule (best.greater_is_better); eval.greater_is_better
    applies to the tracked metric only."""
    from omegaconf import OmegaConf

    from accel_tasks.evaluation.best import greater_is_better

    override = (run.config.get("eval") or {}).get("greater_is_better")
    view = OmegaConf.create({"eval": {"greater_is_better": override if name == best_metric(run) else None}})
    return greater_is_better(view, name)


def best_point(series: Series, higher: bool) -> tuple[int, float]:
    """(step, value) of the best point; the earliest one on a tie."""
    pairs = [(s, v) for s, v in zip(series.steps, series.values) if math.isfinite(v)]
    if not pairs:
        return series.steps[0], series.values[0]
    best = max(pairs, key=lambda p: p[1]) if higher else min(pairs, key=lambda p: p[1])
    return best


def rank_examples(run: RunData, shown: int = SHOWN_EXAMPLES) -> Ranking:
    """The ``shown`` best and worst predictions by the recipe's ``example_scores``, or a note saying why not."""
    cls = run.recipe_cls
    if cls is None:
        return Ranking(
            note=f"no per-example scores: the recipe {run.recipe_name!r} cannot be loaded here ({run.recipe_problem})"
        )
    if not run.records:
        return Ranking(note="no predictions.jsonl yet (the final evaluation has not run)")
    scores = cls.example_scores(run.records)
    if scores is None:
        return Ranking(note=f"no per-example scores: the recipe {cls.name!r} does not define example_scores()")
    ranking = Ranking(score_name=cls.example_score_name or "score", higher_is_better=cls.example_score_higher_is_better)
    scored = [
        (float(score), record)
        for score, record in zip(scores, run.records)
        if score is not None and math.isfinite(score)
    ]
    ranking.scored = len(scored)
    if not scored:
        ranking.note = "no per-example scores: the predictions have no references (a mode=predict run scores nothing)"
        return ranking
    # Sorting is stable: predictions with equal scores keep their order in predictions.jsonl.
    ranking.best = sorted(scored, key=lambda pair: pair[0], reverse=ranking.higher_is_better)[:shown]
    ranking.worst = sorted(scored, key=lambda pair: pair[0], reverse=not ranking.higher_is_better)[:shown]
    if len(scored) < len(run.records):
        ranking.note = (
            f"{len(run.records) - len(scored)} of {len(run.records)} predictions have no reference and are not ranked"
        )
    return ranking


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested config: ``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_diff(configs: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The settings whose values differ between configs, each with its value per config (None where absent)."""
    flats = [flatten(config) for config in configs]
    keys = sorted(set().union(*flats))
    rows = []
    for key in keys:
        values = [flat.get(key) for flat in flats]
        if any(value != values[0] for value in values[1:]):
            rows.append((key, values))
    return rows
