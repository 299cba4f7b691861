"""The run config: typed groups, layered merge, and validation that fails before anything heavy.

Merge order: schema defaults -> recipe preset -> ``--config FILE`` -> ``key=value`` overrides.
Every layer is checked against the schema first so that a typo gets a "did you mean" hint instead of
an OmegaConf stack trace.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A user mistake in the run config; the CLI prints it as one line and exits with status 2."""


@dataclass
class ModelConfig:
    # None: the recipe's bundled tiny model config (random init, offline).
    name_or_path: Optional[str] = None
    tokenizer_name: Optional[str] = None
    revision: str = "main"
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False


@dataclass
class DataConfig:
    # Hub dataset id (or a local dataset directory) for datasets.load_dataset.
    name: Optional[str] = None
    config: Optional[str] = None
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    test_file: Optional[str] = None
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    preprocessing_num_workers: Optional[int] = None
    dataloader_num_workers: int = 0
    overwrite_cache: bool = False


@dataclass
class TrainConfig:
    lr: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    epochs: int = 3
    # Optimizer steps; when > 0 it wins over epochs.
    max_steps: int = -1
    batch_size: int = 8
    grad_accum: int = 1
    # 0 disables clipping.
    max_grad_norm: float = 1.0
    log_every: int = 10
    # 0: evaluate only at the end of training.
    eval_every: int = 0
    # 0: no intermediate checkpoints.
    save_every: int = 0
    save_total_limit: Optional[int] = 2
    # "latest" or a checkpoint directory.
    resume_from: Optional[str] = None
    overwrite_output_dir: bool = False
    # Torch intra-op threads per process; None: usable cores / local processes.
    threads: Optional[int] = None


@dataclass
class EvalConfig:
    batch_size: int = 16
    # evaluate ids or module paths; None: the recipe's default.
    metrics: Optional[list[str]] = None
    # Extra keyword arguments per metric, e.g. {sacrebleu: {tokenize: intl}}.
    metric_args: dict[str, Any] = field(default_factory=dict)
    split: str = "validation"
    # Sort eval features by length so batches hold similar lengths; outputs are restored to input order.
    group_by_length: bool = True


@dataclass
class GenerationOptions:
    """Generation settings; None keeps the model's own generation_config value."""

    num_beams: Optional[int] = None
    max_new_tokens: Optional[int] = None
    length_penalty: Optional[float] = None
    no_repeat_ngram_size: Optional[int] = None
    early_stopping: Optional[bool] = None


@dataclass
class PeftOptions:
    # None (full fine-tuning) or "lora".
    method: Optional[str] = None
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # None: the architecture family's attention + feed-forward linear layers; [all-linear]: every linear layer but the head.
    target_modules: Optional[list[str]] = None
    # Trained in full and saved with the adapter; None: the task head (qa_outputs, CTC lm_head, classifier).
    modules_to_save: Optional[list[str]] = None
    # A peft config dict as JSON (peft_type IA3, LOHA, ...); unset target_modules / modules_to_save get the defaults above.
    config: Optional[str] = None
    # Also export output_dir/model_merged: the adapter merged into the base, a plain model.
    merge: bool = False


@dataclass
class NoOptions:
    """Task options of a recipe that has none."""


@dataclass
class RunConfig:
    recipe: str = "summarization"
    mode: str = "train"
    # None: outputs/<recipe> for training, outputs/<recipe>-eval for eval-only runs.
    output_dir: Optional[str] = None
    seed: int = 42
    # A DeepSpeed JSON config; its "auto" values are filled from this run config.
    deepspeed: Optional[str] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    peft: PeftOptions = field(default_factory=PeftOptions)
    task: Any = None


MODES = ("train", "eval")


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
            raise ConfigError(f"malformed override {arg!r}: {_first_line(exc)}") from None
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
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {_first_line(exc)}") from None
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
            raise ConfigError(f"unknown config key {dotted!r} in {source}{_suggestion(dotted, all_keys(_root(target)))}")
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


def _suggestion(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf][:1]
    return f"; did you mean {close[0]!r}?" if close else "; run with --print-config to see all keys"


def _describe_merge_error(exc: OmegaConfBaseException, source: str) -> str:
    key = getattr(exc, "full_key", None) or "?"
    message = _first_line(exc)
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
    if cfg.train.max_steps <= 0 and cfg.train.epochs < 1:
        raise ConfigError("set train.max_steps > 0 or train.epochs >= 1")
    if cfg.train.save_total_limit is not None and cfg.train.save_total_limit < 1:
        raise ConfigError("train.save_total_limit must be at least 1 (or null to keep every checkpoint)")
    from .adapters import validate_peft_options

    validate_peft_options(cfg.peft)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
