"""The run config: typed groups, layered merge, and validation that fails before anything heavy.

Merge order (assembled by preflight.resolve_config): schema defaults -> recipe preset -> bundled-model
settings -> ``--config FILE`` -> ``key=value`` overrides. Each field's docstring is its ``--help`` line.
This module imports nothing of the package but ``errors``.
Every layer is checked against the schema first so that a typo gets a "did you mean" hint instead of
an OmegaConf stack trace.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import math
import textwrap
import typing
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from accel_tasks.errors import ConfigError, first_line


@dataclass
class ModelConfig:
    """model.*: what is trained or evaluated."""

    name_or_path: Optional[str] = None
    """Hub id or local directory (a saved model, an export, a checkpoint or an adapter); None: the recipe's bundled model."""
    tokenizer_name: Optional[str] = None
    """Tokenizer / processor to load instead of the model's own."""
    revision: str = "main"
    """Hub revision (branch, tag or commit) of model.name_or_path."""
    trust_remote_code: bool = False
    """Run modelling code shipped with a hub model; off unless you trust it."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    attn_implementation: Optional[str] = None
    """Attention kernel: None picks sdpa (torch's scaled_dot_product_attention) where the model supports it, else eager; or eager, sdpa, flash_attention_2, flex_attention."""


@dataclass
class DataConfig:
    """data.*: where the examples come from."""

    name: Optional[str] = None
    """Hub dataset id (or a local dataset directory) for datasets.load_dataset."""
    config: Optional[str] = None
    """The dataset's configuration name (e.g. 3.0.0 for cnn_dailymail)."""
    train_split: str = "train"
    """The dataset split used for training."""
    validation_split: str = "validation"
    """The dataset split used as validation."""
    test_split: str = "test"
    """The dataset split used as test."""
    train_file: Optional[str] = None
    """Local training file: json, jsonl, csv, tsv or parquet."""
    validation_file: Optional[str] = None
    """Local validation file: json, jsonl, csv, tsv or parquet."""
    test_file: Optional[str] = None
    """Local test file: json, jsonl, csv, tsv or parquet."""
    field: Optional[str] = None
    """JSON files whose rows sit under one key (e.g. {"version": ..., "data": [rows]}): that key, as HF scripts' field="""
    max_train_samples: Optional[int] = None
    """Use only the first N training examples."""
    max_eval_samples: Optional[int] = None
    """Score only the first N evaluation examples."""
    preprocessing_num_workers: Optional[int] = None
    """Processes for datasets.map preprocessing; None: in process."""
    dataloader_num_workers: int = 0
    """DataLoader worker processes."""
    overwrite_cache: bool = False
    """Redo preprocessing instead of loading cached features."""
    streaming: bool = False
    """Stream the train split (datasets IterableDataset) instead of loading it: rows read, shuffled in a buffer and tokenized on the fly, each process its own share; needs train.max_steps. Eval splits stay map-style (streamed only to take data.max_eval_samples rows)."""
    shuffle_buffer: int = 1000
    """data.streaming: rows held in the seeded shuffle buffer (datasets' buffer_size; more mixes better, holds more rows); 0: the stream's own order."""


@dataclass
class TrainConfig:
    """train.*: optimisation, schedule, logging and checkpoints."""

    lr: float = 5e-5
    """Peak learning rate of AdamW (Trainer: learning_rate)."""
    weight_decay: float = 0.0
    """AdamW weight decay; biases and norm weights get none."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    lr_scheduler: str = "linear"
    """transformers schedule name: linear, cosine, constant, constant_with_warmup, polynomial, ..."""
    warmup_steps: int = 0
    """Warm-up optimizer steps; wins over warmup_ratio when > 0."""
    warmup_ratio: float = 0.0
    """Warm-up as a fraction of all optimizer steps."""
    epochs: int = 3
    """Passes over the training data (Trainer: num_train_epochs)."""
    max_steps: int = -1
    """Optimizer steps; when > 0 it wins over epochs."""
    batch_size: int = 8
    """Examples per process per micro-batch (Trainer: per_device_train_batch_size)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (Trainer: gradient_accumulation_steps)."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this; 0 disables clipping."""
    log_every: int = 10
    """Log loss, learning rate and throughput every N optimizer steps (Trainer: logging_steps)."""
    eval_every: int = 0
    """Evaluate every N optimizer steps; 0: only at the end of training (Trainer: eval_steps)."""
    save_every: int = 0
    """Write a checkpoint every N optimizer steps; 0: no intermediate checkpoints (Trainer: save_steps)."""
    save_total_limit: Optional[int] = 2
    """Keep the newest N checkpoints; None keeps every one."""
    resume_from: Optional[str] = None
    """Continue a run: latest, or a checkpoint directory."""
    overwrite_output_dir: bool = False
    """Replace a previous run's outputs in output_dir."""
    threads: Optional[int] = None
    """Torch intra-op threads per process; None: usable cores / local processes."""
    early_stopping_patience: int = 0
    """Stop after this many periodic evaluations without improvement of eval.best_metric; 0: off."""
    early_stopping_threshold: float = 0.0
    """How much eval.best_metric must improve to count as better."""
    export_best: bool = False
    """Export the best evaluated checkpoint instead of the last weights (Trainer: load_best_model_at_end)."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy loss for generative recipes (Trainer: label_smoothing_factor)."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Trackers by accelerate's names: tensorboard, wandb, mlflow, aim, comet_ml, clearml, dvclive, swanlab, trackio; [none]: no tracker."""
    eval_at_start: bool = False
    """Score the model before the first step (step 0 in eval_history.jsonl), so the gain is visible (Trainer: eval_on_start)."""
    group_by_length: bool = False
    """Batches of similar lengths: shuffled mega-batches sorted by length, as HF's LengthGroupedSampler (less padding)."""
    compile: bool = False
    """torch.compile the training forward and backward (inductor; Trainer: torch_compile): a one-time compile, then faster steps on GPUs; eval stays eager."""
    tf32: bool = True
    """On CUDA, fp32 matmuls use TF32 tensor cores (Ampere and newer; Trainer: tf32); false keeps full fp32. No effect on CPU."""
    grad_compression: Optional[str] = None
    """Compress the gradient all-reduce of multi-process DDP runs (accelerate's DDP communication hooks): powersgd (low-rank), fp16 or bf16 (half precision; bf16 needs CUDA + NCCL); None: full fp32. Not with DeepSpeed (it does its own communication)."""
    powersgd_rank: int = 1
    """PowerSGD: rank of the low-rank approximation of each gradient matrix (higher: closer to the uncompressed run, more bytes)."""
    powersgd_start_iter: int = 1000
    """PowerSGD: optimizer steps all-reduced uncompressed before compression starts (torch's start_powerSGD_iter warm-up; at least 2)."""


@dataclass
class EvalConfig:
    """eval.*: how the model is scored."""

    batch_size: int = 16
    """Examples per process per eval batch (Trainer: per_device_eval_batch_size)."""
    metrics: Optional[list[str]] = None
    """evaluate ids or module paths; None: the recipe's default."""
    metric_args: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments per metric, e.g. {sacrebleu: {tokenize: intl}}."""
    split: str = "validation"
    """Which split is scored: validation, test or train (data.<split>_split / data.<split>_file)."""
    group_by_length: bool = True
    """Sort eval features by length so batches hold similar lengths; outputs are restored to input order."""
    max_tokens_per_batch: Optional[int] = None
    """Eval batches by padded size instead of eval.batch_size: length-sorted, rows x longest row <= this (many short inputs per batch, few long); None: off."""
    best_metric: Optional[str] = None
    """The metric that picks the best evaluation; None: the recipe's primary one (rougeL, sacrebleu, f1, wer)."""
    greater_is_better: Optional[bool] = None
    """Direction of eval.best_metric; None: known per metric (error rates and losses lower, scores higher)."""


@dataclass
class GenerationOptions:
    """generation.*: decoding for generative recipes; None keeps the model's generation_config value."""

    num_beams: Optional[int] = None
    """Beam width; 1 is greedy."""
    max_new_tokens: Optional[int] = None
    """Longest generated output; None: task.max_target_length."""
    length_penalty: Optional[float] = None
    """Beam-search length penalty (> 1 favours longer outputs)."""
    no_repeat_ngram_size: Optional[int] = None
    """Forbid repeating n-grams of this size."""
    early_stopping: Optional[bool] = None
    """Stop beam search when num_beams candidates have finished."""


@dataclass
class PeftOptions:
    """peft.*: parameter-efficient fine-tuning (LoRA or any peft method)."""

    method: Optional[str] = None
    """None (full fine-tuning) or lora."""
    r: int = 8
    """LoRA rank."""
    alpha: int = 16
    """LoRA alpha (scaling = alpha / r)."""
    dropout: float = 0.05
    """LoRA dropout."""
    target_modules: Optional[list[str]] = None
    """None: the architecture family's attention + feed-forward linear layers; [all-linear]: every linear layer but the head."""
    modules_to_save: Optional[list[str]] = None
    """Trained in full and saved with the adapter; None: the recipe's task head (qa_outputs, CTC lm_head, ...)."""
    config: Optional[str] = None
    """A peft config dict as JSON (peft_type IA3, LOHA, ...); unset target_modules / modules_to_save get the defaults above."""
    merge: bool = False
    """Also export output_dir/model_merged: the adapter merged into the base, a plain model."""


@dataclass
class NoOptions:
    """Task options of a recipe that has none."""


@dataclass
class RunConfig:
    """The whole run: every group above, plus the recipe's own task.* options."""

    recipe: str = "summarization"
    """Built-in name, entry-point name, path/to/file.py:Class or package.module:Class."""
    mode: str = "train"
    """train; eval (score a model without training); predict (predictions.jsonl for data.test_file, references optional)."""
    output_dir: Optional[str] = None
    """Where everything is written; None: outputs/<recipe> for training, outputs/<recipe>-eval for eval-only runs."""
    seed: int = 42
    """Seed of weights init, shuffling and dropout."""
    deepspeed: Optional[str] = None
    """A DeepSpeed JSON config; its auto values are filled from this run config."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    peft: PeftOptions = field(default_factory=PeftOptions)
    task: Any = None
    """The recipe's Options dataclass."""


MODES = ("train", "eval", "predict")
# The splits a run can read (data.<split>_split / data.<split>_file).
SPLITS = ("train", "validation", "test")


def parse_overrides(args: typing.Sequence[str], recipe_options: type = NoOptions) -> DictConfig:
    """Turn ``a.b=c`` arguments into one config layer.

    Values parse as YAML (numbers, lists, booleans), except for text settings, which are taken
    verbatim so that ``task.source_prefix=summarize: `` stays a string.
    """
    layer = OmegaConf.create({})
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith("-") or " " in key:
            raise ConfigError(f"malformed override {arg!r}: expected key=value, e.g. train.lr=3e-4")
        try:
            if _is_text_field(recipe_options, key):
                item = OmegaConf.create({})
                OmegaConf.update(item, key, None if value in ("null", "None", "~") else value, force_add=True)
            else:
                item = OmegaConf.from_dotlist([f"{key}={value}"])
            layer = OmegaConf.merge(layer, item)
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise ConfigError(f"malformed override {arg!r}: {first_line(exc)}") from None
    return layer


def _is_text_field(recipe_options: type, dotted: str) -> bool:
    """Whether ``dotted`` names a str (or Optional[str]) setting of the schema."""
    node: Any = RunConfig
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        if node is RunConfig and part == "task":
            node = recipe_options
            continue
        if not is_dataclass(node):
            return False
        hint = typing.get_type_hints(node).get(part)
        if hint is None:
            return False
        if index == len(parts) - 1:
            return hint is str or hint == Optional[str]
        node = hint
    return False


def load_yaml_layer(path: str | Path, what: str) -> DictConfig:
    """Read a YAML config file (safe_load) as one merge layer."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist; pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold a mapping of config keys, got {type(data).__name__}")
    return OmegaConf.create(data)


def build_config(recipe_options: type, layers: typing.Sequence[tuple[str, DictConfig]]) -> DictConfig:
    """Merge named layers onto the schema; ``recipe_options`` is the recipe's Options dataclass."""
    merged = schema(recipe_options)
    for source, layer in layers:
        layer = _normalise_layer(merged, layer, source)
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as exc:
            raise ConfigError(_describe_merge_error(exc, source)) from None
    _check_values(merged)
    return merged


def schema(recipe_options: type) -> DictConfig:
    base = OmegaConf.structured(RunConfig)
    base.task = OmegaConf.structured(recipe_options)
    return base


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def all_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted names of every leaf and group in a config, for suggestions."""
    keys = []
    for key in node.keys():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and OmegaConf.get_type(child) is not dict:
            keys.extend(all_keys(child, dotted + "."))
    return keys


def _normalise_layer(target: DictConfig, layer: DictConfig, source: str, prefix: str = "") -> DictConfig:
    """Reject unknown keys with a suggestion; a scalar given for a list field becomes a list of one."""
    for key in list(layer.keys()):
        dotted = f"{prefix}{key}"
        if key not in target:
            raise ConfigError(
                f"unknown config key {dotted!r} in {source}{_suggestion(dotted, all_keys(_root(target)))}"
            )
        target_node = target._get_node(key)
        value = layer._get_node(key)
        if isinstance(target_node, DictConfig) and OmegaConf.get_type(target_node) is not dict:
            if isinstance(value, DictConfig):
                _normalise_layer(target_node, value, source, dotted + ".")
            elif value._value() is not None:
                raise ConfigError(f"{dotted} is a group of settings in {source}; set its keys, e.g. {dotted}.<key>=...")
        elif _is_list_field(target, key) and not isinstance(value, (DictConfig,)) and not OmegaConf.is_list(value):
            scalar = value._value()
            if scalar is not None:
                layer[key] = [scalar]
    return layer


def _root(node: DictConfig) -> DictConfig:
    while node._get_parent() is not None:
        node = node._get_parent()
    return node


def _is_list_field(parent: DictConfig, key: str) -> bool:
    object_type = OmegaConf.get_type(parent)
    if not is_dataclass(object_type):
        return False
    hints = typing.get_type_hints(object_type)
    hint = hints.get(key)
    for candidate in (hint, *typing.get_args(hint)):
        if typing.get_origin(candidate) in (list, tuple):
            return True
    return False


# HF Trainer / example-script names -> ours: users of those tools type them, and spelling alone would not find
# ours (learning_rate is far from lr). A typo of a Trainer name is matched against this table too.
TRAINER_NAMES: dict[str, str] = {
    "learning_rate": "train.lr",
    "lr_scheduler_type": "train.lr_scheduler",
    "num_train_epochs": "train.epochs",
    "per_device_train_batch_size": "train.batch_size",
    "per_gpu_train_batch_size": "train.batch_size",
    "train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "eval.batch_size",
    "eval_batch_size": "eval.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "max_grad_norm": "train.max_grad_norm",
    "logging_steps": "train.log_every",
    "eval_steps": "train.eval_every",
    "save_steps": "train.save_every",
    "warmup_ratio": "train.warmup_ratio",
    "warmup_steps": "train.warmup_steps",
    "weight_decay": "train.weight_decay",
    "adam_beta1": "train.adam_beta1",
    "adam_beta2": "train.adam_beta2",
    "adam_epsilon": "train.adam_epsilon",
    "max_steps": "train.max_steps",
    "max_train_steps": "train.max_steps",
    "save_total_limit": "train.save_total_limit",
    "resume_from_checkpoint": "train.resume_from",
    "overwrite_output_dir": "train.overwrite_output_dir",
    "model_name_or_path": "model.name_or_path",
    "tokenizer_name": "model.tokenizer_name",
    "gradient_checkpointing": "model.gradient_checkpointing",
    "dataset_name": "data.name",
    "dataset_config_name": "data.config",
    "max_eval_samples": "data.max_eval_samples",
    "max_train_samples": "data.max_train_samples",
    "dataloader_num_workers": "data.dataloader_num_workers",
    "preprocessing_num_workers": "data.preprocessing_num_workers",
    "generation_num_beams": "generation.num_beams",
    "num_beams": "generation.num_beams",
    "generation_max_length": "generation.max_new_tokens",
    "max_new_tokens": "generation.max_new_tokens",
    "max_source_length": "task.max_source_length",
    "max_target_length": "task.max_target_length",
    "source_prefix": "task.source_prefix",
    "max_seq_length": "task.max_seq_length",
    "metric_for_best_model": "eval.best_metric",
    "greater_is_better": "eval.greater_is_better",
    "load_best_model_at_end": "train.export_best",
    "label_smoothing_factor": "train.label_smoothing",
    "doc_stride": "task.doc_stride",
    "report_to": "train.report_to",
    "eval_on_start": "train.eval_at_start",
    "group_by_length": "train.group_by_length",
    "torch_compile": "train.compile",
    "tf32": "train.tf32",
    "attn_implementation": "model.attn_implementation",
    "test_file": "data.test_file",
}
# Trainer flags that are launcher settings here, not run-config keys.
LAUNCHER_NAMES = {
    "fp16": "mixed precision is a launcher setting: accelerate launch --mixed_precision fp16 (or bf16), or the accelerate config",
    "bf16": "mixed precision is a launcher setting: accelerate launch --mixed_precision bf16, or the accelerate config",
    "do_predict": "predicting without training is mode=predict model.name_or_path=MODEL data.test_file=FILE",
    "do_eval": "scoring without training is mode=eval model.name_or_path=MODEL; a training run always scores at its end",
    "local_rank": "processes are the launcher's: accelerate launch --num_processes N",
    "predict_with_generate": "generative recipes always evaluate on generated text; set generation.* to tune it",
}


def _suggestion(key: str, candidates: list[str]) -> str:
    leaf = key.rsplit(".", 1)[-1]
    if leaf in LAUNCHER_NAMES:
        return f"; {LAUNCHER_NAMES[leaf]}"
    trainer_name = (
        leaf
        if leaf in TRAINER_NAMES
        else next(iter(difflib.get_close_matches(leaf, list(TRAINER_NAMES), n=1, cutoff=0.85)), None)
    )
    if trainer_name is not None and TRAINER_NAMES[trainer_name] in candidates:
        ours = TRAINER_NAMES[trainer_name]
        return f"; did you mean {ours!r}? (Trainer's {trainer_name} is {ours} here)"
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:
        close = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf][:1]
    return f"; did you mean {close[0]!r}?" if close else "; run with --help to see every key"


def _describe_merge_error(exc: OmegaConfBaseException, source: str) -> str:
    key = getattr(exc, "full_key", None) or "?"
    message = first_line(exc)
    if "could not be converted" in message or "Invalid value assigned" in message or "is not a" in message:
        return f"wrong type for {key} in {source}: {message}"
    return f"invalid value for {key} in {source}: {message}"


def _check_values(cfg: DictConfig) -> None:
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r} is not one of {', '.join(MODES)}")
    positive = {
        "train.batch_size": cfg.train.batch_size,
        "train.grad_accum": cfg.train.grad_accum,
        "eval.batch_size": cfg.eval.batch_size,
        "train.log_every": cfg.train.log_every,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    for key in ("train.eval_every", "train.save_every", "train.warmup_steps"):
        if OmegaConf.select(cfg, key) < 0:
            raise ConfigError(f"{key} must be 0 or more, got {OmegaConf.select(cfg, key)}")
    if not 0.0 <= cfg.train.warmup_ratio < 1.0:
        raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {cfg.train.warmup_ratio}")
    if cfg.train.max_steps == 0 or cfg.train.max_steps < -1:
        raise ConfigError(
            f"train.max_steps={cfg.train.max_steps} would not train; use a positive number of optimizer steps, or -1 to let train.epochs decide"
        )
    if cfg.train.max_steps == -1 and cfg.train.epochs < 1:
        raise ConfigError(
            f"train.epochs={cfg.train.epochs} would not train; set train.epochs >= 1 or train.max_steps > 0"
        )
    _check_optimizer_values(cfg.train)
    _check_generation_values(cfg.generation)
    _check_data_values(cfg.data)
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed={cfg.seed} must be in [0, 2**32): numpy and torch seeds are unsigned 32-bit")
    if cfg.train.save_total_limit is not None and cfg.train.save_total_limit < 1:
        raise ConfigError("train.save_total_limit must be at least 1 (or null to keep every checkpoint)")
    if cfg.eval.max_tokens_per_batch is not None and cfg.eval.max_tokens_per_batch < 1:
        raise ConfigError(
            f"eval.max_tokens_per_batch={cfg.eval.max_tokens_per_batch} must be at least 1 token (or null: batches of eval.batch_size), e.g. 8192"
        )
    if cfg.eval.split not in SPLITS:
        raise ConfigError(f"eval.split={cfg.eval.split!r} is not one of {', '.join(SPLITS)}")
    if cfg.mode == "train" and cfg.eval.split == "train":
        raise ConfigError(
            "eval.split=train in a training run would score the data it learns from; use validation or test"
        )
    check_peft_values(cfg.peft)


def _check_optimizer_values(train: TrainConfig) -> None:
    checks = [
        ("lr", train.lr, train.lr >= 0 and math.isfinite(train.lr), "a learning rate >= 0, e.g. train.lr=5e-5"),
        ("weight_decay", train.weight_decay, train.weight_decay >= 0, "0 or more, e.g. train.weight_decay=0.01"),
        ("adam_beta1", train.adam_beta1, 0 <= train.adam_beta1 < 1, "a value in [0, 1), e.g. 0.9"),
        ("adam_beta2", train.adam_beta2, 0 <= train.adam_beta2 < 1, "a value in [0, 1), e.g. 0.999"),
        ("adam_epsilon", train.adam_epsilon, train.adam_epsilon > 0, "a small positive number, e.g. 1e-8"),
        (
            "max_grad_norm",
            train.max_grad_norm,
            train.max_grad_norm >= 0,
            "0 (no clipping) or a positive norm, e.g. 1.0",
        ),
    ]
    for key, value, ok, fix in checks:
        if not ok:
            raise ConfigError(f"train.{key}={value} is not valid; use {fix}")
    if train.early_stopping_patience < 0 or train.early_stopping_threshold < 0:
        raise ConfigError("train.early_stopping_patience and train.early_stopping_threshold must be 0 or more")
    if (train.early_stopping_patience or train.export_best) and train.eval_every < 1:
        what = "train.early_stopping_patience" if train.early_stopping_patience else "train.export_best"
        raise ConfigError(f"{what} needs periodic evaluations to compare: set train.eval_every=N (optimizer steps)")
    if not 0.0 <= train.label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing={train.label_smoothing} must be in [0, 1), e.g. 0.1")
    if train.threads is not None and train.threads < 1:
        raise ConfigError(f"train.threads={train.threads} must be at least 1 (or null: cores / local processes)")


def _check_data_values(data: DataConfig) -> None:
    for key in ("max_train_samples", "max_eval_samples", "preprocessing_num_workers"):
        value = getattr(data, key)
        if value is not None and value < 1:
            raise ConfigError(
                f"data.{key}={value} must be at least 1 (or null: {'all examples' if 'samples' in key else 'in process'})"
            )
    if data.shuffle_buffer < 0:
        raise ConfigError(
            f"data.shuffle_buffer={data.shuffle_buffer} must be 0 (no shuffling) or a number of rows, e.g. 1000"
        )
    if data.dataloader_num_workers < 0:
        raise ConfigError(
            f"data.dataloader_num_workers={data.dataloader_num_workers} must be 0 (load in the main process) or more"
        )


def _check_generation_values(generation: GenerationOptions) -> None:
    if generation.num_beams is not None and generation.num_beams < 1:
        raise ConfigError(f"generation.num_beams={generation.num_beams} must be at least 1 (1 is greedy decoding)")
    if generation.max_new_tokens is not None and generation.max_new_tokens < 1:
        raise ConfigError(f"generation.max_new_tokens={generation.max_new_tokens} must be at least 1")
    if generation.no_repeat_ngram_size is not None and generation.no_repeat_ngram_size < 0:
        raise ConfigError(f"generation.no_repeat_ngram_size={generation.no_repeat_ngram_size} must be 0 (off) or more")
    if generation.length_penalty is not None and not math.isfinite(generation.length_penalty):
        raise ConfigError(f"generation.length_penalty={generation.length_penalty} must be a finite number")


def run_splits(cfg: RunConfig) -> tuple[str, ...]:
    """The splits a run reads, the scored one last: (train, eval.split) for training, (eval.split,) otherwise.

    mode=predict reads the test split (data.test_file, or data.test_split of data.name): preflight sets
    eval.split=test for it, so the saved config says which split was predicted.
    """
    return ("train", cfg.eval.split) if cfg.mode == "train" else (cfg.eval.split,)


def peft_enabled(peft_cfg: PeftOptions) -> bool:
    """Whether the run trains an adapter (peft.method or peft.config set)."""
    return peft_cfg.method is not None or peft_cfg.config is not None


def check_peft_values(peft_cfg: PeftOptions) -> None:
    """The peft.* values that need no file and no model; peft.config's file is read in preflight."""
    if peft_cfg.method is not None and peft_cfg.method != "lora" and peft_cfg.config is None:
        raise ConfigError(
            f"peft.method={peft_cfg.method!r} is not supported directly; use peft.method=lora, "
            "or pass any other peft method as peft.config=FILE.json (a peft config dict with peft_type)"
        )
    if peft_cfg.r < 1:
        raise ConfigError(f"peft.r must be at least 1, got {peft_cfg.r}")
    if peft_cfg.alpha <= 0:
        raise ConfigError(f"peft.alpha must be positive, got {peft_cfg.alpha}")
    if not 0.0 <= peft_cfg.dropout < 1.0:
        raise ConfigError(f"peft.dropout must be in [0, 1), got {peft_cfg.dropout}")
    for key in ("target_modules", "modules_to_save"):
        names = getattr(peft_cfg, key)
        if names is not None and any(not isinstance(n, str) or not n for n in names):
            raise ConfigError(f"peft.{key} must be a list of module names, got {list(names)!r}")
    if peft_cfg.merge and not peft_enabled(peft_cfg):
        raise ConfigError("peft.merge=true needs an adapter: set peft.method=lora or peft.config=FILE.json")


def field_docs(options: type) -> dict[str, str]:
    """{field: one-line doc} of a dataclass, from the string literal under each field (litgpt style).

    Why docstrings and not ``#`` comments: they are part of the code, so ``--help`` shows exactly what
    the source says, for the built-in groups and for every recipe's (or plugin's) Options alike.
    """
    docs: dict[str, str] = {}
    for klass in reversed(options.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs
