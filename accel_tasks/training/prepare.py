"""Before the first step: the model and the data as the plan says, gathered into a RunSession; then the
output_dir and the trackers, once every check has passed.

Each check that needs the model or the data fails here, as one line, before anything is written.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from accel_tasks import log
from accel_tasks.config import RunConfig, run_splits, to_yaml
from accel_tasks.data.raw import check_columns
from accel_tasks.data.values import check_text_values, split_source
from accel_tasks.engines.accelerator import is_deepspeed, optimizer_offloaded
from accel_tasks.engines.compression import describe_compression
from accel_tasks.engines.fsdp import fsdp_requested
from accel_tasks.engines.performance import (
    attention_in_use,
    compile_settings,
    describe,
    fused_adamw,
    pad_multiple,
    set_tf32,
)
from accel_tasks.engines.precision import run_precision
from accel_tasks.engines.trackers import resolve_trackers, tracker_init_kwargs
from accel_tasks.features.cache import make_features
from accel_tasks.features.streaming import is_stream, stream_features
from accel_tasks.models.adapters import wrap_model
from accel_tasks.models.loading import count_parameters
from accel_tasks.preflight import Plan
from accel_tasks.recipe import Recipe, RunContext
from accel_tasks.runs.checkpoint import read_loop_state
from accel_tasks.runs.output_dir import prepare_output_dir
from accel_tasks.settings import with_settings
from accel_tasks.training.session import RunData, RunSession

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

# Library-style records (e.g. models.loading's "building ... with random weights"); the console is accel_tasks.log.
logger = logging.getLogger("accel_tasks")


def prepare_run(accelerator: Accelerator, plan: Plan) -> RunSession:
    """Read the data, give the recipe the run's decisions (one RunContext, ``Recipe.begin_run``) and check every
    split's columns and text values, then load the model (wrapped for peft.*) and preprocess the splits.

    The data comes first because nothing in it needs the model: a missing column or a null text is found in
    seconds, not after a large model has loaded.

    The session's settings are the recipe's once the data is prepared: the resolved config plus what was decided
    at run time (``Recipe.decide``), and the precision the run's evals compute in (``eval.precision``, from the
    Accelerator: engines/precision.py), which is what config.yaml, the checkpoints and the export save, so an
    eval-only run of the export computes as this run's evals did.
    """
    cfg, recipe = plan.cfg, plan.recipe
    tf32 = set_tf32(accelerator.device.type, cfg.train.tf32)
    pad_to = pad_multiple(accelerator.mixed_precision)
    raw = recipe.load_data(run_splits(cfg))
    references = _references(recipe, raw, cfg)
    recipe.begin_run(RunContext(pad_to_multiple_of=pad_to, with_references=references))
    check_raw_splits(recipe, raw, cfg)  # columns and text values: a bad row is found before the model loads
    model, processor = recipe.load_model()
    if cfg.mode != "train":
        recipe.adopt_model_settings(_model_settings(recipe, model))
    model = wrap_model(model, cfg.peft, cfg.mode, recipe.peft_modules_to_save)
    _describe_model(accelerator, cfg, model, tf32, pad_to)
    data = _prepare_data(accelerator, recipe, raw, cfg)
    precision = run_precision(cfg, accelerator.mixed_precision, is_deepspeed(accelerator), fsdp_requested())
    settings = with_settings(recipe.cfg, {"eval.precision": precision})
    return RunSession(accelerator, plan, settings, model, processor, data)


def _describe_model(accelerator: Accelerator, cfg: RunConfig, model: torch.nn.Module, tf32: bool, pad: Any) -> None:
    """The model line (class, trainable parameters) and the speed line (the switches in effect)."""
    trainable, total = count_parameters(model)
    log.info(
        f"model: {type(model).__name__}, trainable / total parameters: {trainable:,} / {total:,} "
        f"({100 * trainable / max(total, 1):.2f}%)"
    )
    device_type = accelerator.device.type
    training = {
        "AdamW": "fused" if fused_adamw(device_type, optimizer_offloaded(accelerator)) else "plain",
        "compile": compile_settings(cfg.train.compile),
        "grad_compression": describe_compression(cfg.train),
    }
    speed = describe(
        device=device_type,
        attention=attention_in_use(model),
        TF32=tf32,
        pad_to_multiple_of=pad,
        **(training if cfg.mode == "train" else {}),
    )
    log.info(speed)


def _references(recipe: Recipe, raw: Any, cfg: RunConfig) -> bool:
    """Whether the scored split has references: always in training and eval; mode=predict asks the recipe."""
    if cfg.mode != "predict":
        return True
    split = cfg.eval.split
    references = recipe.has_references(raw[split])
    log.info(
        f"predict: {len(raw[split])} inputs, "
        + ("with references: they are scored too" if references else "no references: predictions only")
    )
    return references


def check_raw_splits(recipe: Recipe, raw: Any, cfg: RunConfig) -> None:
    """Each split the run reads has the recipe's columns, its text columns hold text in every row, and it passes
    the recipe's own row checks (``check_raw``); streams are checked as they are read instead."""
    for split in run_splits(cfg):
        columns = raw[split].column_names
        check_columns(raw[split], recipe.required_columns(split, columns), split)
        check_text_values(raw[split], recipe.string_columns(split, columns), split_source(cfg.data, split))
        if not is_stream(raw[split]):
            recipe.check_raw(raw[split], split)


def _prepare_data(accelerator: Accelerator, recipe: Recipe, raw: Any, cfg: RunConfig) -> RunData:
    """Raw splits -> checked, prepared splits -> features (cached), or lazy streams for data.streaming."""
    features = {}
    for split in run_splits(cfg):
        # Again: settings adopted from the trained model (eval-only) can name other columns.
        check_columns(raw[split], recipe.required_columns(split, raw[split].column_names), split)
        if is_stream(raw[split]):  # data.streaming: read, shuffled and tokenized on the fly, this process's share only
            raw[split] = recipe.prepare_stream(raw[split], split)
            features[split] = stream_features(
                recipe, raw[split], split, cfg, accelerator.process_index, accelerator.num_processes
            )
        else:
            raw[split] = recipe.prepare_raw(raw[split], split)
            with accelerator.main_process_first():
                features[split] = make_features(recipe, raw[split], split, cfg.data)
            if split == "train" and cfg.train.packing:
                features[split] = recipe.pack_train_features(features[split], cfg.train.packing_length)
    return RunData(raw=raw, features=features)


def _model_settings(recipe: Recipe, model: torch.nn.Module) -> dict[str, Any]:
    """Eval-only: what the trained model fixes (labels, vocabulary) and the task options say otherwise, each with a
    line; it wins over the options (the recipe adopts it: adopt_model_settings)."""
    differ = {}
    for key, value in recipe.settings_from_model(model).items():
        current = getattr(recipe.options, key)
        current = OmegaConf.to_container(current) if OmegaConf.is_config(current) else current
        if current != value:
            log.info(f"task.{key}={value!r} from the model (the settings said {current!r})")
            differ[key] = value
    return differ


def start_outputs(run: RunSession) -> None:
    """Runs once every check has passed and on every rank together, so nothing is written for a run that fails
    early: output_dir made ours with the run's settings (config.yaml), then the trackers started."""
    accelerator, plan, cfg = run.accelerator, run.plan, run.cfg
    if accelerator.is_main_process:
        resume_step = None
        if plan.resume_dir is not None:
            resume_step = read_loop_state(plan.resume_dir).global_step
        prepare_output_dir(plan.output_dir, cfg.train.overwrite_output_dir, resume_step, to_yaml(cfg))
    accelerator.wait_for_everyone()
    accelerator.init_trackers(
        cfg.mode,
        config=_flat_scalars(cfg),
        init_kwargs=tracker_init_kwargs(resolve_trackers(cfg.train.report_to), plan.output_dir.name),
    )


def _flat_scalars(cfg: RunConfig) -> dict[str, Any]:
    """The settings as ``group.key`` -> value, the scalars only: what a tracker's run config can show."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, (int, float, str, bool)):
                flat[f"{prefix}{key}"] = value

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def setup_logging(accelerator: Accelerator) -> None:
    """Library verbosity and progress bars: warnings from the main process, errors only from the others; no bars
    where stderr is no terminal. The ``accel_tasks`` stdlib logger keeps library-style records (INFO on the main
    process), which appear only where the embedding program configures logging."""
    import datasets
    import huggingface_hub
    import transformers

    level = logging.INFO if accelerator.is_main_process else logging.WARNING
    logger.setLevel(level)
    if not log.interactive():
        # A log file or a cluster job: the per-step log lines are the progress report.
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
        huggingface_hub.utils.disable_progress_bars()
    if accelerator.is_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
