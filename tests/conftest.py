"""Shared set-up for every test directory (unit/, e2e/, docs/).

tests/ itself holds the helpers (``helpers.py``, ``ds_fixtures.py``) that the test files import by name.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# Before any test imports huggingface_hub or tokenizers: the forked runs (forked_run.py) inherit what the test
# process imported, and these are read at import time. The hub is never reachable from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# A summarization run long enough that the model writes real summaries (ROUGE-L about 0.15), so that reproducing
# or predicting them means something; with a checkpoint mid-way (step 120) and at the end (step 240).
TRAINED_SUMMARIZATION = [
    "recipe=summarization",
    "data.max_eval_samples=12",
    "train.max_steps=240",
    "train.log_every=80",
    "train.eval_every=120",
    "train.save_every=120",
    "train.save_total_limit=1",
]


@pytest.fixture(scope="session")
def shared_summarization_run(tmp_path_factory) -> SharedRun:
    """The TRAINED_SUMMARIZATION run, trained once per test session and shared by every file and xdist worker.

    Why: a dozen files need "a trained model" and nothing more particular; each training its own cost minutes.
    Read-only for its users: take a private copy with :meth:`SharedRun.copy_to` before writing next to it.
    Under xdist the workers share the session's temporary root, and a file lock makes one of them train.
    """
    from filelock import FileLock

    from helpers import check, run_cli

    under_xdist = "PYTEST_XDIST_WORKER" in os.environ  # (xdist's worker_id fixture is absent with -p no:xdist)
    root = tmp_path_factory.getbasetemp().parent if under_xdist else tmp_path_factory.getbasetemp()
    work = root / "shared_summarization_run"
    with FileLock(str(work) + ".lock"):
        done = work / "stdout.txt"
        if not done.exists():
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            env = {"HF_DATASETS_CACHE": str(work / "ds_cache")}
            result = check(run_cli([*TRAINED_SUMMARIZATION, "output_dir=run"], work, env=env))
            done.write_text(result.stdout)
    return SharedRun(work / "run", done.read_text())


@dataclass(frozen=True)
class SharedRun:
    """A finished training run: its output_dir and what it printed."""

    output_dir: Path
    stdout: str

    def copy_to(self, work: Path, name: str = "run") -> Path:
        """A private copy of the output_dir under ``work`` (what a test may write next to or delete)."""
        target = work / name
        shutil.copytree(self.output_dir, target)
        return target
