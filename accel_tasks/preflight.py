"""Config resolution and every check that needs no model or data, gathered into a typed run plan.

Everything a user can get wrong about the command fails here, as one line, before the Accelerator,
a model or a data set is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from omegaconf import DictConfig

from .adapters import check_peft_config_file
from .checkpoint import resolve_resume
from .config import RunConfig, build_config, load_yaml_layer, parse_overrides, run_splits
from .data import check_data_files
from .deepspeed_config import check_deepspeed_config
from .distributed import threads_from_env
from .errors import ConfigError
from .evaluation import load_metrics
from .modeling import resolve_model_source
from .recipe import Recipe
from .registry import available_recipes, load_recipe_class

if TYPE_CHECKING:
    from evaluate import EvaluationModule

# The preset section merged only when no model is named: settings for the recipe's bundled offline model.
BUNDLED_SECTION = "bundled_model"


@dataclass
class Plan:
    """A run that passed every cheap check: what the loop needs to start."""

    cfg: RunConfig
    recipe: Recipe
    output_dir: Path
    resume_dir: Optional[Path]
    metric_modules: dict[str, EvaluationModule]


def resolve_config(overrides: Sequence[str], config_file: Optional[str]) -> tuple[RunConfig, type[Recipe]]:
    """Merge schema -> recipe preset -> bundled-model settings -> --config -> key=value; (config, recipe class)."""
    for arg in overrides:
        if arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; options are --config, --print-config, --list (settings are key=value)")
    recipe_args = [arg.partition("=")[2] for arg in overrides if arg.partition("=")[0].strip() == "recipe"]
    file_layer = load_yaml_layer(config_file, "--config file") if config_file else None
    recipe_spec = recipe_args[-1] if recipe_args else (file_layer.get("recipe") if file_layer is not None else None)
    if not recipe_spec:
        names = ", ".join(sorted(available_recipes()))
        raise ConfigError(f"no recipe given; pass recipe=NAME (available: {names})")
    recipe_cls = load_recipe_class(str(recipe_spec))
    override_layer = parse_overrides(overrides, recipe_cls.Options)
    preset_layers, bundled_layers = _preset_layers(recipe_cls)
    user_layers = [("command-line overrides", override_layer)]
    if file_layer is not None:
        user_layers.insert(0, (f"--config {config_file}", file_layer))
    cfg = build_config(recipe_cls.Options, preset_layers + user_layers)
    if cfg.model.name_or_path is None and bundled_layers:
        # The bundled tiny model needs its own settings (e.g. a higher learning rate) to learn in minutes;
        # they sit between the preset and the user's settings, so anything the user sets still wins.
        cfg = build_config(recipe_cls.Options, preset_layers + bundled_layers + user_layers)
    cfg.recipe = str(recipe_spec)
    return cfg, recipe_cls


def _preset_layers(recipe_cls: type[Recipe]) -> tuple[list[tuple[str, DictConfig]], list[tuple[str, DictConfig]]]:
    """The preset as a layer, and its bundled_model section as a second one (empty lists when absent)."""
    preset = recipe_cls.preset_path()
    if preset is None:
        return [], []
    layer = load_yaml_layer(preset, "recipe preset")
    bundled = layer.pop(BUNDLED_SECTION, None)
    if bundled is not None and not isinstance(bundled, DictConfig):
        raise ConfigError(f"recipe preset {preset}: {BUNDLED_SECTION} must be a mapping of config keys")
    bundled_layers = [(f"{BUNDLED_SECTION} section of {preset.name}", bundled)] if bundled else []
    return [(f"preset {preset.name}", layer)], bundled_layers


def default_output_dir(cfg: RunConfig, recipe_name: str) -> str:
    return f"outputs/{recipe_name}" if cfg.mode == "train" else f"outputs/{recipe_name}-eval"


def make_plan(cfg: RunConfig, recipe_cls: type[Recipe]) -> Plan:
    """Validate the run against the file system; raises ConfigError with one clear line."""
    if cfg.output_dir is None:
        cfg.output_dir = default_output_dir(cfg, recipe_cls.name)
    output_dir = Path(cfg.output_dir)
    recipe = recipe_cls(cfg)
    recipe.validate_options()
    check_peft_config_file(cfg.peft)
    check_data_files(cfg.data, run_splits(cfg))
    default_model = recipe.default_model_dir() if cfg.model.name_or_path is None else None
    model_source = resolve_model_source(cfg.model, default_model)
    check_deepspeed_config(cfg)
    threads_from_env()
    resume_dir = resolve_resume(cfg.train.resume_from, output_dir / "checkpoints") if cfg.mode == "train" else None
    check_output_dir(cfg, output_dir, resume_dir, model_source)
    metric_modules = load_metrics(recipe.metrics())
    return Plan(cfg=cfg, recipe=recipe, output_dir=output_dir, resume_dir=resume_dir, metric_modules=metric_modules)


def check_output_dir(cfg: RunConfig, output_dir: Path, resume_dir: Optional[Path], model_source: str) -> None:
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
