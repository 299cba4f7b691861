"""Config resolution and every check that needs no model or data, gathered into a typed run plan.

Everything a user can get wrong about the command fails here, as one line, before the Accelerator,
a model or a data set is touched.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from accel_tasks import log
from accel_tasks.config import BUNDLED_MODELS, RunConfig, build_config, load_yaml_layer, parse_overrides, run_splits
from accel_tasks.config.aliases import trainer_flag_hint
from accel_tasks.data.raw import check_data_files
from accel_tasks.engines.accelerator import threads_from_env
from accel_tasks.engines.compression import check_grad_compression
from accel_tasks.engines.deepspeed_config import check_deepspeed_config, deepspeed_requested, world_size
from accel_tasks.engines.fsdp import check_fsdp_launch
from accel_tasks.engines.performance import check_compile_supported, compile_settings
from accel_tasks.engines.reshard import check_resume_layout
from accel_tasks.engines.trackers import resolve_trackers
from accel_tasks.errors import ConfigError
from accel_tasks.evaluation.eval_pass import load_metrics
from accel_tasks.evaluation.metric_checks import check_metrics_fit
from accel_tasks.features.streaming import check_streaming
from accel_tasks.manifest import safetensors_problem
from accel_tasks.models.adapters import check_peft_config_file
from accel_tasks.models.loading import (
    check_tokenizer_reference,
    check_trained_weights,
    resolve_model_source,
    saved_run_config,
)
from accel_tasks.recipe import Recipe
from accel_tasks.registry import available_recipes, load_recipe_class
from accel_tasks.runs.checkpoint import resolve_resume
from accel_tasks.runs.compatibility import check_resume_matches, check_scored_model_recipe
from accel_tasks.runs.output_dir import acquire_lock, holds_results
from accel_tasks.runs.output_dir import check_output_dir as check_run_dir
from accel_tasks.settings import freeze, with_settings

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
            raise ConfigError(
                trainer_flag_hint(overrides)
                or f"unknown option {arg!r}; options are --config, --print-config, --list (settings are key=value)"
            )
    recipe_args = [arg.partition("=")[2] for arg in overrides if arg.partition("=")[0].strip() == "recipe"]
    file_layer = load_yaml_layer(config_file, "--config file") if config_file else None
    recipe_spec = recipe_args[-1] if recipe_args else (file_layer.get("recipe") if file_layer is not None else None)
    saved = _saved_settings(overrides, file_layer)
    if not recipe_spec and saved is not None:
        recipe_spec = saved[1].get("recipe")
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
        # model.bundled=decoder_only adds the preset's bundled_decoder_only section after the common one.
        chosen = [layer for kind, layer in bundled_layers if kind in (BUNDLED_SECTION, f"bundled_{cfg.model.bundled}")]
        cfg = build_config(recipe_cls.Options, preset_layers + chosen + user_layers)
    elif saved is not None and cfg.mode != "train":
        # Eval on one of our exports or checkpoints: the settings it was trained and scored with come
        # back (max lengths, generation, labels, languages, data), so the path alone reproduces the run.
        path, saved_cfg = saved
        layer = settings_saved_with_model(saved_cfg, user_layers)
        check_scored_model_recipe(str(recipe_spec), saved_cfg.get("recipe"), path)
        cfg = build_config(
            recipe_cls.Options, preset_layers + [(f"settings saved with the model ({path})", layer)] + user_layers
        )
    cfg.recipe = str(recipe_spec)
    _epochs_over_preset_steps(cfg, user_layers)
    rerun = repeat_output_dir(cfg, config_file, overrides)
    if rerun is not None:
        cfg.output_dir = rerun
    return cfg, recipe_cls


# What an eval-only run takes from the settings saved with a model: everything that decides its predictions
# and their scoring, nothing about training, the model's location or where outputs go.
SAVED_GROUPS = ("task", "generation", "eval", "data", "seed")
# Keys that say where data comes from: a user who names other data gets none of the saved data.* settings.
DATA_SOURCE_KEYS = ("name", "config", "train_file", "validation_file", "test_file")


def _saved_settings(overrides: Sequence[str], file_layer: Optional[DictConfig]) -> Optional[tuple[Path, DictConfig]]:
    """The run config saved with model.name_or_path (a local export, checkpoint or adapter dir), if any."""
    names = [arg.partition("=")[2] for arg in overrides if arg.partition("=")[0].strip() == "model.name_or_path"]
    if not names and file_layer is not None:
        name = OmegaConf.select(file_layer, "model.name_or_path")
        names = [name] if name else []
    if not names or not names[-1]:
        return None
    path = saved_run_config(names[-1])
    return (path, load_yaml_layer(path, "settings saved with the model")) if path is not None else None


def settings_saved_with_model(saved: DictConfig, user_layers: list[tuple[str, DictConfig]]) -> DictConfig:
    """The part of a saved run config that an eval-only run reuses (see SAVED_GROUPS)."""
    layer = OmegaConf.create({key: saved[key] for key in SAVED_GROUPS if key in saved})
    if "eval" in layer:
        layer.eval.pop("split", None)
    user_data = [OmegaConf.select(user, f"data.{key}") for _, user in user_layers for key in DATA_SOURCE_KEYS]
    if any(value is not None for value in user_data):
        layer.pop("data", None)  # other data: its size limits and splits are the user's too
    return layer


def _preset_layers(
    recipe_cls: type[Recipe],
) -> tuple[list[tuple[str, DictConfig]], list[tuple[str, tuple[str, DictConfig]]]]:
    """The preset as a layer, and its sections for bundled models (bundled_model for every bundled model,
    bundled_decoder_only for that one), each as (section name, layer); empty lists when absent."""
    preset = recipe_cls.preset_path()
    if preset is None:
        return [], []
    layer = load_yaml_layer(preset, "recipe preset")
    bundled_layers = []
    for section in (BUNDLED_SECTION, *(f"bundled_{kind}" for kind in BUNDLED_MODELS)):
        bundled = layer.pop(section, None)
        if bundled is not None and not isinstance(bundled, DictConfig):
            raise ConfigError(f"recipe preset {preset}: {section} must be a mapping of config keys")
        if bundled:
            bundled_layers.append((section, (f"{section} section of {preset.name}", bundled)))
    return [(f"preset {preset.name}", layer)], bundled_layers


def default_output_dir(cfg: RunConfig, recipe_name: str) -> str:
    """outputs/RECIPE for training; outputs/RECIPE-eval (or -predict) for scoring, then -2, -3, ... when an earlier
    one holds results: scoring twice is common, and each run's predictions deserve their own folder."""
    if cfg.mode == "train":
        return f"outputs/{recipe_name}"
    base = f"outputs/{recipe_name}-{cfg.mode}"
    candidate, index = base, 1
    while holds_results(Path(candidate)):
        index += 1
        candidate = f"{base}-{index}"
    if candidate != base:
        log.info(f"{base} holds an earlier {cfg.mode} run's results: this run writes to {candidate}")
    return candidate


def _epochs_over_preset_steps(cfg: RunConfig, user_layers: list[tuple[str, DictConfig]]) -> None:
    """train.epochs typed by the user wins over a max_steps that only a preset set (max_steps wins over epochs in
    the loop, as in Trainer): without this, `train.epochs=1` trained the bundled preset's 1,200 steps without a word.
    """
    typed = {
        key
        for _, layer in user_layers
        for key in ("epochs", "max_steps")
        if OmegaConf.select(layer, f"train.{key}") is not None
    }
    if "epochs" in typed and "max_steps" not in typed and cfg.train.max_steps > 0:
        log.info(
            f"train.epochs={cfg.train.epochs} as given: the preset's train.max_steps={cfg.train.max_steps} is dropped "
            "(set train.max_steps to cap the steps)"
        )
        cfg.train.max_steps = -1


def repeat_output_dir(cfg: RunConfig, config_file: Optional[str], overrides: Sequence[str]) -> Optional[str]:
    """``--config OUTPUT_DIR/config.yaml`` repeats that run: into OUTPUT_DIR-rerun (-rerun-2, ...), said in one
    notice, unless output_dir is given on the command line. Why: the saved config names its own output_dir, which
    holds the run it describes; a repeat there would be refused, or with overwrite_output_dir replace it."""
    if config_file is None or cfg.output_dir is None or cfg.mode != "train" or cfg.train.resume_from is not None:
        return None
    if any(arg.partition("=")[0].strip() == "output_dir" for arg in overrides):
        return None
    saved_in = Path(config_file).expanduser().resolve().parent
    if saved_in != Path(cfg.output_dir).expanduser().resolve():
        return None
    candidate, index = f"{cfg.output_dir}-rerun", 1
    while Path(candidate).exists() and any(Path(candidate).iterdir()):
        index += 1
        candidate = f"{cfg.output_dir}-rerun-{index}"
    log.info(
        f"--config {config_file} is the config of the run in {cfg.output_dir}: repeating it into {candidate} "
        "(output_dir=DIR chooses another)"
    )
    return candidate


def make_plan(cfg: RunConfig, recipe_cls: type[Recipe]) -> Plan:
    """Validate the run against the file system; raises ConfigError with one clear line.

    The plan's config is read-only: preflight's own decisions (:func:`preflight_settings`) are made first, and
    what the run decides later goes through ``Recipe.decide`` into a new config (settings.py).
    """
    if cfg.mode == "predict":
        check_predict_inputs(cfg)
    cfg = freeze(with_settings(cfg, preflight_settings(cfg, recipe_cls)))
    output_dir = Path(cfg.output_dir)
    recipe = recipe_cls(cfg)
    recipe.validate_options()
    check_peft_config_file(cfg.peft)
    check_scheduler(cfg.train.lr_scheduler)  # reads transformers' source: no import
    check_training_options(cfg, recipe)
    check_data_files(cfg.data, run_splits(cfg))
    default_model = recipe.default_model_dir() if cfg.model.name_or_path is None else None
    if cfg.mode != "train" and cfg.model.name_or_path is None:
        raise ConfigError(
            f"mode={cfg.mode} scores a trained model, and the bundled one has random weights: set "
            f"model.name_or_path=<an export such as outputs/{recipe_cls.name}/model, a checkpoint, "
            "an adapter dir or a hub id>"
        )
    model_source = resolve_model_source(cfg.model, default_model)
    check_tokenizer_reference(cfg.model.tokenizer_name)
    if cfg.mode != "train":
        check_trained_weights(model_source)
    check_deepspeed_config(cfg)
    # FSDP2 with DeepSpeed, FSDP1, fp16, compile or DDP compression: one line, before anything loads.
    check_fsdp_launch(
        deepspeed_requested(cfg), compile_settings(cfg.train.compile) is not None, cfg.train.grad_compression, cfg.mode
    )
    if cfg.mode == "train":
        check_compile_supported(compile_settings(cfg.train.compile), deepspeed_requested(cfg))
        check_grad_compression(cfg, deepspeed_requested(cfg), world_size())
    threads_from_env()
    resume_dir = resolve_resume(cfg.train.resume_from, output_dir / "checkpoints") if cfg.mode == "train" else None
    if resume_dir is not None:
        check_resume_matches(cfg.recipe, resume_dir, model_source)  # the same recipe and architecture
        check_resume_layout(cfg, resume_dir)  # DeepSpeed or not, ZeRO stage, number of processes (reshard.py)
    check_streaming(cfg, recipe_cls, resume_dir)
    # The output_dir's contents now (read only), so that this common mistake is not found only after the
    # metrics have imported evaluate and datasets (seconds); checked again under the lock below.
    check_output_dir(cfg, output_dir, resume_dir, model_source, lock=False)
    check_weight_files(model_source)  # reads each weights file's header: after the cheaper checks above
    # Below, imports that take seconds: accelerate's tracker table (torch), evaluate and datasets for the metrics.
    resolve_trackers(cfg.train.report_to)
    metric_modules = load_metrics(recipe.metrics())
    check_metrics_fit(recipe, metric_modules)
    # Last: the lock is the first thing a run writes, so every check above has passed.
    check_output_dir(cfg, output_dir, resume_dir, model_source)
    return Plan(cfg=cfg, recipe=recipe, output_dir=output_dir, resume_dir=resume_dir, metric_modules=metric_modules)


def preflight_settings(cfg: RunConfig, recipe_cls: type[Recipe]) -> dict[str, Any]:
    """The settings preflight decides, written into the run's config (config.yaml says what was used):
    the default output_dir, and the test split as the scored one for mode=predict."""
    settings: dict[str, Any] = {}
    if cfg.output_dir is not None and not str(cfg.output_dir).strip():
        raise ConfigError(
            "output_dir is empty (output_dir= with no value); pass output_dir=DIR, or leave it out for the default "
            f"outputs/{recipe_cls.name}"
        )
    if cfg.output_dir is None:
        settings["output_dir"] = default_output_dir(cfg, recipe_cls.name)
    if cfg.mode == "predict":
        settings["eval.split"] = "test"
    return settings


def check_weight_files(source: str) -> None:
    """Every safetensors file of a local model directory is whole, in training as in eval (with a manifest or not):
    a truncated or corrupted file was a SafetensorError traceback inside from_pretrained."""
    path = Path(source)
    if not path.is_dir():
        return
    for weights in sorted(path.rglob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem is not None:
            where = weights.parent.relative_to(path).as_posix()
            inside = "" if where == "." else f" ({where}/)"
            raise ConfigError(
                f"model.name_or_path {source!r}: {problem}{inside}; copy or export the model again, or point at "
                "another checkpoint"
            )


def check_predict_inputs(cfg: RunConfig) -> None:
    """mode=predict reads the test split: data.test_file, or data.test_split of data.name (HF's --test_file /
    do_predict); preflight_settings makes it the scored split."""
    if cfg.data.test_file is None and cfg.data.name is None:
        raise ConfigError(
            "mode=predict needs inputs: set data.test_file=FILE (jsonl/json/csv/tsv/parquet; references optional), "
            "or data.name=<hub id or local dataset dir> with data.test_split=<split>"
        )


def check_scheduler(name: str) -> None:
    """train.lr_scheduler must be a transformers schedule name; a typo gets the closest one."""
    known = transformers_schedule_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"train.lr_scheduler={name!r} is not a transformers schedule; {hint}known: {', '.join(known)}"
        )


def transformers_schedule_names() -> list[str]:
    """The values of transformers' ``SchedulerType``, read from its source file without importing it.

    Why: ``from transformers import SchedulerType`` imports ``trainer_utils``, which pulls in torch and peft
    (5-10 s on 2 cores), and this check runs for every command, error lines included. Importing is the
    fallback where the source cannot be read or no longer holds the class.
    """
    import ast
    import importlib.util

    spec = importlib.util.find_spec("transformers")  # a top-level find_spec imports nothing
    source = Path(spec.origin).parent / "trainer_utils.py" if spec is not None and spec.origin else None
    try:
        tree = ast.parse(source.read_text()) if source is not None else None
    except (OSError, SyntaxError, ValueError):
        tree = None
    for node in tree.body if tree is not None else ():
        if isinstance(node, ast.ClassDef) and node.name == "SchedulerType":
            names = [
                stmt.value.value
                for stmt in node.body
                if isinstance(stmt, ast.Assign)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ]
            if names:
                return names
    from transformers import SchedulerType

    return [item.value for item in SchedulerType]


def check_training_options(cfg: RunConfig, recipe: Recipe) -> None:
    """Training settings that depend on the recipe."""
    if cfg.mode == "train" and cfg.train.label_smoothing and not recipe.supports_label_smoothing:
        raise ConfigError(
            f"train.label_smoothing applies to generative recipes (summarization, translation, speech seq2seq); "
            f"{recipe.name} does not use it: set it to 0"
        )


def check_output_dir(
    cfg: RunConfig, output_dir: Path, resume_dir: Optional[Path], model_source: str, lock: bool = True
) -> None:
    """An evaluated model is never written into; then the output_dir is locked and checked (rundir).

    ``lock=False``: the same checks without taking the lock (nothing written), for an early answer.
    """
    model_dir = Path(model_source)
    if model_dir.is_dir() and _same_or_inside(output_dir, model_dir):
        raise ConfigError(
            f"output_dir {str(output_dir)!r} is inside the model directory {model_source!r}; "
            "choose another output_dir so the model is left untouched"
        )
    # The lock before the contents check: what it sees cannot change under it (a second run starting beside it).
    if lock:
        acquire_lock(output_dir)
    check_run_dir(output_dir, resume_dir is not None, cfg.train.overwrite_output_dir, cfg.mode)


def _same_or_inside(path: Path, parent: Path) -> bool:
    path, parent = path.resolve(), parent.resolve()
    return path == parent or parent in path.parents
