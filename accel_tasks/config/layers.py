"""Reading one merge layer from where users write settings: ``key=value`` arguments or a YAML file.

A layer is an untyped DictConfig; ``merge.build_config`` checks its keys against the schema, so a
layer here only has to be well-formed.
"""

from __future__ import annotations

import typing
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from accel_tasks.config.groups import NoOptions, RunConfig
from accel_tasks.errors import ConfigError, first_line


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
    """Read a YAML config file (safe_load) as one merge layer; ``what`` names the file in errors."""
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
