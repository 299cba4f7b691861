"""Value checks on a merged config: a setting that cannot work fails here, before anything heavy loads.

Types are OmegaConf's job (the schema is typed); these are the ranges and combinations it cannot know,
each message naming the key, the value and a value that works. The first failing check wins, so the
order below is part of the behaviour.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from accel_tasks.config.groups import (
    BUNDLED_MODELS,
    MIX_STOPPING,
    MODES,
    PRECISIONS,
    SPLITS,
    DataConfig,
    GenerationOptions,
    PeftOptions,
    TrainConfig,
    peft_enabled,
)
from accel_tasks.errors import ConfigError


def check_values(cfg: DictConfig) -> None:
    """Every check of a merged run config; raises ConfigError for the first setting that would not work."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r} is not one of {', '.join(MODES)}")
    if cfg.model.bundled not in BUNDLED_MODELS:
        raise ConfigError(f"model.bundled={cfg.model.bundled!r} is not one of {', '.join(BUNDLED_MODELS)}")
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
            f"train.max_steps={cfg.train.max_steps} would not train; use a positive number of optimizer steps, "
            "or -1 to let train.epochs decide"
        )
    if cfg.train.max_steps == -1 and cfg.train.epochs < 1:
        raise ConfigError(
            f"train.epochs={cfg.train.epochs} would not train; set train.epochs >= 1 or train.max_steps > 0"
        )
    _check_optimizer_values(cfg.train)
    _check_packing_values(cfg.train)
    _check_generation_values(cfg.generation)
    _check_data_values(cfg.data)
    _check_mix_values(cfg)
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed={cfg.seed} must be in [0, 2**32): numpy and torch seeds are unsigned 32-bit")
    if cfg.train.save_total_limit is not None and cfg.train.save_total_limit < 1:
        raise ConfigError("train.save_total_limit must be at least 1 (or null to keep every checkpoint)")
    if cfg.eval.max_tokens_per_batch is not None and cfg.eval.max_tokens_per_batch < 1:
        raise ConfigError(
            f"eval.max_tokens_per_batch={cfg.eval.max_tokens_per_batch} must be at least 1 token "
            "(or null: batches of eval.batch_size), e.g. 8192"
        )
    if cfg.eval.split not in SPLITS:
        raise ConfigError(f"eval.split={cfg.eval.split!r} is not one of {', '.join(SPLITS)}")
    if cfg.eval.precision is not None and cfg.eval.precision not in PRECISIONS:
        raise ConfigError(f"eval.precision={cfg.eval.precision!r} is not one of {', '.join(PRECISIONS)}")
    if cfg.mode == "train" and cfg.eval.split == "train":
        raise ConfigError(
            "eval.split=train in a training run would score the data it learns from; use validation or test"
        )
    check_peft_values(cfg.peft)


def _check_packing_values(train: TrainConfig) -> None:
    if train.packing_length is not None and train.packing_length < 2:
        raise ConfigError(f"train.packing_length={train.packing_length} must be at least 2 tokens (or null)")
    if train.packing and train.group_by_length:
        raise ConfigError(
            "train.packing and train.group_by_length both decide what a batch holds; set one of them to false"
        )


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
            unset = "all examples" if "samples" in key else "in process"
            raise ConfigError(f"data.{key}={value} must be at least 1 (or null: {unset})")
    if data.shuffle_buffer < 0:
        raise ConfigError(
            f"data.shuffle_buffer={data.shuffle_buffer} must be 0 (no shuffling) or a number of rows, e.g. 1000"
        )
    if data.dataloader_num_workers < 0:
        raise ConfigError(
            f"data.dataloader_num_workers={data.dataloader_num_workers} must be 0 (load in the main process) or more"
        )


def _check_mix_values(cfg: DictConfig) -> None:
    """data.mix: each source named once, positive weights, not beside data.train_file, and an eval split."""
    data = cfg.data
    if data.mix_stopping not in MIX_STOPPING:
        raise ConfigError(f"data.mix_stopping={data.mix_stopping!r} is not one of {', '.join(MIX_STOPPING)}")
    if not data.mix:
        return
    if data.train_file is not None:
        raise ConfigError(
            "data.mix and data.train_file both give the train split; keep data.mix (add the file to it as "
            "{train_file: FILE, weight: W}) or unset data.mix"
        )
    for index, source in enumerate(data.mix):
        where = f"data.mix[{index}]"
        if (source.train_file is None) == (source.name is None):
            named = "names both train_file and name" if source.train_file is not None else "names no source"
            raise ConfigError(f"{where} {named}; give it one: train_file=FILE or name=DATASET")
        if not (math.isfinite(source.weight) and source.weight > 0):
            raise ConfigError(
                f"{where}.weight={source.weight} must be a positive number (weights are relative: 0.7 and 0.3, "
                "or 7 and 3)"
            )
        targets = list(source.columns.values())
        doubled = sorted({name for name in targets if targets.count(name) > 1})
        if doubled:
            raise ConfigError(f"{where}.columns renames two columns to {doubled[0]!r}; rename one column to each name")
    split = cfg.eval.split
    if cfg.mode == "train" and data.get(f"{split}_file") is None and data.name is None:
        raise ConfigError(
            f"data.mix gives the train split only; name the {split} split the run scores: "
            f"data.{split}_file=FILE (or data.name=DATASET for its data.{split}_split)"
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
