"""The run's settings are read-only once preflight has resolved them; a later decision makes a new config.

Why: a config that any step may change cannot be trusted by what reads it afterwards (the feature cache key,
config.yaml, the checkpoints, the export's accel_tasks_config.yaml), and a change made deep inside a recipe is
invisible to whoever reads the config next. So preflight :func:`freeze` s the config it hands to the run, and a
setting decided later (a length capped to the model's positions, a language found in the data, the labels a
trained model fixes) goes through :func:`with_settings`, which returns a new config and leaves the old one as it
was. ``Recipe.decide`` is the one place a run makes such decisions (see recipe.py).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf


def freeze(cfg: DictConfig) -> DictConfig:
    """``cfg``, read-only from now on: setting any key raises omegaconf's ReadonlyConfigError."""
    OmegaConf.set_readonly(cfg, True)
    return cfg


def with_settings(cfg: DictConfig, settings: Mapping[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with ``settings`` (dotted keys such as ``task.max_source_length``) set, each checked
    against the schema's type; read-only when ``cfg`` is. ``cfg`` itself is left unchanged."""
    readonly = OmegaConf.is_readonly(cfg)
    changed = copy.deepcopy(cfg)
    OmegaConf.set_readonly(changed, False)
    for key, value in settings.items():
        OmegaConf.update(changed, key, value, merge=False)
    OmegaConf.set_readonly(changed, readonly)
    return changed
