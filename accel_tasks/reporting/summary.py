"""The end of a run on the console: every artifact it wrote, and a few predictions beside their references.

Why: a user should not have to know the output layout to find the model, the metrics or the logs, nor open
a JSON file to see whether the predictions make sense.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accel_tasks import log
from accel_tasks.recipe import preview
from accel_tasks.reporting.report import report_command

if TYPE_CHECKING:
    from accel_tasks.preflight import Plan

SAMPLE_PREDICTIONS = 3
SAMPLE_CHARS = 120
# Where a record keeps its reference, per recipe convention (seq2seq/speech, translation, QA).
REFERENCE_KEYS = ("reference", "references", "answers")
PREDICTION_KEYS = ("prediction", "prediction_text")


def artifact_lines(output_dir: Path) -> list[str]:
    """One line per artifact present in output_dir, with what it is for."""
    entries: list[tuple[str, str]] = [
        ("config.yaml", "the resolved settings of this run"),
        ("logs", f"tracker logs; view: tensorboard --logdir {output_dir / 'logs'}"),
        ("mlruns", f"MLflow runs; view: mlflow ui --backend-store-uri {output_dir / 'mlruns'}"),
        ("checkpoints", "resumable checkpoints; continue with train.resume_from=latest"),
        ("model", f"the exported model; score it: accel-tasks mode=eval model.name_or_path={output_dir / 'model'}"),
        ("model_merged", "the adapter merged into the base model"),
        ("eval_history.jsonl", "one line per periodic evaluation"),
        ("predictions.jsonl", "one line per example: input, prediction, reference"),
        ("metrics.json", "the final metrics"),
    ]
    lines = []
    for name, what in entries:
        path = output_dir / name
        if path.exists():
            suffix = "/" if path.is_dir() else ""
            count = ""
            if name == "checkpoints":
                count = f" ({sum(1 for p in path.iterdir() if p.is_dir() and p.name.startswith('step_'))} kept)"
            lines.append(f"  {str(path) + suffix:<48} {what}{count}")
    lines.append(f"  report: {report_command(output_dir)}")
    return lines


def sample_lines(predictions_file: Path, count: int = SAMPLE_PREDICTIONS) -> list[str]:
    """The first few records of predictions.jsonl as input / prediction / reference lines."""
    if not predictions_file.is_file():
        return []
    lines = []
    with predictions_file.open() as handle:
        for number, line in enumerate(handle):
            if number >= count:
                break
            record: dict[str, Any] = json.loads(line)
            prediction = next((record[k] for k in PREDICTION_KEYS if k in record), None)
            reference = next((record[k] for k in REFERENCE_KEYS if k in record), None)
            lines.append(
                f"  [{record.get('id', number)}] input:      {preview(str(record.get('input', '')), SAMPLE_CHARS)}"
            )
            lines.append(
                f"  {'':>{len(str(record.get('id', number))) + 2}} prediction: {preview(str(prediction), SAMPLE_CHARS)}"
            )
            if reference is not None:
                shown = " | ".join(map(str, reference)) if isinstance(reference, list) else str(reference)
                lines.append(
                    f"  {'':>{len(str(record.get('id', number))) + 2}} reference:  {preview(shown, SAMPLE_CHARS)}"
                )
    return lines


def print_run_summary(plan: Plan) -> None:
    """Main process, after the run: the artifact list, then sample predictions."""
    output_dir = plan.output_dir
    log.info(f"done: {plan.cfg.mode} run of recipe={plan.recipe.name}; outputs in {output_dir}/")
    for line in artifact_lines(output_dir):
        print(line, flush=True)
    samples = sample_lines(output_dir / "predictions.jsonl")
    if samples:
        log.info(f"sample predictions (from {output_dir / 'predictions.jsonl'}):")
        for line in samples:
            print(line, flush=True)
