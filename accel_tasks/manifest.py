"""Manifests: a directory a run wrote (a checkpoint, an export) proves it is complete.

The manifest lists every file with its size and is written last, after every other file is closed.
A directory whose manifest is missing, or whose files no longer match it (a file deleted, truncated
or still being written), is incomplete, and nothing of ours trusts it: not ``resume_from=latest``,
not an explicit resume, not an eval-only run. Checking costs one ``stat`` per file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

MANIFEST_FILE = "accel_tasks_manifest.json"
MANIFEST_FORMAT = 1


def write_manifest(directory: Path, **facts: object) -> Path:
    """List every file under ``directory`` (sizes in bytes) in its manifest; call it after the last file is written."""
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != MANIFEST_FILE:
            files[path.relative_to(directory).as_posix()] = path.stat().st_size
    target = directory / MANIFEST_FILE
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, **facts, "files": files}, indent=1, sort_keys=True) + "\n")
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return target


def manifest_problem(directory: Path) -> Optional[str]:
    """None when ``directory`` matches its manifest, else what is wrong, in words (for one-line messages)."""
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        return f"it has no {MANIFEST_FILE} (it was not finished, or was written by an older accel_tasks)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"its {MANIFEST_FILE} is unreadable"
    for name, size in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{name} has {actual} bytes, the manifest says {size}"
    return None


def has_manifest(directory: Path) -> bool:
    return (directory / MANIFEST_FILE).is_file()
