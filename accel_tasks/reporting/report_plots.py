"""The run report's figures, drawn with matplotlib's Agg backend (no display needed), and their SVG text.

Why SVG: the figures stay sharp at any zoom and travel inside the HTML page (as data URIs), so the report
opens from a file or a mail attachment with nothing to fetch. Every figure has labelled axes with units and a
legend naming each run; each run keeps one colour in every figure. The figure functions return matplotlib
Figures (None when no run logged that series), so what they draw can be checked before it becomes SVG.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Optional

from accel_tasks.reporting.report_data import (
    SMOOTHING,
    RunData,
    Series,
    best_point,
    eval_curves,
    higher_is_better,
    smooth,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

STEP_LABEL = "optimizer step"
WIDTH_IN = 9.0
PANEL_HEIGHT_IN = 3.4
METRIC_COLUMNS = 2


def _figure(rows: int = 1, cols: int = 1, height: float = PANEL_HEIGHT_IN) -> tuple[Figure, list[Axes]]:
    """A figure drawn by Agg, without pyplot's global state (the report may run inside a long-lived process)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    return figure, [ax for row in axes for ax in row]


def to_svg(figure: Optional[Figure]) -> Optional[str]:
    """The figure as standalone SVG text; text is drawn as paths, so no font has to be present where it opens."""
    if figure is None:
        return None
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "accel_tasks"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return buffer.getvalue()


def colour(index: int) -> str:
    """Run ``index``'s colour, the same in every figure."""
    palette = (
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    )
    return palette[index % len(palette)]


def _finish(ax: Axes, ylabel: str, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def _line(ax: Axes, series: Series, label: str, color: str, **style: object) -> None:
    marker = "o" if len(series.steps) < 3 else None  # a line of one point does not show without a marker
    ax.plot(series.steps, series.values, label=label, color=color, marker=marker, **style)


def loss_figure(runs: list[RunData]) -> Optional[Figure]:
    """Train loss, raw and smoothed, against step; None when no run logged a train loss (eval-only runs)."""
    present = [(i, run, run.scalars.get("train/loss")) for i, run in enumerate(runs)]
    present = [(i, run, series) for i, run, series in present if series]
    if not present:
        return None
    figure, (ax,) = _figure()
    for index, run, series in present:
        _line(ax, series, f"{run.label} raw", colour(index), alpha=0.35, linewidth=1)
        _line(
            ax,
            Series(series.steps, smooth(series.values)),
            f"{run.label} smoothed (EMA {SMOOTHING})",
            colour(index),
            linewidth=2,
        )
    _finish(ax, "train loss (mean per log interval)", "Training loss")
    return figure


def lr_figure(runs: list[RunData]) -> Optional[Figure]:
    """The learning rate the scheduler set, against step."""
    present = [(i, run, run.scalars.get("train/lr")) for i, run in enumerate(runs)]
    present = [(i, run, series) for i, run, series in present if series]
    if not present:
        return None
    figure, (ax,) = _figure()
    for index, run, series in present:
        _line(ax, series, run.label, colour(index), linewidth=2)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    _finish(ax, "learning rate (AdamW step size)", "Learning rate")
    return figure


def throughput_figure(runs: list[RunData]) -> Optional[Figure]:
    """Samples/s and tokens/s (all processes together) against step, side by side."""
    tags = (("train/samples_per_s", "samples / s"), ("train/tokens_per_s", "tokens / s (padding not counted)"))
    if not any(run.scalars.get(tag) for run in runs for tag, _ in tags):
        return None
    figure, axes = _figure(1, 2)
    for ax, (tag, unit) in zip(axes, tags):
        for index, run in enumerate(runs):
            series = run.scalars.get(tag)
            if series:
                _line(ax, series, run.label, colour(index), linewidth=1.5)
        _finish(ax, unit, f"Throughput: {unit.split(' (')[0]}")
        ax.set_ylim(bottom=0)
    return figure


def metrics_figure(runs: list[RunData]) -> Optional[Figure]:
    """Every eval metric against step, one panel each, the best point of each run marked and labelled."""
    curves = [eval_curves(run) for run in runs]
    names = sorted({name for per_run in curves for name in per_run})
    if not names:
        return None
    rows = math.ceil(len(names) / METRIC_COLUMNS)
    figure, axes = _figure(rows, min(METRIC_COLUMNS, len(names)))
    for ax, name in zip(axes, names):
        for index, (run, per_run) in enumerate(zip(runs, curves)):
            series = per_run.get(name)
            if not series:
                continue
            higher = higher_is_better(run, name)
            _line(ax, series, run.label, colour(index), linewidth=1.5)
            step, value = best_point(series, higher)
            ax.plot(
                [step],
                [value],
                marker="*",
                markersize=14,
                color=colour(index),
                markeredgecolor="black",
                linestyle="none",
                label=f"{run.label} best ({'max' if higher else 'min'}): {value:.4g} at step {step}",
            )
        _finish(ax, f"{name} (as the metric reports it)", f"eval {name}")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    return figure
