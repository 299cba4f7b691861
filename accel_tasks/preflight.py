"""Everything that can be checked before a model or data set is loaded, gathered into a run plan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .checkpoint import resolve_resume
from .config import ConfigError
from .data import check_data_files
from .distributed import check_deepspeed_config, threads_from_env
from .modeling import resolve_model_source


@dataclass
class Plan:
    cfg: Any
    recipe: Any
    output_dir: Path
    resume_dir: Optional[Path]
    metric_modules: dict[str, Any]


def default_output_dir(cfg: Any, recipe_name: str) -> str:
    return f"outputs/{recipe_name}" if cfg.mode == "train" else f"outputs/{recipe_name}-eval"


def make_plan(cfg: Any, recipe_cls: type) -> Plan:
    """Validate the run against the file system; raises ConfigError with one clear line."""
    from .evaluation import load_metrics

    if cfg.output_dir is None:
        cfg.output_dir = default_output_dir(cfg, recipe_cls.name)
    output_dir = Path(cfg.output_dir)
    recipe = recipe_cls(cfg)
    recipe.validate_options()
    splits = ("train", "validation") if cfg.mode == "train" else ("validation",)
    check_data_files(cfg.data, splits)
    default_model = recipe.default_model_dir() if cfg.model.name_or_path is None else None
    model_source = resolve_model_source(cfg.model, default_model)
    check_deepspeed_config(cfg)
    threads_from_env()
    resume_dir = resolve_resume(cfg.train.resume_from, output_dir / "checkpoints") if cfg.mode == "train" else None
    check_output_dir(cfg, output_dir, resume_dir, model_source)
    metric_modules = load_metrics(recipe.metrics())
    return Plan(cfg=cfg, recipe=recipe, output_dir=output_dir, resume_dir=resume_dir, metric_modules=metric_modules)


def check_output_dir(cfg: Any, output_dir: Path, resume_dir: Optional[Path], model_source: str) -> None:
    """A previous run's output is never silently overwritten, and an evaluated model is never written into."""
    model_dir = Path(model_source)
    if model_dir.is_dir() and _same_or_inside(output_dir, model_dir):
        raise ConfigError(
            f"output_dir {str(output_dir)!r} is inside the model directory {model_source!r}; choose another output_dir so the model is left untouched"
        )
    if resume_dir is not None or cfg.train.overwrite_output_dir:
        return
    if output_dir.is_dir() and any(output_dir.iterdir()):
        raise ConfigError(
            f"output_dir {str(output_dir)!r} already holds a previous run; pass another output_dir, "
            "train.resume_from=latest to continue it, or train.overwrite_output_dir=true to replace it"
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir {str(output_dir)!r} is a file; pass a directory")


def _same_or_inside(path: Path, parent: Path) -> bool:
    path, parent = path.resolve(), parent.resolve()
    return path == parent or parent in path.parents
