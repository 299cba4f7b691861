"""Run ``accel_tasks.run`` in a forked copy of the test process: a real, separate process that skips start-up.

Why: a run's own work in these tests takes a second or two, while a fresh interpreter spends 7-11 s importing
torch, transformers, datasets and accelerate (twice under ``accelerate launch``: the launcher, then the worker).
A fork of the pytest worker, which has imported them once, starts in milliseconds and is still a process of its
own: its exit status, files, signals and ``os._exit`` are its own, and nothing it changes (the Accelerator's
shared state, torch's thread count, the RNG, the environment, the working directory) leaks into the tests.

What it is not: the launcher or start-up. Tests of those (``accelerate launch`` itself, several processes,
DeepSpeed, imports, the process exit) name ``launcher="accelerate"`` or ``"python"`` in ``run_cli``.
The child reproduces what a single-process ``accelerate launch --mixed_precision X --dynamo_backend no`` puts in
the environment (read off accelerate 1.16), so the run takes the same code path.
"""

from __future__ import annotations

import atexit
import faulthandler
import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import weakref
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


def forkable(env_changes: dict, args: Sequence[str]) -> bool:
    """Whether every variable the test sets is read at call time, so a fork sees it as a new process would, and the
    run keeps to one torch thread (GNU OpenMP hangs in a child that starts a thread team after its parent had one)."""
    threads = [arg.partition("=")[2] for arg in args if arg.startswith("train.threads=")]
    one_thread = env_changes.get("ACCEL_TASKS_NUM_THREADS", "1") == "1" and all(t in ("1", "null") for t in threads)
    return one_thread and all(key.startswith(CALL_TIME_ENV) for key in env_changes)


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


def warm_up() -> None:
    """Import once, in the test process, what every run imports; the forks inherit it."""
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import evaluate  # noqa: F401
    import transformers  # noqa: F401

    import accel_tasks.run  # noqa: F401
    import accel_tasks.training.loop  # noqa: F401


def _child(args: Sequence[str], cwd: Path, env: dict, out_path: str, err_path: str, timeout: int) -> None:
    """The forked process: fresh streams, environment and library state, then the CLI's own entry point."""
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        # Only this run's exit handlers: the test process's own (its temporary folders among them) are not ours.
        for finalizer in list(weakref.finalize._registry):  # type: ignore[attr-defined]
            finalizer.atexit = False
        atexit._clear()
        atexit.register(logging.shutdown)
        if weakref.finalize._registered_with_atexit:  # type: ignore[attr-defined]
            atexit.register(weakref.finalize._exitfunc)  # type: ignore[attr-defined]
        old_streams = {id(sys.stdout), id(sys.stderr), id(sys.__stdout__), id(sys.__stderr__)}
        for fd, path in ((1, out_path), (2, err_path)):
            target = os.open(path, os.O_WRONLY | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
        for logger in [logging.getLogger()] + list(logging.Logger.manager.loggerDict.values()):
            for handler in getattr(logger, "handlers", []):
                if isinstance(handler, logging.StreamHandler) and id(handler.stream) in old_streams:
                    handler.setStream(sys.stderr)
        # A run that hangs shows where, in its stderr, before the parent gives up on it.
        faulthandler.dump_traceback_later(max(timeout - 5, 1), exit=False, file=sys.stderr)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        import datasets.config

        if "HF_DATASETS_CACHE" in env:
            datasets.config.HF_DATASETS_CACHE = Path(env["HF_DATASETS_CACHE"])
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        sys.argv = ["accel_tasks.run", *args]
        from accel_tasks.run import entry

        entry()  # ends the process through teardown.exit_now, as `python -m accel_tasks.run` does
    except BaseException:  # noqa: BLE001 - anything that escapes is printed as a new process would print it
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)


def run_forked(
    args: Sequence[str], cwd: Path, env: dict, mixed_precision: str = "no", timeout: int = 600
) -> subprocess.CompletedProcess:
    """``accelerate launch -m accel_tasks.run ARGS`` (one process) as a fork of this process; same result type."""
    warm_up()
    child_env = {**env, **_launcher_env(mixed_precision)}
    with tempfile.TemporaryDirectory(prefix="forked_run_") as folder:
        out_path, err_path = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        for path in (out_path, err_path):
            Path(path).touch()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(args, Path(cwd), child_env, out_path, err_path, timeout)
        try:
            status = _wait(pid, timeout, args)
        except subprocess.TimeoutExpired as timed_out:
            timed_out.output, timed_out.stderr = Path(out_path).read_text(), Path(err_path).read_text()
            sys.stderr.write(f"forked run timed out; its stderr:\n{timed_out.stderr[-6000:]}\n")
            raise
        return subprocess.CompletedProcess(
            ["<fork>", "-m", "accel_tasks.run", *args],
            status,
            Path(out_path).read_text(errors="replace"),
            Path(err_path).read_text(errors="replace"),
        )


def _wait(pid: int, timeout: int, args: Sequence[str]) -> int:
    """The child's exit status as subprocess reports it (negative: the signal that ended it)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise subprocess.TimeoutExpired(["<fork>", *args], timeout)
        time.sleep(0.02)
