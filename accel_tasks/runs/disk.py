"""A checkpoint or export that cannot be written whole: the partial directory goes, one line says so.

Why: with the disk full, torch's writer failed as ``RuntimeError ... unexpected pos`` (safetensors as a
``SafetensorError`` around an ``Os { code: 28 }``), a traceback that named neither the disk nor what survived,
and a ``step_N.tmp`` was left behind. The last complete checkpoint is untouched by a failed save (checkpoints are
written beside it and renamed only when whole), so the message can say which one a resume continues from.
"""

from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from accel_tasks.errors import DiskFull, first_line

# The errno values of "cannot write more": no space, a quota, a file-size limit (ulimit -f).
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# How libraries word the same failure when they do not raise OSError (torch's stream writer, safetensors' Rust io).
FULL_WORDS = ("no space left", "file write failed", "unexpected pos", "storagefull", "file too large", "quota")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says that nothing more could be written."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL_ERRNOS:
            return True
        if any(word in str(seen).lower() for word in FULL_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def removed_if_disk_full(partial: Path, what: str, kept: Callable[[], str]) -> Iterator[None]:
    """Run the writes of ``what`` into ``partial``; when the disk fills, ``partial`` is removed and the run stops
    with one line naming what is still whole (``kept()``, asked only then) and the fix."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        shutil.rmtree(partial, ignore_errors=True)
        raise DiskFull(
            f"writing {what} failed: the disk is full or a size limit was reached ({first_line(exc)}); the partial "
            f"{partial} was removed; {kept()}. Free space (or lower train.save_total_limit) and run the same command "
            "with train.resume_from=latest"
        ) from None
