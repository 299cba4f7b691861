"""Is a saved model or checkpoint of this run's kind? Compared, before anything loads, from what it saved: the
run settings (``accel_tasks_config.yaml``: the recipe) and the model config (``config.json``: the architecture).

Why before loading: a checkpoint of another recipe was resumed as far as ``load_state``, where a state-dict size
mismatch ended the run in a screen of parameter names, after its config and logs were written; an export scored
with another recipe reached transformers' own errors, or scored with settings that were never its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import yaml

from accel_tasks.errors import ConfigError
from accel_tasks.models.loading import RUN_CONFIG_FILE, config_source


def same_recipe(saved: Optional[str], current: str) -> bool:
    """Whether two recipe specs name the same recipe: equal names, or the same file name and class of a
    ``file.py:Class`` plugin (the path may be written relative in one run and absolute in the other)."""
    if saved is None or saved == current:
        return saved is not None
    if ":" in saved and ":" in current:
        (saved_file, saved_class), (file, cls) = saved.rsplit(":", 1), current.rsplit(":", 1)
        return saved_class == cls and Path(saved_file).name == Path(file).name
    return False


def saved_recipe(directory: Path) -> Optional[str]:
    """The recipe a checkpoint or export of ours was made by, or None when it saved no run settings."""
    path = directory / RUN_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    return saved.get("recipe") if isinstance(saved, dict) else None


def model_type(directory: str | Path) -> Optional[str]:
    """The ``model_type`` of a local model directory's config.json (an adapter's base model's), or None."""
    path = Path(config_source(str(directory))).expanduser() / "config.json"
    if not path.is_file():
        return None
    try:
        config: Any = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def check_resume_matches(recipe: str, resume_dir: Path, model_source: str) -> None:
    """A checkpoint resumes only the run it was made by: the same recipe and the same architecture as the model
    this run loads."""
    made_by = saved_recipe(resume_dir)
    where = f"train.resume_from={str(resume_dir)!r}"
    if made_by is not None and not same_recipe(made_by, recipe):
        raise ConfigError(
            f"{where} is a checkpoint of recipe={made_by}, and this run is recipe={recipe}; resume it with "
            f"recipe={made_by}, or start a new {recipe} run without train.resume_from"
        )
    saved_type, this_type = model_type(resume_dir), model_type(model_source)
    if saved_type is not None and this_type is not None and saved_type != this_type:
        raise ConfigError(
            f"{where} holds a {saved_type} model, and this run loads a {this_type} model ({model_source}); resume "
            f"with the model.name_or_path it was trained from, or start from its weights: model.name_or_path="
            f"{resume_dir} without train.resume_from"
        )


def check_scored_model_recipe(recipe: str, made_by: Optional[str], path: Path) -> None:
    """An eval or predict run scores a model with the recipe that trained it: another recipe would read it with
    settings (prompts, lengths, labels) that were never its own."""
    if made_by is not None and not same_recipe(made_by, recipe):
        raise ConfigError(
            f"model.name_or_path {str(path.parent)!r} was trained by recipe={made_by}, not recipe={recipe}: score "
            f"it with recipe={made_by}; to fine-tune it for {recipe}, train with mode=train"
        )
