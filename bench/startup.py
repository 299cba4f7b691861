"""Start-up time of accel_tasks against a transformers Seq2SeqTrainer script doing the same work, side by side.

Measured per system, each command a fresh process, the two systems alternating A B / B A over ``--pairs`` pairs:

- ``first_step``: from the command to its first optimizer step (accel_tasks' ``step 1/N`` log line with
  train.log_every=1; the Trainer script's callback line after step 1), then the process is killed;
- ``print_config``: the whole ``--print-config`` command (the Trainer script's ``--print_config``: its parsed
  arguments as JSON);
- ``error_key``: a misspelt setting (``train.lrr=1`` / ``--learnig_rate 1``) until the process has exited;
- ``error_file``: a missing train file (``data.train_file=/missing.jsonl`` / ``--train_file /missing.jsonl``).

The work is accel_tasks' default summarization run (bundled Marian built from its config, the bundled 3,000-row
sample, batch 16, lr 2e-3, lengths 128/48) with train.eval_at_start=false; bench/startup_trainer_script.py
is the peer, written as transformers' examples are. Both run with one process (``python``, no launcher), one
torch thread, offline. One unmeasured warm-up run of each fills both feature caches first, so every measured
run is a repeated run (``--cold`` skips it). Printed: per-pair times, accel_tasks/Trainer ratios (below 1:
accel_tasks is faster), their medians, and where accel_tasks' first-step time goes (time of its first log
lines). ``--accel-root DIR`` runs accel_tasks from another checkout (e.g. a ``git worktree`` of an older
commit) for before/after figures.

    OMP_NUM_THREADS=1 ACCEL_TASKS_NUM_THREADS=1 .venv/bin/python bench/startup.py --pairs 3
    git worktree add /tmp/before <commit> && .venv/bin/python bench/startup.py --accel-root /tmp/before

Last line: ``median ratios: first_step=X print_config=Y error_key=Z error_file=W``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "accel_tasks" / "samples" / "summarization"
TRAINER_SCRIPT = REPO / "bench" / "startup_trainer_script.py"
TRAINER_MARKER = "BENCH first optimizer step done"
ACCEL_MARKER = "[accel_tasks] step 1/"
# accel_tasks' first log lines, in order: where its time to the first step goes.
ACCEL_STAGES = (
    ("preflight + accelerator", "[accel_tasks] summarization: mode="),
    ("model built", "[accel_tasks] model:"),
    ("features ready", "[accel_tasks] validation:"),
    ("loop starts", "[accel_tasks] training:"),
    ("first step", ACCEL_MARKER),
)
MEASURES = ("first_step", "print_config", "error_key", "error_file")


def environment(threads: int, accel_root: Optional[Path]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS=str(threads),
        ACCEL_TASKS_NUM_THREADS=str(threads),
    )
    if accel_root is not None:
        env["PYTHONPATH"] = str(accel_root)
    return env


def accel_command(measure: str, out: Path) -> list[str]:
    base = [sys.executable, "-m", "accel_tasks.run", "recipe=summarization"]
    if measure == "first_step":
        return [*base, "train.eval_at_start=false", "train.log_every=1", f"output_dir={out}"]
    if measure == "print_config":
        return [*base, "--print-config"]
    if measure == "error_key":
        return [*base, "train.lrr=1", f"output_dir={out}"]
    return [*base, "data.train_file=/missing/train.jsonl", f"output_dir={out}"]


def trainer_command(measure: str, out: Path) -> list[str]:
    args = {
        "model_dir": SAMPLES / "model",
        "train_file": SAMPLES / "train.jsonl",
        "validation_file": SAMPLES / "validation.jsonl",
        "metric": REPO / "accel_tasks" / "metrics" / "rouge",
        "output_dir": out,
        "max_steps": 1200,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 50,
        "learning_rate": 2e-3,
        "warmup_steps": 30,
        "weight_decay": 0.0,
        "lr_scheduler_type": "linear",
        "max_grad_norm": 1.0,
        "logging_steps": 1,
        "eval_strategy": "steps",
        "eval_steps": 400,
        "generation_max_length": 48,
        "generation_num_beams": 1,
        "report_to": "tensorboard",
        "save_strategy": "no",
        "seed": 42,
        "max_source_length": 128,
        "max_target_length": 48,
    }
    if measure == "error_file":
        args["train_file"] = "/missing/train.jsonl"
    command = [sys.executable, str(TRAINER_SCRIPT)]
    for key, value in args.items():
        command += [f"--{key}", str(value)]
    command.append("--predict_with_generate")
    if measure == "print_config":
        command.append("--print_config")
    if measure == "error_key":
        command += ["--learnig_rate", "1"]
    return command


def timed_run(
    command: list[str], env: dict[str, str], cwd: Path, marker: Optional[str], stages: tuple = (), timeout: float = 900
) -> dict:
    """Wall seconds until ``marker`` appears on stdout (then the process is killed) or until the process exits."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    seen: dict[str, float] = {}
    tail: list[str] = []
    found = None
    try:
        for line in proc.stdout:
            now = time.perf_counter() - start
            tail = (tail + [line.rstrip()])[-30:]
            for name, prefix in stages:
                if name not in seen and line.startswith(prefix):
                    seen[name] = now
            if marker is not None and marker in line:
                found = now
                break
            if now > timeout:
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    wall = found if marker is not None else time.perf_counter() - start
    if marker is not None and found is None:
        raise RuntimeError(f"{command[:4]}... never printed {marker!r}; its last lines:\n" + "\n".join(tail))
    return {"seconds": wall, "stages": seen, "returncode": proc.returncode, "tail": tail}


def measure_once(system: str, measure: str, work: Path, run_id: str, env: dict, accel_cwd: Path) -> dict:
    out = work / f"{system}-{measure}-{run_id}"
    if system == "accel_tasks":
        marker = ACCEL_MARKER if measure == "first_step" else None
        return timed_run(
            accel_command(measure, out), env, accel_cwd, marker, ACCEL_STAGES if measure == "first_step" else ()
        )
    marker = TRAINER_MARKER if measure == "first_step" else None
    return timed_run(trainer_command(measure, out), env, REPO, marker)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cold", action="store_true", help="no warm-up runs (the first measured runs fill the caches)")
    parser.add_argument(
        "--accel-root", type=Path, default=None, help="run accel_tasks from this checkout (before/after)"
    )
    parser.add_argument(
        "--measures", default=",".join(MEASURES), help=f"comma-separated subset of {','.join(MEASURES)}"
    )
    args = parser.parse_args()
    measures = [m for m in args.measures.split(",") if m]
    env = environment(args.threads, args.accel_root)
    accel_cwd = args.accel_root or REPO
    where = subprocess.run(
        [sys.executable, "-c", "import accel_tasks; print(accel_tasks.__file__)"],
        cwd=accel_cwd,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(
        f"accel_tasks from {where}; Trainer script {TRAINER_SCRIPT.relative_to(REPO)}; "
        f"{args.pairs} pairs, {args.threads} thread(s)"
    )
    results: dict[str, dict[str, list[dict]]] = {s: {m: [] for m in measures} for s in ("accel_tasks", "trainer")}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        if not args.cold and "first_step" in measures:
            for system in ("accel_tasks", "trainer"):
                r = measure_once(system, "first_step", work, "warmup", env, accel_cwd)
                print(f"warm-up {system}: first step after {r['seconds']:.2f} s")
        for pair in range(args.pairs):
            order = ("accel_tasks", "trainer") if pair % 2 == 0 else ("trainer", "accel_tasks")
            for system in order:
                for measure in measures:
                    r = measure_once(system, measure, work, str(pair), env, accel_cwd)
                    results[system][measure].append(r)
            line = "  ".join(
                f"{m}: {results['accel_tasks'][m][-1]['seconds']:.2f}/{results['trainer'][m][-1]['seconds']:.2f}="
                f"{results['accel_tasks'][m][-1]['seconds'] / results['trainer'][m][-1]['seconds']:.3f}"
                for m in measures
            )
            print(f"pair {pair + 1} ({order[0]} first) seconds accel_tasks/Trainer=ratio  {line}", flush=True)
    print()
    print(
        f"{'measure':<14}{'accel_tasks s':>14}{'Trainer s':>11}{'ratio':>8}   "
        "per-pair ratios   exit statuses (accel_tasks, Trainer)"
    )
    medians = {}
    for m in measures:
        a = [r["seconds"] for r in results["accel_tasks"][m]]
        b = [r["seconds"] for r in results["trainer"][m]]
        ratios = [x / y for x, y in zip(a, b)]
        medians[m] = statistics.median(ratios)
        codes = (results["accel_tasks"][m][-1]["returncode"], results["trainer"][m][-1]["returncode"])
        print(
            f"{m:<14}{statistics.median(a):>14.2f}{statistics.median(b):>11.2f}{medians[m]:>8.3f}   "
            f"{' '.join(f'{r:.3f}' for r in ratios)}   {codes if m != 'first_step' else '(killed after the step)'}"
        )
    for m in ("error_key", "error_file"):
        if m in measures:
            a_tail = results["accel_tasks"][m][-1]["tail"]
            b_tail = results["trainer"][m][-1]["tail"]
            print(f"{m}: accel_tasks says {a_tail[-1] if a_tail else ''!r}")
            print(
                f"{m}: Trainer says {b_tail[-1] if b_tail else ''!r} ({len(b_tail)} lines shown of its output's tail)"
            )
    if "first_step" in measures:
        print("accel_tasks first step, median seconds after the command at each log line:")
        for name, _ in ACCEL_STAGES:
            times = [r["stages"][name] for r in results["accel_tasks"]["first_step"] if name in r["stages"]]
            if times:
                print(f"  {name:<24} {statistics.median(times):6.2f}")
    print("median ratios: " + " ".join(f"{m}={medians[m]:.3f}" for m in measures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
