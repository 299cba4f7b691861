"""Back-to-back 2-process DeepSpeed ZeRO-3 runs: does every rank of every run exit 0?

Why: a finished rank used to die with SIGABRT at interpreter exit now and then (``terminate called
without an active exception``, a gloo thread outliving the interpreter; see accel_tasks/teardown.py),
turning a good run into launcher exit 1 and, across machines, a 300 s wait at torch elastic's exit
barrier. One run proves little; this makes many in a row and shows every rank's exit status.

Command (2-core CPU; about 1-1.5 minutes a run)::

    ACCEL_TASKS_NUM_THREADS=1 .venv/bin/python scripts/check_clean_exits.py --runs 10

Each run trains the tiny BART world of tests/ds_fixtures.py for 4 optimizer steps under ZeRO-3 (the
embedding really partitioned), exports the full weights and scores 11 eval examples. The runs cycle
through layouts x precisions (``--layouts``, ``--precisions``):

- ``processes``: one launcher, 2 processes (accelerate_configs/deepspeed_zero3.yaml --num_processes 2).
  Each rank's exit status comes from torchrun's failure report; a launcher exit 0 means every rank
  exited 0 (torchrun exits 0 only then).
- ``machines``: the multi-node command on localhost, 2 launchers of 1 process each
  (deepspeed_zero3_multinode.yaml --num_machines 2 --machine_rank 0|1): each rank's exit status is
  its own launcher's.

Besides exit statuses, every rank's stderr is searched for abort text (``terminate called``,
``Fatal Python error``, ``Aborted``, a torchrun ``exitcode`` report). One line per run, then a summary
line; exit status 0 only when every rank of every run exited 0 with no abort text.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "accelerate_configs"
ABORT_TEXT = re.compile(r"terminate called|Fatal Python error|Aborted|SIGABRT|exitcode\s*:\s*-?\d+")
STEPS = 4


@dataclass
class RunResult:
    """One run: the exit status of each rank (None: not reported), abort lines found, seconds."""

    layout: str
    precision: str
    ranks: dict[int, int | None]
    abort_lines: list[str]
    seconds: float

    @property
    def clean(self) -> bool:
        return all(code == 0 for code in self.ranks.values()) and not self.abort_lines


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_world(root: Path) -> dict[str, Path]:
    sys.path.insert(0, str(REPO / "tests"))
    from ds_fixtures import build_world as build

    return build(root)


def run_args(world: dict[str, Path], output_dir: Path) -> list[str]:
    return [
        "-m",
        "accel_tasks.run",
        f"recipe={world['recipe']}:ForcedLengthSummarization",
        f"model.name_or_path={world['model']}",
        f"data.train_file={world['train']}",
        f"data.validation_file={world['validation']}",
        "train.batch_size=2",
        f"train.max_steps={STEPS}",
        "train.log_every=1",
        "train.lr=3e-3",
        "eval.batch_size=4",
        "task.max_target_length=16",
        f"output_dir={output_dir}",
    ]


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ACCEL_TASKS_NUM_THREADS", "1")
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    return env


def launcher(config: str, precision: str, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / config),
        "--mixed_precision",
        precision,
        *flags,
    ]


def torchrun_rank_codes(stderr: str) -> dict[int, int]:
    """rank -> exit code from torchrun's ChildFailedError report.

    The report names a rank (``rank : 1 (local_rank: 1)``), then its code (``exitcode : -6``).
    """
    codes: dict[int, int] = {}
    rank = None
    for line in stderr.splitlines():
        found = re.search(r"\brank\s*:\s*(\d+)", line)
        if found:
            rank = int(found.group(1))
        found = re.search(r"exitcode\s*:\s*(-?\d+)", line)
        if found and rank is not None:
            codes[rank] = int(found.group(1))
            rank = None
    return codes


def abort_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if ABORT_TEXT.search(line)]


def run_processes(world: dict[str, Path], out: Path, precision: str, timeout: int) -> RunResult:
    start = time.perf_counter()
    command = launcher(
        "deepspeed_zero3.yaml", precision, "--num_processes", "2", "--main_process_port", str(free_port())
    )
    result = subprocess.run(
        [*command, *run_args(world, out)], env=worker_env(), capture_output=True, text=True, timeout=timeout
    )
    (out.parent / f"{out.name}.stderr").write_text(result.stderr)
    if result.returncode == 0:
        ranks: dict[int, int | None] = {0: 0, 1: 0}
    else:
        reported = torchrun_rank_codes(result.stderr)
        ranks = {rank: reported.get(rank) for rank in (0, 1)}
    return RunResult("processes", precision, ranks, abort_lines(result.stderr), time.perf_counter() - start)


def run_machines(world: dict[str, Path], out: Path, precision: str, timeout: int) -> RunResult:
    start = time.perf_counter()
    port = str(free_port())
    procs = []
    for rank in (1, 0):  # the other machine first, in the background, as on a real second node
        command = launcher(
            "deepspeed_zero3_multinode.yaml",
            precision,
            "--num_machines",
            "2",
            "--num_processes",
            "2",
            "--machine_rank",
            str(rank),
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            port,
        )
        procs.append(
            (
                rank,
                subprocess.Popen(
                    [*command, *run_args(world, out)],
                    env=worker_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    ranks: dict[int, int | None] = {}
    found: list[str] = []
    for rank, proc in sorted(procs):
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        ranks[rank] = proc.returncode
        (out.parent / f"{out.name}.rank{rank}.stderr").write_text(stderr)
        found += [f"rank {rank}: {line}" for line in abort_lines(stderr)]
    return RunResult("machines", precision, ranks, found, time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--layouts", default="processes,machines", help="comma-separated: processes, machines")
    parser.add_argument("--precisions", default="bf16,no", help="comma-separated accelerate --mixed_precision values")
    parser.add_argument("--keep", type=Path, help="keep every run's output_dir and stderr under this folder")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per run")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="clean-exits-"))
    root.mkdir(parents=True, exist_ok=True)
    world = build_world(root / "world")
    combos = list(itertools.product(args.layouts.split(","), args.precisions.split(",")))
    results = []
    for index in range(args.runs):
        layout, precision = combos[index % len(combos)]
        run = run_processes if layout == "processes" else run_machines
        result = run(world, root / f"run{index + 1}", precision, args.timeout)
        results.append(result)
        codes = " ".join(f"rank{rank}={code}" for rank, code in sorted(result.ranks.items()))
        aborts = "; ".join(result.abort_lines[:3]) or "none"
        print(
            f"run {index + 1}/{args.runs} {layout:<9} mixed_precision={precision:<4} {codes}  "
            f"abort text: {aborts}  {result.seconds:.0f} s",
            flush=True,
        )
    clean = sum(r.clean for r in results)
    ranks = sum(len(r.ranks) for r in results)
    zeros = sum(code == 0 for r in results for code in r.ranks.values())
    print(
        f"clean exits: {clean}/{len(results)} runs, {zeros}/{ranks} rank exit statuses 0, "
        f"{sum(len(r.abort_lines) for r in results)} abort lines (outputs under {root})"
    )
    return 0 if clean == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
