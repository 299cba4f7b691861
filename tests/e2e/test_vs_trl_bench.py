"""bench/vs_trl_sft.py keeps working: one tiny pair (4 steps, 8 eval rows) through accel_tasks and TRL's SFTTrainer.

TRL is the peer, not a dependency: the test installs nothing and is skipped where TRL is absent (``.[bench]``; the
test extra brings it, so CI runs it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli_env

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_one_tiny_pair_runs_both_sides_and_ends_with_the_ratio_line():
    pytest.importorskip("trl")
    command = [
        sys.executable,
        str(REPO / "bench" / "vs_trl_sft.py"),
        "--pairs",
        "1",
        "--steps",
        "4",
        "--eval-rows",
        "8",
    ]
    env = cli_env({"OMP_NUM_THREADS": "1", "ACCEL_TASKS_NUM_THREADS": "1"})
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert re.search(r"the output layer is \d+% of a token", result.stdout)
    assert re.search(r"pair 0 accel_tasks: tokens_per_s=\S+ .*\| packing: 3000 training examples into", result.stdout)
    assert re.search(
        r"pair 0 trl: tokens_per_s=\S+ .*\[trl\] settings: packing=True, packing_strategy=bfd", result.stdout
    )
    assert re.fullmatch(
        r"median ratios: train_tokens_per_s=[\d.]+ train_eval_wall=[\d.]+ eval_gen_throughput=[\d.]+ "
        r"rougeL_delta=-?[\d.]+",
        lines[-1],
    )
