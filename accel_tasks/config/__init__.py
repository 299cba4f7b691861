"""The run config: typed groups, layered merge, and validation that fails before anything heavy.

Merge order (assembled by preflight.resolve_config): schema defaults -> recipe preset -> bundled-model
settings -> ``--config FILE`` -> ``key=value`` overrides. Every layer is checked against the schema
first so that a typo gets a "did you mean" hint instead of an OmegaConf stack trace.

One module per job, re-exported here so callers import from ``accel_tasks.config``:

- ``groups``: the schema dataclasses (each field's docstring is its ``--help`` line)
- ``layers``: reading a layer from ``key=value`` arguments or a YAML file
- ``merge``: merging layers onto the schema, unknown keys rejected with a hint
- ``aliases``: HF Trainer names -> ours, and the "did you mean" built on them
- ``checks``: ranges and combinations of values
- ``docstrings``: reading the field docstrings for ``--help``

The package is a ground floor: it imports nothing of accel_tasks but ``errors``.
"""

from __future__ import annotations

from accel_tasks.config.aliases import LAUNCHER_NAMES, TRAINER_NAMES
from accel_tasks.config.checks import check_peft_values
from accel_tasks.config.docstrings import field_docs
from accel_tasks.config.groups import (
    BUNDLED_MODELS,
    MODES,
    SPLITS,
    DataConfig,
    EvalConfig,
    GenerationOptions,
    ModelConfig,
    NoOptions,
    PeftOptions,
    RunConfig,
    TrainConfig,
    peft_enabled,
    run_splits,
)
from accel_tasks.config.layers import load_yaml_layer, parse_overrides
from accel_tasks.config.merge import all_keys, build_config, schema, to_yaml

__all__ = [
    "LAUNCHER_NAMES",
    "BUNDLED_MODELS",
    "MODES",
    "SPLITS",
    "TRAINER_NAMES",
    "DataConfig",
    "EvalConfig",
    "GenerationOptions",
    "ModelConfig",
    "NoOptions",
    "PeftOptions",
    "RunConfig",
    "TrainConfig",
    "all_keys",
    "build_config",
    "check_peft_values",
    "field_docs",
    "load_yaml_layer",
    "parse_overrides",
    "peft_enabled",
    "run_splits",
    "schema",
    "to_yaml",
]
