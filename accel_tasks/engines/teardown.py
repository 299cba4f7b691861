"""Ending a multi-process run in order, so that every process exits with the run's own status.

Why this exists: a rank that had finished training and export was seen to die with SIGABRT at exit
(``terminate called without an active exception``), so its launcher exited 1 and, with one launcher per
machine, the other machine's launcher waited out torch elastic's 300 s exit barrier. That message is
std::terminate without an exception: a C++ thread ended inside a ``noexcept`` frame. The known way for a
gloo process group to do it (pytorch/pytorch#190489, #179291) is to be left to the interpreter's
finalization: its worker threads still hold finished work and tensors, and releasing them needs the GIL
while the interpreter goes away. Before this module the loop left the DeepSpeed engine (and the process
group, on every error path) to finalization. So nothing distributed is left to it now:

- success (every process arrives together): trackers; ZeRO-3's in-flight parameter gathers waited for;
  the DeepSpeed engine destroyed and every prepared object released and collected; a barrier (no rank
  tears down while another still talks to it); the process group destroyed;
- an error or a stop (a process may be alone there, so nothing that waits on the others): the engine
  and prepared objects released, the process group destroyed locally.

scripts/check_clean_exits.py makes back-to-back 2-process ZeRO-3 runs and prints every rank's exit
status. Neither path imports torch: a CLI error before the Accelerator has nothing to tear down.

A single plain process has nothing distributed to order: its objects are left as they are (collecting them
cost 0.9 s here), and the command-line entry points leave through :func:`exit_now`.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, NoReturn

from accel_tasks.errors import is_first_process

if TYPE_CHECKING:
    from accelerate import Accelerator

# The Accelerator of the run in progress, so the error path (run.py, after an exception left the loop)
# can release its engine too; set by the loop right after the Accelerator is built.
_current: list[Accelerator] = []


def track(accelerator: Accelerator) -> None:
    """Remember the run's Accelerator for :func:`release_after_error`."""
    _current[:] = [accelerator]


def finish_processes(accelerator: Accelerator) -> None:
    """The end of a run that every process reached: trackers, engine, barrier, process group, in that order."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []
    if accelerator.num_processes > 1 or getattr(accelerator, "deepspeed_engine_wrapped", None) is not None:
        _release(accelerator, everyone_here=True)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _current.clear()


def release_after_error() -> None:
    """After an exception left the loop (maybe on this process only): release the engine, destroy the group locally."""
    accelerator = _current[0] if _current else None
    _current.clear()
    if "torch.distributed" not in sys.modules:
        return  # nothing distributed was ever started (a CLI error, --help, --print-config)
    if accelerator is not None:
        _release(accelerator, everyone_here=False)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _release(accelerator: Accelerator, everyone_here: bool) -> None:
    """Finish ZeRO-3's in-flight gathers (only when every process is here: waiting on one is a collective),
    destroy the DeepSpeed engine, drop every prepared object; collect now."""
    wrapped = getattr(accelerator, "deepspeed_engine_wrapped", None)
    if wrapped is not None and everyone_here:
        # ZeRO-3 prefetches parameters with asynchronous all-gathers, and engine.destroy() only removes
        # hooks: wait for any still in flight and re-partition (none were left in the runs measured).
        wrapped.engine.empty_partition_cache()
    accelerator.free_memory()  # DeepSpeed: engine.destroy() first, then the models, optimizers, loaders
    gc.collect()


FULL_EXIT_ENV = "ACCEL_TASKS_FULL_EXIT"
# How long a process other than the first waits, at most, for the first one to explain a failure they share.
FIRST_PROCESS_GRACE_S = 10.0


def let_the_first_process_explain(grace_s: float = FIRST_PROCESS_GRACE_S) -> None:
    """On a process other than the first, after a failure every process shares: wait for the launcher to end it.

    Why: the one-line error (and a NaN stop's line) is printed by the first process only, so a command says it
    once, not once a process. torchrun stops every worker within 0.1 s of the first one exiting with an error;
    so when another process reached the same error first and exited at once (the fast exit takes no time),
    the first process was stopped before it printed, and the command failed without a word (seen in CI).
    Waiting here leaves the first process the time to say it and exit; the launcher then stops this one
    (SIGTERM, nothing is left to write: the error path has already released everything). ``grace_s``
    bounds the wait where nothing stops this process (ranks started without an agent, or on another
    machine, whose launcher hears of the failure only through its own workers).
    """
    if not is_first_process():
        time.sleep(grace_s)


def exit_now(status: int) -> NoReturn:
    """End the process with ``status``, skipping CPython's finalization of every loaded module.

    Why: after a run, finalization tears down torch, transformers, datasets, scipy, ... one module at a time:
    2.7-3.1 s measured here after every command, finished or failed, which is 5% of a one-minute fine-tuning
    run and most of a one-line error's time. By the time this is called the run has closed what it wrote
    (files with ``with``, trackers and process group in :func:`finish_processes`), so what finalization
    would still do is free memory the OS frees anyway. What a normal exit does that matters is kept, in its
    order: non-daemon threads are joined, ``atexit`` callbacks run (logging's flush, ``weakref.finalize``
    clean-ups such as temporary directories, trackers' hooks), then stdout and stderr are flushed.
    ``ACCEL_TASKS_FULL_EXIT=1`` exits the normal way (a debugger or profiler that reports at finalization).
    """
    if os.environ.get(FULL_EXIT_ENV, "") not in ("", "0"):
        sys.exit(status)
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said on it
            pass
    os._exit(status)
