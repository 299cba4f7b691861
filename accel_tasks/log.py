"""The one output channel to the user: progress lines and warnings, printed by the first process only.

Why one channel: a run's console is read by a person, and under ``accelerate launch`` every process runs the same
code; a line printed by each of N processes is noise, and a callable handed through signatures (or set on a recipe)
hides who may print. Any module, recipes included, calls :func:`info` or :func:`warning` directly.

Why the environment (``RANK``) and not the Accelerator: lines are printed before it exists (preflight, model
loading) and after it is gone (the run summary); the launcher sets ``RANK`` for every process, and a lone process
has none, so it speaks.
"""

from __future__ import annotations

import sys

from accel_tasks.errors import is_first_process

PREFIX = "[accel_tasks] "


def info(message: str) -> None:
    """A progress line on stdout (flushed: logs of cluster jobs are read while the job runs)."""
    if is_first_process():
        print(f"{PREFIX}{message}", flush=True)


def warning(message: str) -> None:
    """A one-line warning on stderr, in the format of the error line (``accel-tasks: warning: ...``)."""
    if is_first_process():
        print(f"accel-tasks: warning: {message}", file=sys.stderr, flush=True)


def interactive() -> bool:
    """Whether stderr is a terminal: only then do progress bars redraw a line (else they fill log files with \\r)."""
    return sys.stderr.isatty()
