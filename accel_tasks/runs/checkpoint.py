"""Checkpoints (save / resume / retention), safe under ZeRO-3 and many processes.

A checkpoint is written to ``step_N.tmp``, ends with a manifest (every file and its size) and is then
renamed to ``step_N``; only a directory that matches its manifest counts as a checkpoint, so neither a
crash mid-save nor an interrupted retention leaves something that ``resume_from`` would trust.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from accel_tasks import log
from accel_tasks.engines.accelerator import unwrap_model
from accel_tasks.engines.reshard import (
    UNIVERSAL_SUFFIX,
    announce,
    checkpoint_layout,
    load_resharded,
    rescale_position,
    rescale_scheduler,
)
from accel_tasks.errors import ConfigError
from accel_tasks.files import write_json
from accel_tasks.manifest import has_manifest, manifest_problem, write_manifest
from accel_tasks.models.adapters import is_peft_model
from accel_tasks.models.loading import PEFT_CHECKPOINT_MARKER, RUN_CONFIG_FILE
from accel_tasks.runs.disk import removed_if_disk_full

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase, ProcessorMixin

LOOP_STATE_FILE = "loop_state.json"
CHECKPOINT_PREFIX = "step_"
CHECKPOINT_NAME = re.compile(r"step_\d+")
DELETING_SUFFIX = ".deleting"
# What an interrupted save, retention or universal conversion (reshard.py) of ours leaves behind.
LEFTOVER_NAME = re.compile(r"step_\d+(\.tmp|\.deleting|" + re.escape(UNIVERSAL_SUFFIX) + ")")


@dataclass
class RunTotals:
    """The training figures of metrics.json summed over the steps so far, across resumes: a resumed run reports the
    whole run (steps, mean loss, tokens, runtime), as the uninterrupted run would.

    Sums over every process, so that a resume on another number of processes adds up the same way.
    """

    from_step: int = 0
    """The step the totals start at: 0, or the step of a checkpoint written before totals were kept."""
    loss_sum: float = 0.0
    """Micro-batch losses, summed over micro-batches and processes."""
    loss_count: int = 0
    """Micro-batches, summed over processes: train_loss is loss_sum / loss_count."""
    tokens: int = 0
    """Real (not padding) input tokens, summed over processes."""
    runtime_s: float = 0.0
    """Seconds of training steps (periodic evals and checkpoints included) up to this step, each run's added."""


@dataclass
class LoopState:
    """The loop's position: enough to continue at the exact next batch."""

    global_step: int = 0
    epoch: int = 0
    # Micro-batches of the current epoch already consumed, per process (reshard.py rescales it for another
    # process count).
    batches_in_epoch: int = 0
    # The best periodic evaluation so far (see best.py) and how many evaluations since have not beaten it.
    best_step: int = -1
    best_value: Optional[float] = None
    evals_without_improvement: int = 0
    # None only when read from a checkpoint written before the totals were kept (steps.py then starts them there).
    totals: Optional[RunTotals] = field(default_factory=RunTotals)


def checkpoint_dirs(root: Path) -> list[Path]:
    """Every ``step_N`` directory under ``root``, complete or not, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def complete_checkpoints(root: Path) -> list[Path]:
    """The checkpoints under ``root`` that match their manifest, oldest first."""
    return [p for p in checkpoint_dirs(root) if manifest_problem(p) is None]


def resolve_resume(resume_from: Optional[str], checkpoints_root: Path) -> Optional[Path]:
    """``latest`` or a path -> a complete checkpoint directory; errors name what is wrong.

    ``latest`` skips incomplete checkpoints (a crash mid-save, a file lost since) with a one-line warning
    each and takes the newest complete one, or None (train from the start, said in a notice) when there is none:
    a cluster job requeued after a stop before its first checkpoint runs the same command; a named checkpoint that
    is incomplete is an error.
    """
    if resume_from is None:
        return None
    if resume_from == "latest":
        for candidate in reversed(checkpoint_dirs(checkpoints_root)):
            problem = manifest_problem(candidate)
            if problem is None:
                return candidate
            log.warning(f"skipping incomplete checkpoint {candidate}: {problem}")
        # A requeued job's command names latest from its first start on: with nothing to resume it starts afresh.
        log.warning(
            f"train.resume_from=latest: {checkpoints_root} holds no complete checkpoint; training from the start"
        )
        return None
    path = Path(resume_from)
    if not (path / LOOP_STATE_FILE).is_file() and not has_manifest(path):
        raise ConfigError(f"train.resume_from={resume_from!r} is not a checkpoint directory (no {LOOP_STATE_FILE})")
    problem = manifest_problem(path)
    if problem is not None:
        raise ConfigError(
            f"train.resume_from={resume_from!r} is an incomplete checkpoint: {problem}; resume from another one "
            "(train.resume_from=latest takes the newest complete one)"
        )
    return path


@dataclass(frozen=True)
class Retention:
    """Which checkpoints stay after a save: the newest ``keep`` (None: every one), and ``protect`` whatever the
    count (the best one, which train.export_best exports at the end)."""

    keep: Optional[int] = None
    protect: Optional[Path] = None


def save_checkpoint(
    accelerator: Accelerator,
    root: Path,
    state: LoopState,
    model: torch.nn.Module,
    processor: PreTrainedTokenizerBase | ProcessorMixin,
    run_config: str,
    retention: Retention = Retention(),
    write_extra: Optional[Callable[[Path], None]] = None,
) -> Path:
    """All ranks call this: DeepSpeed writes its shards from every rank.

    Written to ``step_N.tmp``; the manifest comes last, then the directory is renamed to ``step_N``, so a
    crash at any point leaves nothing that looks complete. ``run_config`` (the run's settings as YAML)
    is saved inside, so the checkpoint says how it was made. ``write_extra(dir)`` (main process, before the
    manifest, so the manifest lists what it writes) adds files of the run's own, e.g. a stream's position.
    """
    final = root / f"{CHECKPOINT_PREFIX}{state.global_step}"
    tmp = root / f"{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    with removed_if_disk_full(tmp, f"checkpoint {final.name}", lambda: _last_complete(root)):
        _write_checkpoint(accelerator, tmp, state, model, processor, run_config, write_extra)
    if accelerator.is_main_process:
        if final.exists():
            _remove_checkpoint(final)
        os.replace(tmp, final)
        _apply_retention(root, retention.keep, retention.protect)
    accelerator.wait_for_everyone()
    return final


def _last_complete(root: Path) -> str:
    complete = complete_checkpoints(root)
    return f"the last complete checkpoint is {complete[-1]}" if complete else "no complete checkpoint exists yet"


def _write_checkpoint(
    accelerator: Accelerator,
    tmp: Path,
    state: LoopState,
    model: torch.nn.Module,
    processor: PreTrainedTokenizerBase | ProcessorMixin,
    run_config: str,
    write_extra: Optional[Callable[[Path], None]],
) -> None:
    """Everything a checkpoint holds, into ``tmp``, the manifest last."""
    accelerator.save_state(str(tmp))
    # Every rank writes its own files (RNG state, ZeRO shards) and save_state ends without a barrier:
    # renaming the directory before the last rank is done loses its files (seen with 2 processes).
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = unwrap_model(accelerator, model)
        unwrapped.config.save_pretrained(tmp)
        generation_config = getattr(unwrapped, "generation_config", None)
        if generation_config is not None:
            generation_config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        mark_peft_checkpoint(unwrapped, tmp)
        (tmp / RUN_CONFIG_FILE).write_text(run_config)
        write_json(tmp / LOOP_STATE_FILE, asdict(state))
        if write_extra is not None:
            write_extra(tmp)
        write_manifest(tmp, kind="checkpoint", step=state.global_step)


def load_checkpoint(
    accelerator: Accelerator, path: Path, scheduler: Any = None, work_root: Optional[Path] = None, batch_size: int = 1
) -> LoopState:
    """Weights, optimizer, scheduler, RNG and loop position of ``path``, on this run's number of processes.

    A checkpoint written by another number of processes goes through reshard.py (universal conversion
    under DeepSpeed, in ``work_root``); the schedule and the data position are then rescaled to this
    world size (``scheduler``: the prepared one; ``batch_size``: per process).
    """
    state = read_loop_state(path)
    layout = checkpoint_layout(path)
    now = accelerator.num_processes
    saved_batch = saved_batch_size(path) or batch_size
    if layout.processes == now:
        accelerator.load_state(str(path))
        if saved_batch != batch_size:
            _rebatch_position(accelerator, state, saved_batch, batch_size)
        return state
    load_resharded(accelerator, path, layout, work_root if work_root is not None else path.parent)
    if scheduler is not None:
        rescale_scheduler(scheduler, layout.processes, now)
    state.batches_in_epoch, repeated = rescale_position(
        state.batches_in_epoch, layout.processes, now, batch_size, saved_batch
    )
    accelerator.step = state.batches_in_epoch  # gradient accumulation counts micro-batches of the epoch
    if accelerator.is_main_process:
        print(f"[accel_tasks] {announce(layout, now, state.global_step, repeated)}", flush=True)
    return state


def saved_batch_size(path: Path) -> Optional[int]:
    """train.batch_size of the run that wrote the checkpoint (its saved settings), None when unknown."""
    import yaml

    try:
        saved = yaml.safe_load((path / RUN_CONFIG_FILE).read_text()) or {}
        return int(saved["train"]["batch_size"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def _rebatch_position(accelerator: Accelerator, state: LoopState, saved_batch: int, batch_size: int) -> None:
    """A resume with another train.batch_size on the same processes: the epoch's position counts micro-batches of
    the old size, so it becomes the same number of examples in batches of the new one (said in one notice)."""
    processes = accelerator.num_processes
    before = state.batches_in_epoch
    state.batches_in_epoch, repeated = rescale_position(before, processes, processes, batch_size, saved_batch)
    accelerator.step = state.batches_in_epoch
    again = f"; {repeated} examples of this epoch are seen again" if repeated else ""
    log.warning(
        f"resuming with train.batch_size={batch_size} where the checkpoint used {saved_batch}: the {before} batches "
        f"consumed in this epoch are {state.batches_in_epoch} batches now{again}"
    )


def read_loop_state(path: Path) -> LoopState:
    """The loop position saved in a checkpoint (fields a checkpoint predates keep their defaults; its run totals are
    None then: what they would have counted is unknown)."""
    data = json.loads((path / LOOP_STATE_FILE).read_text())
    state = LoopState(**{k: v for k, v in data.items() if k in LoopState.__dataclass_fields__ and k != "totals"})
    totals = data.get("totals")
    state.totals = (
        RunTotals(**{k: v for k, v in totals.items() if k in RunTotals.__dataclass_fields__})
        if isinstance(totals, dict)
        else None
    )
    return state


def _apply_retention(root: Path, keep: Optional[int], protect: Optional[Path] = None) -> None:
    """Keep the newest ``keep`` complete checkpoints (and ``protect``, the best one); older leftovers go too."""
    if keep is None:
        return
    complete = complete_checkpoints(root)
    if len(complete) <= keep:
        return
    oldest_kept = int(complete[-keep].name[len(CHECKPOINT_PREFIX) :])
    for old in checkpoint_dirs(root):
        if int(old.name[len(CHECKPOINT_PREFIX) :]) < oldest_kept and (
            protect is None or old.resolve() != protect.resolve()
        ):
            _remove_checkpoint(old)


def _remove_checkpoint(path: Path) -> None:
    """Rename first, then delete: interrupted at any point, what is left is never named like a checkpoint."""
    doomed = path.with_name(path.name + DELETING_SUFFIX)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clear_leftovers(root: Path) -> None:
    """Remove what an interrupted save or retention of ours left (``step_N.tmp``, ``step_N.deleting``)."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.is_dir() and LEFTOVER_NAME.fullmatch(path.name):
            shutil.rmtree(path, ignore_errors=True)


def mark_peft_checkpoint(model: torch.nn.Module, checkpoint_dir: Path) -> None:
    """Label a training checkpoint of an adapter run, so that no one loads its adapter-wrapped weights as a plain
    model."""
    if is_peft_model(model):
        config = model.peft_config[model.active_adapter]
        data = {
            "peft_type": str(getattr(config.peft_type, "value", config.peft_type)),
            "resume_with": "train.resume_from",
        }
        (Path(checkpoint_dir) / PEFT_CHECKPOINT_MARKER).write_text(json.dumps(data, indent=2) + "\n")
