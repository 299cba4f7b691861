"""Command line: ``accelerate launch -m accel_tasks.run recipe=NAME [--config FILE] [key=value ...]``.

Everything that can be wrong with the command is reported as one line on stderr with exit status 2,
before any model or data is loaded.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

import click

from .config import ConfigError, build_config, load_yaml_layer, parse_overrides, to_yaml

PROG = "accel-tasks"


@click.command(
    name=PROG,
    context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]},
    epilog="Examples: recipe=summarization train.lr=3e-4 generation.num_beams=4 eval.metrics=[rouge]\n\n"
    "Memory per GPU for ZeRO 0-3: accel-tasks estimate-memory recipe=NAME model.name_or_path=M --gpus-per-node 8 --nodes 1",
)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--config", "config_file", metavar="FILE.yaml", help="A run config; key=value overrides win over it.")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option("--list", "list_recipes", is_flag=True, help="List the recipes and where each comes from, and exit.")
def cli(overrides: tuple[str, ...], config_file: Optional[str], print_config: bool, list_recipes: bool) -> None:
    """Fine-tune or evaluate a model for a task: key=value overrides on top of the recipe's preset."""
    if list_recipes:
        _print_recipes()
        return
    cfg, recipe_cls = resolve_config(overrides, config_file)
    if print_config:
        click.echo(to_yaml(cfg), nl=False)
        return
    from .preflight import make_plan

    plan = make_plan(cfg, recipe_cls)
    from .loop import run

    run(plan)


def resolve_config(overrides: Sequence[str], config_file: Optional[str]):
    """Merge defaults -> recipe preset -> --config -> overrides; returns (config, recipe class)."""
    from .registry import load_recipe_class

    for arg in overrides:
        if arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; options are --config, --print-config, --list (settings are key=value)")
    recipe_args = [arg.partition("=")[2] for arg in overrides if arg.partition("=")[0].strip() == "recipe"]
    file_layer = load_yaml_layer(config_file, "--config file") if config_file else None
    recipe_spec = recipe_args[-1] if recipe_args else (file_layer.get("recipe") if file_layer is not None else None)
    if not recipe_spec:
        from .registry import available_recipes

        names = ", ".join(sorted(available_recipes()))
        raise ConfigError(f"no recipe given; pass recipe=NAME (available: {names})")
    recipe_cls = load_recipe_class(str(recipe_spec))
    override_layer = parse_overrides(overrides, recipe_cls.Options)
    preset_layers = []
    preset = recipe_cls.preset_path()
    if preset is not None:
        preset_layers.append((f"preset {preset.name}", load_yaml_layer(preset, "recipe preset")))
    user_layers = [("command-line overrides", override_layer)]
    if file_layer is not None:
        user_layers.insert(0, (f"--config {config_file}", file_layer))
    cfg = build_config(recipe_cls.Options, preset_layers + user_layers)
    smoke = recipe_cls.smoke_settings_path()
    if cfg.model.name_or_path is None and smoke is not None:
        # The bundled tiny model needs its own settings (e.g. a higher learning rate) to learn in minutes;
        # they sit between the preset and the user's settings, so anything the user sets still wins.
        smoke_layer = [(f"bundled-model settings {smoke}", load_yaml_layer(smoke, "bundled-model settings"))]
        cfg = build_config(recipe_cls.Options, preset_layers + smoke_layer + user_layers)
    cfg.recipe = str(recipe_spec)
    return cfg, recipe_cls


def _print_recipes() -> None:
    from .registry import available_recipes

    recipes = available_recipes()
    width = max(len(name) for name in recipes)
    for name, source in sorted(recipes.items()):
        click.echo(f"{name:<{width}}  {source.origin:<24}  {source.target}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(argv) if argv is not None else sys.argv[1:]
    command, prog = cli, PROG
    if args and args[0] == "estimate-memory":
        # A subcommand without turning the CLI into a group: `accel-tasks recipe=...` keeps working as is.
        from .memory import estimate_memory_cli

        command, prog, args = estimate_memory_cli, f"{PROG} estimate-memory", args[1:]
    try:
        command.main(args=args, prog_name=prog, standalone_mode=False)
    except ConfigError as exc:
        click.echo(f"{PROG}: error: {exc}", err=True)
        return 2
    except click.UsageError as exc:
        click.echo(f"{PROG}: error: {exc.format_message()}", err=True)
        return 2
    except click.Abort:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
