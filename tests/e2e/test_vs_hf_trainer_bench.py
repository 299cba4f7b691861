"""bench/vs_hf_trainer.py keeps working: one tiny pair (2 steps, 6 eval rows) through both systems."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import cli_env

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "vs_hf_trainer.py"


def test_one_tiny_pair_runs_both_systems_and_ends_with_the_ratio_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--pairs",
            "1",
            "--steps",
            "2",
            "--max-train-samples",
            "32",
            "--eval-rows",
            "6",
            "--max-new-tokens",
            "3",
            "--keep",
            str(tmp_path),
        ],
        cwd=REPO,
        env=cli_env({"OMP_NUM_THREADS": "1", "ACCEL_TASKS_NUM_THREADS": "1"}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(
        r"median ratios: train_eval_wall=\d+\.\d{3} eval_gen_throughput=\d+\.\d{3} rougeL_delta=[+-]\d+\.\d{2}",
        lines[-1],
    ), lines[-1]
    assert any(line.startswith("[bench] Trainer settings: train_sampling_strategy=group_by_length") for line in lines)
    assert any("train.group_by_length=true" in line and "eval.max_tokens_per_batch=" in line for line in lines)
    # Both sides scored the same 6 rows, and each wrote what the bench read.
    for side in ("accel_tasks-1", "trainer-1"):
        assert len((tmp_path / side / "predictions.jsonl").read_text().splitlines()) == 6
    assert "1 pair(s): a smoke run, not a measurement" in result.stdout
