"""``accel-tasks recipe=NAME --help``: every setting of a recipe with its resolved default and one-line doc.

The docs come from the field docstrings of the config dataclasses and of the recipe's Options, so a
plugin's task.* keys are documented the same way as the built-in groups, from its own source.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from accel_tasks.config import RunConfig, field_docs

if TYPE_CHECKING:
    from accel_tasks.recipe import Recipe


def settings_help(cfg: RunConfig, recipe_cls: type[Recipe]) -> str:
    """One line per setting: ``key = value  doc``, grouped; values are what this recipe's preset resolves to."""
    lines = [
        f"Settings of recipe={cfg.recipe} (key=value; shown: the value after the preset and bundled-model settings)"
    ]
    groups: list[tuple[str, type, DictConfig]] = []
    top_docs = field_docs(RunConfig)
    top = [(f.name, cfg[f.name]) for f in fields(RunConfig) if not isinstance(cfg[f.name], DictConfig)]
    lines.append("")
    lines.extend(_rows([(name, value, top_docs.get(name, "")) for name, value in top]))
    for group in fields(RunConfig):
        if group.name == "task":
            groups.append(("task", recipe_cls.Options, cfg.task))
        elif isinstance(cfg[group.name], DictConfig):
            groups.append((group.name, OmegaConf.get_type(cfg[group.name]), cfg[group.name]))
    for name, options, node in groups:
        docs = field_docs(options)
        title = (options.__doc__ or f"{name}.*").strip().splitlines()[0]
        lines.append("")
        lines.append(title if name != "task" else f"task.*: options of {recipe_cls.__name__} ({options.__name__})")
        if not is_dataclass(options) or not fields(options):
            lines.append("  (none)")
            continue
        rows = [(f"{name}.{f.name}", node[f.name], docs.get(f.name, "")) for f in fields(options)]
        lines.extend(_rows(rows))
    return "\n".join(lines)


# Settings longer than this (a prompt template) are not used to align the docs column: one long value would push
# every doc line far to the right.
ALIGN_UP_TO = 60


def _rows(rows: list[tuple[str, object, str]]) -> list[str]:
    rendered = [(key, _value(value), doc) for key, value, doc in rows]
    lengths = [len(f"{key} = {value}") for key, value, _ in rendered]
    width = max((n for n in lengths if n <= ALIGN_UP_TO), default=0)
    return [f"  {f'{key} = {value}':<{width}}  {doc}".rstrip() for key, value, doc in rendered]


def _value(value: object) -> str:
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return str(OmegaConf.to_container(value, resolve=True))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and "\n" in value:
        return json.dumps(value)  # on one line: a multi-line template as "a\nb"
    return "null" if value is None else str(value)
