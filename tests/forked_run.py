"""Run ``accel_tasks.run`` in a process forked from a warm server: a real, separate process that skips start-up.

Why: a run's own work in these tests takes a second or two, while a fresh interpreter spends 7-11 s importing
torch, transformers, datasets and accelerate (twice under ``accelerate launch``: the launcher, then the worker).
Each test process starts one multiprocessing *forkserver* that imports those once; every run is a fork of it. The
run is still a process of its own: its exit status, files, signals and ``os._exit`` are its own, and nothing it
changes (the Accelerator's shared state, torch's threads, the RNG, the environment, the working directory) leaks.

Why a server and not a fork of the test process itself: the test process has threads (pytest-xdist's, and the
thread teams of whatever torch work a test did in process); a fork copies a lock another thread held at that
moment, and a child that needs it waits forever (seen: a forked speech run hung once in three). The server only
imports, runs no test and starts no thread, so its forks start clean.

What it is not: the launcher or start-up. Tests of those (``accelerate launch`` itself, several processes,
DeepSpeed, imports, the process exit) name ``launcher="accelerate"`` or ``"python"`` in ``run_cli``.
The child reproduces what a single-process ``accelerate launch --mixed_precision X --dynamo_backend no`` puts in
the environment (read off accelerate 1.16), so the run takes the same code path.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

# Variables the run reads when it runs (not when a library is imported): safe to set in the forked child.
CALL_TIME_ENV = (
    "RECORD_DIR",
    "PREPROCESS_LOG",
    "PID_LOG",
    "ACCEL_TASKS_",
    "ACCELERATE_",
    "MLFLOW_TRACKING_URI",
    "HF_DATASETS_CACHE",
    "HF_HUB_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "PYTHONUNBUFFERED",
)
# Imported once by the server: what every run imports (the rest each run imports itself, in a second or less).
PRELOAD = [
    "torch",
    "transformers",
    "datasets",
    "evaluate",
    "accelerate",
    "accel_tasks.run",
    "accel_tasks.training.loop",
    "accel_tasks.recipes.summarization",
    "transformers.models.marian.modeling_marian",
]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def forkable(env_changes: dict) -> bool:
    """Whether every variable the test sets is read at call time, so a fork sees it as a new process would."""
    return all(key.startswith(CALL_TIME_ENV) for key in env_changes)


def _launcher_env(mixed_precision: str) -> dict:
    """What ``accelerate launch`` (one process, no config file) sets for its worker."""
    return {
        "ACCELERATE_USE_CPU": "False",
        "ACCELERATE_MIXED_PRECISION": mixed_precision,
        "ACCELERATE_DYNAMO_BACKEND": "NO",
        "ACCELERATE_DYNAMO_MODE": "default",
        "ACCELERATE_DYNAMO_USE_FULLGRAPH": "False",
        "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "False",
        "OMP_NUM_THREADS": "1",
    }


def _child(args: Sequence[str], cwd: str, env: dict, out_path: str, err_path: str, timeout: int) -> None:
    """The forked process: its own streams and environment, then the CLI's own entry point (which never returns:
    it ends the process through teardown.exit_now with the run's status, as ``python -m accel_tasks.run`` does)."""
    import faulthandler

    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    # The server's streams, as handlers made at import hold them, and what replaces each.
    server_out = {id(sys.stdout), id(sys.__stdout__)}
    server_streams = server_out | {id(sys.stderr), id(sys.__stderr__)}
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in server_streams:
                handler.setStream(sys.stdout if id(handler.stream) in server_out else sys.stderr)
    # A run that hangs shows where, in its stderr, before the test gives up on it.
    faulthandler.dump_traceback_later(max(timeout - 5, 1), exit=False, file=sys.stderr)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    if "HF_DATASETS_CACHE" in env:  # datasets reads it at import, which happened in the server
        import datasets.config

        datasets.config.HF_DATASETS_CACHE = Path(env["HF_DATASETS_CACHE"])
    sys.argv = ["accel_tasks.run", *args]
    from accel_tasks.run import entry

    entry()


def run_forked(
    args: Sequence[str], cwd: Path, env: dict, mixed_precision: str = "no", timeout: int = 600
) -> subprocess.CompletedProcess:
    """``accelerate launch -m accel_tasks.run ARGS`` (one process) as a fork of the warm server; same result type."""
    child_env = {**env, **_launcher_env(mixed_precision)}
    with tempfile.TemporaryDirectory(prefix="forked_run_") as folder:
        out_path, err_path = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        for path in (out_path, err_path):
            Path(path).touch()
        process = _context.Process(target=_child, args=(list(args), str(cwd), child_env, out_path, err_path, timeout))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            stderr = Path(err_path).read_text(errors="replace")
            sys.stderr.write(f"forked run timed out; its stderr:\n{stderr[-6000:]}\n")
            raise subprocess.TimeoutExpired(["<fork>", *args], timeout, Path(out_path).read_text(), stderr)
        return subprocess.CompletedProcess(
            ["<fork>", "-m", "accel_tasks.run", *args],
            process.exitcode,
            Path(out_path).read_text(errors="replace"),
            Path(err_path).read_text(errors="replace"),
        )
