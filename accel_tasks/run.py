"""Command line: ``accelerate launch -m accel_tasks.run recipe=NAME [--config FILE] [key=value ...]``.

CLI only: parsing, help and the one-line error contract. Everything that can be wrong with the command
is reported as one line on stderr with exit status 2, before any model or data is loaded.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Optional, Sequence

import click

from accel_tasks.config import to_yaml
from accel_tasks.errors import ConfigError, Interrupted, Preempted, RunStopped, is_first_process
from accel_tasks.help import settings_help
from accel_tasks.preflight import make_plan, resolve_config
from accel_tasks.registry import available_recipes

PROG = "accel-tasks"
HELP_FLAGS = ("-h", "--help")
# Set to 1 to see the traceback behind a one-line error.
DEBUG_ENV = "ACCEL_TASKS_DEBUG"


@click.command(
    name=PROG,
    context_settings={"ignore_unknown_options": True, "help_option_names": list(HELP_FLAGS)},
    epilog="Examples: recipe=summarization train.lr=3e-4 generation.num_beams=4 eval.metrics=[rouge]\n\n"
    "Every setting of a recipe, with its default and doc: accel-tasks recipe=NAME --help\n\n"
    "Memory per GPU for ZeRO 0-3: "
    "accel-tasks estimate-memory recipe=NAME model.name_or_path=M --gpus-per-node 8 --nodes 1\n\n"
    "A run as one HTML page (curves, metrics, config, best and worst predictions): "
    "accel-tasks report OUTPUT_DIR [OUTPUT_DIR ...]\n\n"
    "The mean of a run's last N checkpoints as an export (OUTPUT_DIR/model_avg): "
    "accel-tasks average OUTPUT_DIR --last N (or --steps A,B,C)",
)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--config", "config_file", metavar="FILE.yaml", help="A run config; key=value overrides win over it.")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option(
    "--list", "list_recipes", is_flag=True, help="List the recipes, where each comes from and its preset, and exit."
)
def cli(overrides: tuple[str, ...], config_file: Optional[str], print_config: bool, list_recipes: bool) -> None:
    """Fine-tune or evaluate a model for a task: key=value overrides on top of the recipe's preset."""
    if list_recipes:
        _print_recipes()
        return
    cfg, recipe_cls = resolve_config(overrides, config_file)
    if print_config:
        click.echo(to_yaml(cfg), nl=False)
        return
    from accel_tasks.training.guards import stop_outside_the_steps

    # From here a stop signal is one line and a released lock (guards.py), never a silent death.
    stop_outside_the_steps()
    plan = make_plan(cfg, recipe_cls)
    from accel_tasks.training.loop import run

    run(plan)


def _print_recipes() -> None:
    from accel_tasks.registry import load_recipe_class

    recipes = available_recipes()
    width = max(len(name) for name in recipes)
    for name, source in sorted(recipes.items()):
        try:
            preset = load_recipe_class(name).preset_path()
            where = str(preset) if preset is not None else "(no preset)"
        except ConfigError as exc:
            where = f"(cannot load: {exc})"
        click.echo(f"{name:<{width}}  {source.origin:<24}  {source.target}  preset: {where}")


def _split_config_option(args: list[str]) -> tuple[list[str], Optional[str]]:
    """(key=value arguments, the --config file) of a command line that click does not parse (the help path)."""
    overrides: list[str] = []
    config_file: Optional[str] = None
    items = iter(args)
    for arg in items:
        if arg == "--config":
            config_file = next(items, None)
        elif arg.startswith("--config="):
            config_file = arg.partition("=")[2]
        else:
            overrides.append(arg)
    return overrides, config_file


def main(argv: Optional[Sequence[str]] = None) -> int:
    # The caller's stop-signal handlers, given back at the end: a program (or a test) that calls main() and goes on
    # keeps its own; the accel-tasks command ignores the signals again until its fast exit (entry).
    from accel_tasks.training.guards import STOP_SIGNALS

    callers_handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    args = list(argv) if argv is not None else sys.argv[1:]
    command, prog = cli, PROG
    if args and args[0] == "estimate-memory":
        # A subcommand without turning the CLI into a group: `accel-tasks recipe=...` keeps working as is.
        from accel_tasks.reporting.memory_estimate import estimate_memory_cli

        command, prog, args = estimate_memory_cli, f"{PROG} estimate-memory", args[1:]
    elif args and args[0] == "report":
        from accel_tasks.reporting.report import report_cli

        command, prog, args = report_cli, f"{PROG} report", args[1:]
    elif args and args[0] == "average":
        from accel_tasks.runs.average import average_cli

        command, prog, args = average_cli, f"{PROG} average", args[1:]
    try:
        if command is cli and any(flag in args for flag in HELP_FLAGS) and any(a.startswith("recipe=") for a in args):
            # `recipe=NAME --help`: the generic help, then every setting of that recipe with its default and doc.
            with click.Context(cli, info_name=prog) as ctx:
                click.echo(cli.get_help(ctx))
            overrides, config_file = _split_config_option([a for a in args if a not in HELP_FLAGS])
            click.echo("\n" + settings_help(*resolve_config(overrides, config_file)))
            return 0
        command.main(args=args, prog_name=prog, standalone_mode=False)
    except ConfigError as exc:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        if is_first_process():  # every process fails alike; the first one says so
            click.echo(f"{PROG}: error: {exc}", err=True)
        return 2
    except RunStopped as exc:
        if is_first_process():
            click.echo(f"{PROG}: {type(exc).__name__}: {exc}", err=True)
        return exc.exit_code
    except click.UsageError as exc:
        click.echo(f"{PROG}: error: {exc.format_message()}", err=True)
        return 2
    except click.Abort:  # what click makes of KeyboardInterrupt: a second Ctrl-C during the steps
        if is_first_process():
            click.echo(f"{PROG}: stopped at once by Ctrl-C (no checkpoint written by this stop)", err=True)
        return Interrupted.exit_code
    finally:
        # Whatever ended the run (an error on this process alone included), the process group and the
        # DeepSpeed engine go now, while the interpreter is whole, never at its exit (see teardown.py).
        from accel_tasks.engines.teardown import release_after_error
        from accel_tasks.training.guards import ignore_stop_signals

        ignore_stop_signals()
        release_after_error()
        for sig, handler in callers_handlers.items():
            signal.signal(sig, handler)
    return 0


def entry() -> None:
    """The ``accel-tasks`` command and ``python -m accel_tasks.run``: :func:`main`, then a fast exit.

    ``main`` stays an ordinary function (tests and embedding code call it and go on); a process that exists
    only to run it ends through :func:`teardown.exit_now`, without the seconds of interpreter finalization.
    """
    status = main()
    from accel_tasks.engines.teardown import exit_now, let_the_first_process_explain
    from accel_tasks.training.guards import ignore_stop_signals

    ignore_stop_signals()  # this process only exits now: a stop signal must not turn its ending into a traceback

    if status not in (0, Preempted.exit_code):
        # A preemption is the one failure not left to the first process: every process got the signal and
        # each must exit before the scheduler's grace period ends.
        let_the_first_process_explain()
    exit_now(status)


if __name__ == "__main__":
    entry()
