"""The layered merge: named layers onto the typed schema, each key checked before OmegaConf sees it.

Checking keys first is why an unknown key gets a "did you mean" hint (``aliases.suggest``) instead of
an OmegaConf stack trace, and why a layer's errors name their source (the preset, --config FILE, ...).
"""

from __future__ import annotations

import typing
from dataclasses import is_dataclass

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from accel_tasks.config.aliases import suggest
from accel_tasks.config.checks import check_values
from accel_tasks.config.groups import RunConfig
from accel_tasks.errors import ConfigError, first_line


def build_config(recipe_options: type, layers: typing.Sequence[tuple[str, DictConfig]]) -> DictConfig:
    """Merge named layers onto the schema; ``recipe_options`` is the recipe's Options dataclass."""
    merged = schema(recipe_options)
    for source, layer in layers:
        layer = _normalise_layer(merged, layer, source)
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as exc:
            raise ConfigError(_describe_merge_error(exc, source)) from None
    check_values(merged)
    return merged


def schema(recipe_options: type) -> DictConfig:
    """The typed defaults: RunConfig with ``task`` set to the recipe's Options."""
    base = OmegaConf.structured(RunConfig)
    base.task = OmegaConf.structured(recipe_options)
    return base


def to_yaml(cfg: DictConfig) -> str:
    """The config as saved with a run (interpolations resolved), readable back with --config."""
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
            hint = suggest(dotted, all_keys(_root(target)), siblings=layer)
            raise ConfigError(f"unknown config key {dotted!r} in {source}{hint}")
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


def _describe_merge_error(exc: OmegaConfBaseException, source: str) -> str:
    key = getattr(exc, "full_key", None) or "?"
    message = first_line(exc)
    if "could not be converted" in message or "Invalid value assigned" in message or "is not a" in message:
        return f"wrong type for {key} in {source}: {message}"
    return f"invalid value for {key} in {source}: {message}"
