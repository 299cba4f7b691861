"""Model and processor loading: a hub name, a saved model or checkpoint directory, or a bundled config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from .config import ConfigError

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def resolve_model_source(model_cfg: Any, default_dir: Optional[Path]) -> str:
    """Where the model comes from; checked before anything heavy is loaded."""
    name = model_cfg.name_or_path
    if name is None:
        if default_dir is None:
            raise ConfigError("model.name_or_path is required for this recipe (a hub id or a local directory)")
        return str(default_dir)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ConfigError(f"model.name_or_path {name!r} is a path but holds no config.json; point it at a saved model")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"model.name_or_path {name!r} does not exist; pass a hub id (org/name) or an existing directory")
    return name


def has_weights(source: str) -> bool:
    path = Path(source)
    return path.is_dir() and any((path / f).is_file() for f in WEIGHT_FILES)


def load_model_and_processor(
    model_cfg: Any,
    auto_model_class: str,
    processor_class: str,
    default_dir: Optional[Path] = None,
    config_overrides: Optional[dict] = None,
) -> tuple[Any, Any]:
    import transformers

    source = resolve_model_source(model_cfg, default_dir)
    from .adapters import check_not_peft_checkpoint, is_adapter_dir, load_adapter_model

    if is_adapter_dir(source):
        return load_adapter_model(source, model_cfg, auto_model_class, processor_class, config_overrides)
    check_not_peft_checkpoint(source)
    auto_model = getattr(transformers, auto_model_class)
    auto_processor = getattr(transformers, processor_class)
    common = {"revision": model_cfg.revision, "trust_remote_code": model_cfg.trust_remote_code}
    processor = auto_processor.from_pretrained(model_cfg.tokenizer_name or source, **common)
    from .checkpoint import deepspeed_checkpoint_tag_dir, load_model_from_deepspeed_checkpoint

    if Path(source).is_dir() and not has_weights(source) and deepspeed_checkpoint_tag_dir(Path(source)) is not None:
        # A checkpoint saved under DeepSpeed holds ZeRO shards, not model files: reassemble the full weights.
        model = load_model_from_deepspeed_checkpoint(Path(source), auto_model, {**common, **(config_overrides or {})})
    elif Path(source).is_dir() and not has_weights(source):
        config = transformers.AutoConfig.from_pretrained(source, **common, **(config_overrides or {}))
        logger.info("building %s from %s/config.json with random weights", config.model_type, source)
        model = auto_model.from_config(config, trust_remote_code=model_cfg.trust_remote_code)
        generation_file = Path(source) / "generation_config.json"
        if generation_file.is_file() and getattr(model, "generation_config", None) is not None:
            model.generation_config = transformers.GenerationConfig.from_pretrained(source)
    else:
        model = auto_model.from_pretrained(source, **common, **(config_overrides or {}))
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, processor


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts, ZeRO-3 partitioned parameters included."""
    trainable = total = 0
    for param in model.parameters():
        n = getattr(param, "ds_numel", None) or param.numel()
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total
