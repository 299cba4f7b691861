"""``accel-tasks average OUTPUT_DIR --last N`` (or ``--steps A,B,C``): the mean of a run's checkpoints, exported.

Why: the element-wise mean of the last few checkpoints' weights (fairseq's ``scripts/average_checkpoints.py``,
standard for translation and speech recognition) often scores better than the last checkpoint alone, for no more
training; HF's Trainer has no such step. The rule and the readers are in ``average_weights.py``.

What it writes: ``OUTPUT_DIR/model_avg``, laid out as the run's own export ``OUTPUT_DIR/model`` is (``export.py``,
the same function writes it: full weights and config, or the adapter of a LoRA run, with the tokenizer or
processor and ``model_avg_merged`` where the run set ``peft.merge``), so ``mode=eval
model.name_or_path=OUTPUT_DIR/model_avg`` runs with the path alone. What it is says itself: the saved settings
(``accel_tasks_config.yaml``, the newest checkpoint's) begin with a comment naming the averaged steps, the manifest
lists them (``averaged_steps``), and ``accel_tasks_average.json`` records steps, checkpoints and rule.

Refused in one line before any weights load: no checkpoint, ``--last N`` beyond the complete checkpoints, a step
without a complete checkpoint, checkpoints of different models, recipes or adapters, a ``model_avg`` that this
command did not write (never overwritten; one it wrote is replaced, said in a line), a live run in OUTPUT_DIR
(its retention could delete a checkpoint being read).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import click

from accel_tasks import log
from accel_tasks.engines.reshard import checkpoint_layout
from accel_tasks.errors import ConfigError
from accel_tasks.files import write_json
from accel_tasks.manifest import manifest_problem, write_manifest
from accel_tasks.models.loading import PEFT_CHECKPOINT_MARKER, RUN_CONFIG_FILE
from accel_tasks.runs.checkpoint import CHECKPOINT_PREFIX, checkpoint_dirs, complete_checkpoints
from accel_tasks.runs.export import merged_dir_for
from accel_tasks.runs.output_dir import acquire_lock, release_lock

AVERAGE_DIR = "model_avg"
# Written first into every directory this command writes: what it is, and that this command may replace it.
RECORD_FILE = "accel_tasks_average.json"
WRITTEN_BY = "accel-tasks average"
RULE = "floating-point tensors: the mean in fp32, cast back; integer and bool tensors: the newest checkpoint's"
# config.json keys that may differ between checkpoints of one model (a resume under another transformers).
VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "use_cache")
# peft.* settings that do not shape the adapter's weights.
UNSHAPING_PEFT_KEYS = ("merge", "dropout")


@dataclass(frozen=True)
class AveragePlan:
    """An average that passed every check: which checkpoints (oldest first) go where."""

    output_dir: Path
    checkpoints: tuple[Path, ...]
    adapter: bool
    targets: tuple[Path, ...]
    """model_avg, and model_avg_merged where the run merges its adapter."""
    replaced: tuple[Path, ...]
    """The targets a previous average wrote, replaced by this one."""

    @property
    def steps(self) -> list[int]:
        return [step_of(path) for path in self.checkpoints]


@click.command(
    name="average",
    epilog="Evaluate the result with its path alone: "
    "accelerate launch -m accel_tasks.run mode=eval model.name_or_path=OUTPUT_DIR/model_avg",
)
@click.argument("output_dir", metavar="OUTPUT_DIR")
@click.option("--last", type=int, metavar="N", help="Average the newest N complete checkpoints (N >= 2).")
@click.option("--steps", metavar="A,B,C", help="Average the checkpoints of these steps (two or more).")
def average_cli(output_dir: str, last: Optional[int], steps: Optional[str]) -> None:
    """Average the weights of a run's checkpoints (OUTPUT_DIR/checkpoints/step_N) into OUTPUT_DIR/model_avg."""
    plan = plan_average(Path(output_dir), last, steps)
    acquire_lock(plan.output_dir)  # no run may write checkpoints (or delete one) while they are read
    try:
        write_average(plan)
    finally:
        release_lock(plan.output_dir, os.getpid())


def plan_average(output_dir: Path, last: Optional[int], steps: Optional[str]) -> AveragePlan:
    """Every check that needs no weights, in the order a user fixes them; ConfigError (one line) on the first."""
    if not output_dir.is_dir():
        raise ConfigError(
            f"{str(output_dir)!r} is not a directory; pass the output_dir of a training run (it holds checkpoints/)"
        )
    if (last is None) == (steps is None):
        raise ConfigError(
            "pass one of --last N (the newest N checkpoints) or --steps A,B,C (those steps), "
            f"e.g. accel-tasks average {output_dir} --last 3"
        )
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError("accel-tasks average runs in one process; run it as a plain command, not under a launcher")
    checkpoints = choose_checkpoints(output_dir / "checkpoints", last, steps)
    check_one_model(checkpoints)
    newest_settings = _read_settings(checkpoints[-1])
    adapter = (checkpoints[-1] / PEFT_CHECKPOINT_MARKER).is_file()
    targets = [output_dir / AVERAGE_DIR]
    if adapter and (newest_settings.get("peft") or {}).get("merge"):
        targets.append(merged_dir_for(targets[0]))
    replaced = tuple(target for target in targets if written_by_average(target))
    return AveragePlan(output_dir, tuple(checkpoints), adapter, tuple(targets), replaced)


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name[len(CHECKPOINT_PREFIX) :])


def choose_checkpoints(root: Path, last: Optional[int], steps: Optional[str]) -> list[Path]:
    """The complete checkpoints that ``--last`` or ``--steps`` name, oldest first."""
    complete = complete_checkpoints(root)
    if len(complete) < 2:
        incomplete = [p.name for p in checkpoint_dirs(root) if p not in complete]
        skipped = f" ({len(incomplete)} incomplete: {', '.join(incomplete)})" if incomplete else ""
        held = f"only {complete[0].name}" if complete else "no complete checkpoint"
        raise ConfigError(
            f"{root} holds {held}{skipped}, and averaging takes two or more; a run writes them with "
            "train.save_every=N and keeps train.save_total_limit of them"
        )
    available = ", ".join(str(step_of(p)) for p in complete)
    if last is not None:
        if last < 2:
            raise ConfigError(
                f"--last {last}: averaging takes two or more checkpoints; to score one, run mode=eval "
                f"model.name_or_path={complete[-1]}"
            )
        if last > len(complete):
            raise ConfigError(
                f"--last {last}: {root} holds {len(complete)} complete checkpoints (steps {available}); "
                f"pass --last {len(complete)} or fewer"
            )
        return complete[-last:]
    by_step = {step_of(p): p for p in complete}
    wanted = parse_steps(str(steps))
    unknown = [step for step in wanted if step not in by_step]
    if unknown:
        problems = [
            f"step_{step}: {manifest_problem(root / f'{CHECKPOINT_PREFIX}{step}')}"
            for step in unknown
            if (root / f"{CHECKPOINT_PREFIX}{step}").is_dir()
        ]
        why = f" ({'; '.join(problems)})" if problems else ""
        raise ConfigError(
            f"--steps: no complete checkpoint of step {', '.join(map(str, unknown))} in {root}{why}; "
            f"its complete checkpoints are steps {available}"
        )
    return [by_step[step] for step in sorted(wanted)]


def parse_steps(text: str) -> list[int]:
    """``--steps 100,200,300`` -> [100, 200, 300]; anything else is one line."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise ConfigError(f"--steps {text!r}: pass step numbers separated by commas, e.g. --steps 800,900,1000")
    steps = [int(part) for part in parts]
    if len(set(steps)) != len(steps):
        raise ConfigError(f"--steps {text!r} names a step twice; name each checkpoint once")
    if len(steps) < 2:
        raise ConfigError(f"--steps {text!r}: averaging takes two or more checkpoints")
    return steps


def check_one_model(checkpoints: list[Path]) -> None:
    """Every checkpoint is of one model: one recipe, one config.json, the same adapter (or none)."""
    newest = checkpoints[-1]
    reference = model_facts(newest)
    for checkpoint in checkpoints[:-1]:
        facts = model_facts(checkpoint)
        differ = [key for key in sorted(reference.keys() | facts.keys()) if reference.get(key) != facts.get(key)]
        if differ:
            shown = "; ".join(f"{key}: {facts.get(key)!r} vs {reference.get(key)!r}" for key in differ[:3])
            raise ConfigError(
                f"{checkpoint.name} and {newest.name} are checkpoints of different models ({shown}); "
                "average checkpoints of one run (--steps picks them)"
            )


def model_facts(checkpoint: Path) -> dict[str, Any]:
    """What makes two checkpoints' weights averageable: recipe, model config, adapter settings."""
    settings = _read_settings(checkpoint)
    try:
        config = json.loads((checkpoint / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{checkpoint}/config.json cannot be read ({exc}); average other checkpoints") from None
    peft = {key: value for key, value in (settings.get("peft") or {}).items() if key not in UNSHAPING_PEFT_KEYS}
    facts: dict[str, Any] = {
        "recipe": settings.get("recipe"),
        "adapter": (checkpoint / PEFT_CHECKPOINT_MARKER).is_file(),
    }
    facts.update({f"peft.{key}": value for key, value in peft.items()})
    facts.update({f"config.json {key}": value for key, value in config.items() if key not in VOLATILE_CONFIG_KEYS})
    return facts


def _read_settings(checkpoint: Path) -> dict[str, Any]:
    import yaml

    path = checkpoint / RUN_CONFIG_FILE
    try:
        settings = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} cannot be read ({type(exc).__name__}); average other checkpoints") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{path} holds no run settings; average other checkpoints")
    return settings


def written_by_average(target: Path) -> bool:
    """Whether ``target`` is there and this command wrote it; ConfigError when something else is there."""
    if not target.exists() and not target.is_symlink():
        return False
    if target.is_dir() and not target.is_symlink() and (target / RECORD_FILE).is_file():
        return True
    raise ConfigError(
        f"{target} exists and was not written by accel-tasks average, so it is not overwritten; move or delete it, "
        "then run the command again"
    )


def write_average(plan: AveragePlan) -> None:
    """Average, then write each target (the record first: an interrupted write is still known as ours)."""
    import transformers

    from accel_tasks.runs.average_weights import average_adapters, average_full_models

    if not log.interactive():  # a log file or a job: the lines below are the report, as in a run
        transformers.utils.logging.disable_progress_bar()
    steps = ", ".join(map(str, plan.steps))
    newest = plan.checkpoints[-1]
    log.info(f"averaging steps {steps} of {newest.parent} ({checkpoint_layout(newest).describe()})")
    average = average_adapters if plan.adapter else average_full_models
    model, processor = average(list(plan.checkpoints))
    for target in plan.replaced:
        log.info(f"replacing {target}, written by an earlier accel-tasks average ({_described(target)})")
        doomed = target.with_name(f".{target.name}.replaced-{os.getpid()}")
        os.replace(target, doomed)
        shutil.rmtree(doomed)
    record = {
        "written_by": WRITTEN_BY,
        "steps": plan.steps,
        "checkpoints": [str(path.resolve()) for path in plan.checkpoints],
        "rule": RULE,
    }
    plan.targets[0].mkdir()
    write_json(plan.targets[0] / RECORD_FILE, record)
    header = (
        f"# accel-tasks average: the element-wise mean of the checkpoints of steps {steps} in {newest.parent}\n"
        f"# ({RULE}); the settings below are step {plan.steps[-1]}'s\n"
    )
    _export(model, processor, plan.targets[0], header + (newest / RUN_CONFIG_FILE).read_text())
    for target in plan.targets:
        write_json(target / RECORD_FILE, record)
        write_manifest(target, kind="export", averaged_steps=plan.steps)
    log.info(f"wrote {', '.join(map(str, plan.targets))}: the mean of steps {steps}")
    log.info(f"evaluate it: accelerate launch -m accel_tasks.run mode=eval model.name_or_path={plan.targets[0]}")


def _export(model: Any, processor: Any, target: Path, run_config: str) -> None:
    """The run's own export function on one CPU process: the same files as OUTPUT_DIR/model."""
    from accelerate import Accelerator

    from accel_tasks.runs.export import export_model

    export_model(Accelerator(cpu=True), model, processor, target, run_config)


def _described(target: Path) -> str:
    try:
        return f"steps {', '.join(map(str, json.loads((target / RECORD_FILE).read_text())['steps']))}"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unfinished one"
