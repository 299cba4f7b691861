"""``accel-tasks report OUTPUT_DIR [OUTPUT_DIR ...]``: the run as one self-contained HTML page.

The page (``report.html`` in the first OUTPUT_DIR) shows the train loss (raw and smoothed), the learning rate,
the throughput and every eval metric against step, the final metrics, the resolved config, and the best and
worst predictions by the recipe's per-example score. Several OUTPUT_DIRs overlay their curves and show their
configs as a diff. Figures are SVG data URIs and the CSS is inline; a Content-Security-Policy forbids every
fetch, so the page opens from a file or a mail attachment and never touches the network.

This module imports no loop machinery: a report is made on a laptop from a copied output_dir, while the run
goes on, or long after.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shlex
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional, Sequence

import click

from accel_tasks.reporting.model_card import is_run_fact, model_scores
from accel_tasks.reporting.report_data import Ranking, RunData, config_diff, load_run, rank_examples

REPORT_FILE = "report.html"
# Longest text shown in one cell of the examples tables; the full record is in predictions.jsonl.
CELL_CHARS = 400
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; white-space: nowrap; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { max-width: 28em; white-space: pre-wrap; word-break: break-word; }
figure { margin: 1em 0; } figure img { width: 100%; max-width: 60em; display: block; }
figcaption, .note { color: #555; font-size: .9em; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
"""


def report_command(output_dir: Path) -> str:
    """The shell command that writes the report of ``output_dir`` (the loop prints it at the end of a run)."""
    return f"accel-tasks report {shlex.quote(str(output_dir))}"


def _labels(directories: Sequence[Path]) -> list[str]:
    """Each run's name in legends: its folder name, or the path as typed where two folders share a name."""
    names = [d.resolve().name or str(d) for d in directories]
    return names if len(set(names)) == len(names) else [str(d) for d in directories]


def write_report(directories: Sequence[Path]) -> Path:
    """Read every run, draw the figures and write ``report.html`` into the first directory; returns its path."""
    runs = [load_run(directory, label) for directory, label in zip(directories, _labels(directories))]
    page = render(runs)
    target = runs[0].directory / REPORT_FILE
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target


# -- the page -----------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: Any, limit: int = CELL_CHARS) -> str:
    """A value as table text: floats to 4 significant digits, lists joined, long texts cut (predictions.jsonl has
    all)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        value = " | ".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False)
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], classes: Optional[Sequence[str]] = None) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for index, value in enumerate(row):
            css = (
                classes[index]
                if classes
                else ("num" if isinstance(value, (int, float)) and not isinstance(value, bool) else "")
            )
            cells.append(f'<td class="{css}">{_esc(_cell(value))}</td>' if css else f"<td>{_esc(_cell(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(svg: Optional[str], alt: str, caption: str, missing: str) -> str:
    if svg is None:
        return f'<p class="note">{_esc(missing)}</p>' if missing else ""
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (
        f'<figure><img class="plot" alt="{_esc(alt)}" src="data:image/svg+xml;base64,{data}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _runs_table(runs: list[RunData]) -> str:
    rows = []
    for run in runs:
        loss = run.scalars.get("train/loss")
        rows.append(
            [
                run.label,
                str(run.directory),
                run.recipe_name,
                run.config.get("mode", "?"),
                loss.steps[-1] if loss else "-",
                len(run.records),
            ]
        )
    return _table(
        ["run", "output_dir", "recipe", "mode", "last logged step", "predictions"], rows, ["", "", "", "", "num", "num"]
    )


def _training_section(runs: list[RunData]) -> str:
    from accel_tasks.reporting.report_plots import loss_figure, lr_figure, throughput_figure, to_svg

    none = (
        "No training logs: an eval-only run, a run whose train.report_to leaves out tensorboard, "
        "or one whose first train.log_every steps have not passed yet."
    )
    return "".join(
        [
            "<h2>Training</h2>",
            _figure(
                to_svg(loss_figure(runs)),
                "training loss against step",
                "The train loss logged every train.log_every steps (thin: raw, thick: smoothed as TensorBoard does).",
                none,
            ),
            _figure(
                to_svg(lr_figure(runs)),
                "learning rate against step",
                "The learning rate of the schedule at each logged step.",
                "",
            ),
            _figure(
                to_svg(throughput_figure(runs)),
                "throughput against step",
                "Training throughput over each log interval, all processes together.",
                "",
            ),
        ]
    )


def _final_metrics(runs: list[RunData]) -> str:
    scores = [model_scores(run.metrics) for run in runs]
    names = sorted({name for per_run in scores for name in per_run})
    if not names:
        return '<p class="note">No metrics.json yet (the final evaluation has not run).</p>'
    labels = [run.label for run in runs]
    table = _table(
        ["metric", *labels],
        [[name, *[per_run.get(name, "-") for per_run in scores]] for name in names],
        ["", *["num"] * len(runs)],
    )
    facts = sorted({key for run in runs for key in run.metrics if is_run_fact(key)})
    facts_table = (
        _table(
            ["run fact", *labels],
            [[key, *[run.metrics.get(key, "-") for run in runs]] for key in facts],
            ["", *["num"] * len(runs)],
        )
        if facts
        else ""
    )
    return "<h3>Final metrics (metrics.json)</h3>" + table + facts_table


def _evaluation_section(runs: list[RunData]) -> str:
    from accel_tasks.reporting.report_plots import metrics_figure, to_svg

    return "".join(
        [
            "<h2>Evaluation</h2>",
            _figure(
                to_svg(metrics_figure(runs)),
                "eval metrics against step",
                "Every eval metric at each periodic evaluation "
                "(train.eval_every) and the final one; the star marks each run's best point.",
                "No evaluation logged yet.",
            ),
            _final_metrics(runs),
        ]
    )


def _examples_table(pairs: list[tuple[float, dict]], score_name: str) -> str:
    keys: list[str] = []
    for _, record in pairs:
        keys += [key for key in record if key != "id" and key not in keys]
    rows = [
        [rank, score, record.get("id", "-"), *[record.get(key, "-") for key in keys]]
        for rank, (score, record) in enumerate(pairs, start=1)
    ]
    return _table(["#", score_name, "id", *keys], rows, ["num", "num", "", *["text"] * len(keys)])


def _ranking_html(ranking: Ranking) -> str:
    parts = []
    if ranking.best:
        order = "higher is better" if ranking.higher_is_better else "lower is better"
        parts.append(
            f"<p>Ranked by per-example {_esc(ranking.score_name)} ({order}) over {ranking.scored} predictions.</p>"
        )
        parts.append(f"<h4>{len(ranking.best)} best</h4>" + _examples_table(ranking.best, ranking.score_name))
        parts.append(f"<h4>{len(ranking.worst)} worst</h4>" + _examples_table(ranking.worst, ranking.score_name))
    if ranking.note:
        parts.append(f'<p class="note">{_esc(ranking.note)}</p>')
    return "".join(parts)


def _predictions_section(runs: list[RunData]) -> str:
    parts = ["<h2>Predictions</h2>"]
    for run in runs:
        if len(runs) > 1:
            parts.append(f"<h3>{_esc(run.label)}</h3>")
        parts.append(_ranking_html(rank_examples(run)))
    return "".join(parts)


def _config_section(runs: list[RunData]) -> str:
    if len(runs) == 1:
        return f"<h2>Config</h2><p>The resolved config (config.yaml):</p><pre>{_esc(runs[0].config_text)}</pre>"
    diff = config_diff([run.config for run in runs])
    parts = ["<h2>Config</h2>", "<p>Settings that differ between the runs (everything else is the same):</p>"]
    parts.append(
        _table(["setting", *[run.label for run in runs]], [[key, *values] for key, values in diff])
        if diff
        else '<p class="note">The configs are identical.</p>'
    )
    for run in runs:
        parts.append(
            f"<details><summary>{_esc(run.label)}: config.yaml</summary><pre>{_esc(run.config_text)}</pre></details>"
        )
    return "".join(parts)


def render(runs: list[RunData]) -> str:
    """The whole page as one HTML string."""
    title = "Run report: " + ", ".join(run.label for run in runs)
    try:
        ours = version("accel_tasks")
    except PackageNotFoundError:
        ours = "?"
    body = "".join(
        [
            f"<h1>{_esc(title)}</h1>",
            _runs_table(runs),
            _training_section(runs),
            _evaluation_section(runs),
            _predictions_section(runs),
            _config_section(runs),
            f'<p class="note">Written by accel_tasks {_esc(ours)} on {time.strftime("%Y-%m-%d %H:%M:%S")}; '
            f"refresh with: {_esc(report_command(runs[0].directory))}"
            + "".join(f" {_esc(shlex.quote(str(run.directory)))}" for run in runs[1:])
            + "</p>",
        ]
    )
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head>\n<body>{body}</body></html>\n"
    )


# -- the command ----------------------------------------------------------------------------------------


@click.command(name="report", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument(
    "output_dirs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="OUTPUT_DIR [OUTPUT_DIR ...]"
)
def report_cli(output_dirs: tuple[Path, ...]) -> None:
    """Write OUTPUT_DIR/report.html: curves, final metrics, config, best and worst predictions.

    Several OUTPUT_DIRs: their curves overlaid and their configs as a diff, in the first one's report.html.
    """
    click.echo(f"wrote {write_report(list(output_dirs))}")
