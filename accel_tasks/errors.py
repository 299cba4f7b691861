"""The one-line error contract: every user mistake is a :class:`ConfigError`, printed as one line, exit 2.

This is the ground floor of the package: it imports nothing else of accel_tasks, so every module
(config, data, recipes, the loop) can raise the same error and the CLI can catch one type.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# How many offending rows an error or warning quotes before it only counts the rest.
SHOWN_ROWS = 5


class ConfigError(ValueError):
    """A user mistake in the run config or its inputs; the CLI prints it as one line and exits with status 2."""


def list_rows(row_ids: Sequence[object], limit: int = SHOWN_ROWS, quote: bool = True) -> str:
    """``'a', 'b', ... (3 more)``: the first ``limit`` rows of a message, then a count of the others.

    Why one helper: data errors of every recipe quote rows the same way, so a user learns one format.
    """
    shown = ", ".join(repr(row) if quote else str(row) for row in row_ids[:limit])
    more = f", ... ({len(row_ids) - limit} more)" if len(row_ids) > limit else ""
    return shown + more


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can span a screen)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_first_process() -> bool:
    """Global rank 0 (set by the launcher), or a lone process: the one that speaks for all and owns the run's files.

    Why the environment: the checks that use it run before the Accelerator exists (and after it is gone).
    """
    return os.environ.get("RANK", "0") == "0"


class RunStopped(Exception):
    """A run that stopped on purpose mid-way (diverged, preempted): one line and a documented exit status."""

    exit_code = 1


class NonFiniteLoss(RunStopped):
    """The training loss (or the weights) stopped being finite: exit status 3, nothing exported."""

    exit_code = 3


class Preempted(RunStopped):
    """SIGTERM / SIGUSR1 asked the run to stop: a checkpoint was written; exit status 75 (EX_TEMPFAIL: run again)."""

    exit_code = 75


class Interrupted(Preempted):
    """Ctrl-C (SIGINT) asked the run to stop: as Preempted, with the shell's status for an interrupt, 130."""

    exit_code = 130


class DiskFull(RunStopped):
    """A checkpoint or export could not be written (no space, a quota, a file-size limit): the partial directory
    was removed and the last complete checkpoint kept; exit status 74 (EX_IOERR)."""

    exit_code = 74
