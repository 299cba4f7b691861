"""The output directory's ownership: one live run at a time, and nothing deleted that a run of ours did not write.

- A lock file (pid, host, start time) is taken in preflight by the first process: a second run in the
  same output_dir is refused while the first is alive; a stale lock (its pid is dead on this host) is
  taken over with a notice. The lock goes when the run ends.
- A marker file says "a run of accel_tasks wrote here". ``train.overwrite_output_dir=true`` replaces
  only our own artifacts, only where the marker is, and only after every check has passed (the loop
  calls :func:`prepare_output_dir` once the data is ready); the replaced run is set aside, not deleted,
  until the new run has ended well, and comes back if it fails.
- A run that failed before its first checkpoint or export left only its config and logs: the same
  command can be run again in place (those logs are kept in ``failed-run-N``).
- A resume never overwrites the config of the run it continues: it writes ``config.resume-N.yaml``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from accel_tasks import log
from accel_tasks.errors import ConfigError, is_first_process

LOCK_FILE = ".accel_tasks.lock"
MARKER_FILE = ".accel_tasks_run"
CONFIG_FILE = "config.yaml"
# What a run writes at the top of output_dir: the only things overwrite_output_dir deletes.
RUN_ARTIFACTS = (
    "checkpoints",
    "model",
    "model_merged",
    "model_avg",  # accel-tasks average (runs/average.py)
    "model_avg_merged",
    "logs",
    CONFIG_FILE,
    "metrics.json",
    "predictions.jsonl",
    "eval_history.jsonl",
    # The report, and the tracker stores a run puts into output_dir (trackers.point_trackers_at).
    "report.html",
    "mlruns",
    "wandb",
)
# Where an overwritten run waits until the run replacing it has ended well; where a failed attempt's outputs stay.
REPLACED_DIR = ".replaced-run"
FAILED_PREFIX = "failed-run"
# Outputs that show a run got somewhere: a directory holding none of them can be reused by a retry.
RESULTS = ("checkpoints", "model", "model_merged", "metrics.json", "predictions.jsonl")


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


def read_lock(output_dir: Path) -> Optional[LockHolder]:
    try:
        data = json.loads((output_dir / LOCK_FILE).read_text())
        return LockHolder(int(data["pid"]), str(data["host"]), str(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(output_dir: Path) -> None:
    """Take output_dir's lock for this process (first process only), or refuse with one line.

    Called in preflight, before anything is loaded; released at exit. A lock whose pid is dead on this
    host is stale and taken over; a live one, or one held on another host, refuses the run.
    """
    if not is_first_process():
        return
    # The highest directory this run creates (output_dir itself, or a missing parent such as outputs/).
    created = next((path for path in [*reversed(output_dir.parents), output_dir] if not path.exists()), None)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"output_dir {str(output_dir)!r} cannot be created ({exc.strerror}); pass a directory you can write to"
        ) from None
    lock = output_dir / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(output_dir)
            if holder is None or (holder.host == me["host"] and not _alive(holder.pid)):
                what = "unreadable lock" if holder is None else f"stale lock of {holder.describe()} (no longer running)"
                log.warning(f"output_dir {str(output_dir)!r}: taking over the {what}")
                lock.unlink(missing_ok=True)
                continue
            where = "" if holder.host == me["host"] else f"; if that run is gone, delete {lock}"
            raise ConfigError(
                f"output_dir {str(output_dir)!r} is in use by a live run ({holder.describe()}); wait for it to end "
                f"or choose another output_dir{where}"
            ) from None
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        atexit.register(release_lock, output_dir, os.getpid(), created)
        return
    raise ConfigError(f"output_dir {str(output_dir)!r}: could not take its lock {lock}; another run is starting there")


def release_lock(output_dir: Path, pid: int, created: Optional[Path] = None) -> None:
    """Remove the lock if this process still holds it (a takeover by another run is left alone).

    Directories the lock created (``created``: the highest of them, output_dir or a parent) that nothing else was
    written to (the run failed before its outputs) go too: a refused run leaves no trace.
    """
    holder = read_lock(output_dir)
    if holder is not None and holder.pid == pid and holder.host == socket.gethostname():
        (output_dir / LOCK_FILE).unlink(missing_ok=True)
        if created is None:
            return
        for path in [output_dir, *output_dir.parents]:
            if not path.is_dir() or any(path.iterdir()):
                return
            path.rmdir()
            if path == created:
                return


def _ours(path: Path) -> list[Path]:
    """What output_dir holds besides our lock file."""
    return [p for p in path.iterdir() if p.name != LOCK_FILE] if path.is_dir() else []


def holds_results(path: Path) -> bool:
    """Whether ``path`` holds what a run got to (a checkpoint, an export, final metrics)."""
    return any((path / name).exists() for name in RESULTS)


def check_output_dir(output_dir: Path, resuming: bool, overwrite: bool, mode: str = "train") -> None:
    """A previous run's output is never silently replaced, and files not written by us are never deleted.

    An eval or predict run never replaces a training run's outputs, overwrite or not: its model, checkpoints and
    logs are what it would score, and nothing can recreate them.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir {str(output_dir)!r} is a file; pass a directory")
    present = _ours(output_dir)
    if not present or resuming:
        return
    marked = (output_dir / MARKER_FILE).is_file()
    trained = any((output_dir / name).exists() for name in ("checkpoints", "model", "model_merged"))
    if mode != "train" and trained:
        raise ConfigError(
            f"output_dir {str(output_dir)!r} holds a training run (its model or checkpoints); mode={mode} never "
            "writes into one, overwrite or not: pass another output_dir, or leave it unset "
            "(outputs/RECIPE-eval, then -2, -3, ...)"
        )
    if overwrite:
        if not marked:
            raise ConfigError(
                f"train.overwrite_output_dir=true, but output_dir {str(output_dir)!r} holds files "
                "no accel_tasks run wrote "
                f"(no {MARKER_FILE}); nothing is deleted: choose another output_dir or empty it yourself"
            )
        return
    if marked and not holds_results(output_dir):
        return  # a run that failed before its first checkpoint: the retry reuses the directory
    if not marked:
        names = ", ".join(sorted(p.name for p in present)[:5]) + (", ..." if len(present) > 5 else "")
        raise ConfigError(
            f"output_dir {str(output_dir)!r} holds files no accel_tasks run wrote ({names}); a run writes only into "
            "a new or empty folder or one of its own: pass another output_dir"
        )
    if mode != "train":
        raise ConfigError(
            f"output_dir {str(output_dir)!r} already holds the results of an earlier {mode} run; pass another "
            "output_dir (left unset, each run gets its own: outputs/RECIPE-eval, -2, -3, ...), or "
            "train.overwrite_output_dir=true to replace them"
        )
    raise ConfigError(
        f"output_dir {str(output_dir)!r} already holds a previous run; pass another output_dir, "
        "train.resume_from=latest to continue it, or train.overwrite_output_dir=true to replace it"
    )


def _artifacts(output_dir: Path) -> list[Path]:
    """Our artifacts at the top of output_dir, the configs of earlier resumes included."""
    found = [output_dir / name for name in RUN_ARTIFACTS if (output_dir / name).exists()]
    return found + sorted(output_dir.glob("config.resume-*.yaml"))


def _move_into(items: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for item in items:
        os.replace(item, folder / item.name)


def _free_name(output_dir: Path, stem: str) -> Path:
    index = 1
    while (output_dir / f"{stem}-{index}").exists():
        index += 1
    return output_dir / f"{stem}-{index}"


def set_aside_previous(output_dir: Path) -> None:
    """Before a new run writes: a previous run with results (an overwrite) moves into REPLACED_DIR, where it stays
    until the new run has finished (:func:`discard_replaced`) or comes back if it fails (:func:`restore_replaced`);
    an attempt that got nowhere (a retry) keeps its logs in ``failed-run-N``, said in a notice.

    A REPLACED_DIR already there holds the last run that finished, and what lies beside it is an overwrite that
    crashed (kill -9): that one is the attempt kept as ``failed-run-N``.
    """
    items = _artifacts(output_dir)
    if not items:
        return
    if holds_results(output_dir) and not (output_dir / REPLACED_DIR).exists():
        _move_into(items, output_dir / REPLACED_DIR)
        log.info(f"output_dir {str(output_dir)!r}: the previous run is kept in {REPLACED_DIR} until this one ends")
        return
    kept = _free_name(output_dir, FAILED_PREFIX)
    _move_into(items, kept)
    log.warning(f"output_dir {str(output_dir)!r}: an earlier attempt's outputs (logs, config) are kept in {kept}")


def discard_replaced(output_dir: Path) -> None:
    """The run has ended well: the run it replaced goes (renamed first, so an interruption leaves no half)."""
    replaced, doomed = output_dir / REPLACED_DIR, output_dir / f"{REPLACED_DIR}.deleting"
    if replaced.is_dir():
        shutil.rmtree(doomed, ignore_errors=True)
        os.replace(replaced, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def restore_replaced(output_dir: Path) -> Optional[Path]:
    """The run failed: its outputs move to ``failed-run-N`` and the run it replaced comes back; the folder kept,
    or None when nothing had been set aside."""
    replaced = output_dir / REPLACED_DIR
    if not replaced.is_dir():
        return None
    kept = _free_name(output_dir, FAILED_PREFIX)
    _move_into(_artifacts(output_dir), kept)
    for item in replaced.iterdir():
        os.replace(item, output_dir / item.name)
    replaced.rmdir()
    log.warning(
        f"output_dir {str(output_dir)!r}: the run failed; the run it replaced is back, its outputs are in {kept}"
    )
    return kept


def prepare_output_dir(output_dir: Path, overwrite: bool, resume_step: Optional[int], config_yaml: str) -> Path:
    """Make output_dir ours and write this run's config; returns the config file written.

    Called by the first process once every check has passed (model loaded, data read and preprocessed).
    A fresh run (an overwrite, or a retry) sets our earlier artifacts aside (:func:`set_aside_previous`): nothing is
    deleted before this run has ended well; a resume keeps everything and writes its config beside the old one.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    if resume_step is None and (output_dir / MARKER_FILE).is_file():
        # Only a marked directory gets here with contents (check_output_dir): either overwrite=true or a retry.
        set_aside_previous(output_dir)
    (output_dir / MARKER_FILE).write_text(
        json.dumps({"written_by": "accel_tasks", "overwrite_deletes": list(RUN_ARTIFACTS)}) + "\n"
    )
    target = output_dir / CONFIG_FILE
    if resume_step is not None and target.exists():
        index = 1
        while (output_dir / f"config.resume-{index}.yaml").exists():
            index += 1
        target = output_dir / f"config.resume-{index}.yaml"
        config_yaml = f"# resumed from step {resume_step}\n{config_yaml}"
    target.write_text(config_yaml)
    return target
