"""train.report_to: which experiment trackers a run logs to, checked before anything loads.

accelerate drops a tracker whose package is missing with a debug message only, so a user who asked for
MLflow would find nothing logged after hours of training; here a missing package is one line naming the
pip command. Local trackers are pointed into output_dir unless the user set their own location, so a run's
outputs stay in one folder (and MLflow's file store needs no server).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from accel_tasks.errors import ConfigError

NO_TRACKER = "none"
# accelerate's tracker name -> what to install (our extra where we pin one, else the package).
INSTALL = {
    "tensorboard": "pip install tensorboard (a dependency of accel_tasks: the environment lost it)",
    "wandb": 'pip install "accel_tasks[wandb]"  (or pip install wandb)',
    "mlflow": 'pip install "accel_tasks[mlflow]"  (or pip install mlflow)',
    "aim": "pip install aim",
    "comet_ml": "pip install comet-ml",
    "clearml": "pip install clearml",
    "dvclive": "pip install dvclive",
    "swanlab": "pip install swanlab",
    "trackio": "pip install trackio",
}


def resolve_trackers(names: Sequence[str]) -> list[str]:
    """train.report_to -> accelerate tracker names; unknown or uninstalled ones are a ConfigError."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    wanted = [str(name).strip().lower() for name in names]
    if NO_TRACKER in wanted:
        if len(wanted) > 1:
            raise ConfigError(
                f"train.report_to={list(names)} mixes none with trackers; use [none] alone, or only tracker names"
            )
        return []
    known = sorted(LOGGER_TYPE_TO_CLASS)
    available = {str(tracker) for tracker in get_available_trackers()}
    trackers: list[str] = []
    for name in wanted:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ConfigError(
                f"train.report_to: {name!r} is not a tracker accelerate knows; "
                f"use some of {', '.join(known)}, or [none]"
            )
        if name not in available:
            fix = INSTALL.get(name, f"pip install {name}")
            raise ConfigError(f"train.report_to: {name} is not installed here; {fix}, or drop it from train.report_to")
        if name not in trackers:
            trackers.append(name)
    return trackers


def point_trackers_at(output_dir: Path) -> None:
    """Local tracker stores inside output_dir, unless the user's environment already names one.

    MLflow: the file store under output_dir/mlruns (MLflow 3 refuses file stores unless allowed, and its
    database store needs a server-side package the skinny client lacks). W&B: its run folder; offline mode is
    the user's WANDB_MODE=offline.
    """
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = (output_dir / "mlruns").resolve().as_uri()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    os.environ.setdefault("WANDB_DIR", str(output_dir.resolve()))


def tracker_init_kwargs(trackers: Sequence[str], run_name: str) -> dict[str, dict[str, Any]]:
    """Per-tracker ``init_trackers`` arguments: a run name the tracker UIs show."""
    kwargs: dict[str, dict[str, Any]] = {}
    if "wandb" in trackers:
        kwargs["wandb"] = {"name": run_name}
    if "mlflow" in trackers:
        kwargs["mlflow"] = {"run_name": run_name}
    return kwargs
