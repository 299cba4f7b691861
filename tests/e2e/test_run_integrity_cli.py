"""Run integrity through the real CLI: a diverging run stops with one line, a stop signal checkpoints and the
resume continues exactly, killing the launcher stops its workers, one live run per output_dir, and a run
that failed on bad data can be retried as typed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import ACCELERATE_CONFIGS, REPO, check, cli_env, one_error_line, read_json, run_cli

# What a user would type for a short run on the bundled sample (all of these are documented settings).
SHORT = ["recipe=summarization", "data.max_train_samples=64", "data.max_eval_samples=4", "generation.max_new_tokens=4"]


def test_a_diverging_run_stops_at_the_first_non_finite_loss(tmp_path: Path):
    result = run_cli(
        [*SHORT, "train.lr=1e10", "train.max_steps=30", "train.log_every=1", "output_dir=run"],
        tmp_path,
        launcher="python",
    )
    assert result.returncode == 3, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("accel-tasks:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "NonFiniteLoss: step " in lines[0] and "the training loss is nan" in lines[0]
    assert "Try a lower train.lr (now 1e+10)" in lines[0]
    step = int(lines[0].split("step ")[1].split(":")[0])
    assert step < 30
    assert not (tmp_path / "run" / "model").exists(), "nothing is exported from a diverged run"


def test_sigterm_checkpoints_at_the_next_step_and_the_resume_continues_exactly(tmp_path: Path):
    args = [*SHORT, "train.max_steps=40", "train.log_every=1", "train.batch_size=4"]
    env = cli_env({"HF_DATASETS_CACHE": str(tmp_path / "ds_cache")})
    full = check(run_cli([*args, "output_dir=full"], tmp_path, launcher="python", env=env))
    assert "step 40/40" in full.stdout

    command = [sys.executable, "-m", "accel_tasks.run", *args, "output_dir=cut"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "step 5/40" not in seen:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, f"the run ended early: {proc.stderr.read()[-3000:]}"
        seen += line
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-3000:]
    assert "Preempted: stopped by SIGTERM at step" in err and "train.resume_from=latest" in err
    checkpoints = sorted((tmp_path / "cut" / "checkpoints").iterdir())
    assert len(checkpoints) == 1 and not (tmp_path / "cut" / "model").exists()

    resumed = check(
        run_cli([*args, "output_dir=cut", "train.resume_from=latest"], tmp_path, launcher="python", env=env)
    )
    assert f"resumed from cut/checkpoints/{checkpoints[0].name}" in resumed.stdout
    from safetensors.torch import load_file

    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert (tmp_path / "cut" / "config.resume-1.yaml").is_file(), "the resume wrote its config beside the first one"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_killing_the_launcher_stops_both_workers(tmp_path: Path):
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIGS / "cpu_2proc.yaml"),
        "-m",
        "accel_tasks.run",
        *SHORT,
        "train.max_steps=500",
        "train.log_every=1",
        "output_dir=run",
    ]
    launcher = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = ""
    while "step 2/500" not in seen:
        line = launcher.stdout.readline()
        assert line or launcher.poll() is None, f"the run ended early: {seen[-3000:]}"
        seen += line
    workers = [pid for child in _children(launcher.pid) for pid in [child, *_children(child)]]
    workers = [pid for pid in workers if "accel_tasks.run" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(workers) == 2, workers
    launcher.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 120
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    launcher.kill()
    launcher.communicate()
    assert not any(_alive(pid) for pid in workers), "workers kept training after their launcher was killed"


def test_a_second_live_run_in_the_same_output_dir_is_refused(tmp_path: Path):
    """A real first run holds output_dir's lock while it trains; a second run there is refused with one line naming
    it, and leaves it alone: the first run still holds its lock, and stops on SIGTERM with its checkpoint."""
    from accel_tasks.runs.output_dir import LOCK_FILE

    cache = {"HF_DATASETS_CACHE": str(tmp_path / "ds_cache")}
    args = [*SHORT, "train.max_steps=100000", "train.log_every=1", "output_dir=run"]
    first = subprocess.Popen(
        [sys.executable, "-m", "accel_tasks.run", *args],
        cwd=tmp_path,
        env=cli_env(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = ""
        while "step 1/100000" not in seen:  # training: the lock was taken in preflight
            line = first.stdout.readline()
            assert line or first.poll() is None, f"the first run ended early: {first.stderr.read()[-3000:]}"
            seen += line
        lock = tmp_path / "run" / LOCK_FILE
        assert lock.is_file() and json.loads(lock.read_text())["pid"] == first.pid, "the training run holds no lock"
        # Paused while the second run starts (still alive, still holding the lock), so the two do not share the cores.
        first.send_signal(signal.SIGSTOP)
        try:
            second = run_cli([*SHORT, "train.max_steps=2", "output_dir=run"], tmp_path, launcher="python", env=cache)
        finally:
            first.send_signal(signal.SIGCONT)
        line = one_error_line(second)
        assert f"output_dir 'run' is in use by a live run (pid {first.pid} on {socket.gethostname()}, started " in line
        assert "wait for it to end or choose another output_dir" in line
        assert first.poll() is None and json.loads(lock.read_text())["pid"] == first.pid, "the refused run took over"
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 75, err[-3000:]
    assert "Preempted: stopped by SIGTERM at step" in err
    assert len(list((tmp_path / "run" / "checkpoints").iterdir())) == 1
    assert not lock.exists(), "the first run released its lock as it stopped"


def test_a_run_that_failed_on_bad_data_can_be_rerun_as_typed(tmp_path: Path):
    bad = tmp_path / "train.jsonl"
    bad.write_text(
        "".join(json.dumps({"body": f"document {i}.", "abstract": f"summary {i}."}) + "\n" for i in range(8))
    )
    good = REPO / "accel_tasks" / "samples" / "summarization" / "validation.jsonl"
    args = [
        "recipe=summarization",
        f"data.train_file={bad}",
        f"data.validation_file={good}",
        "data.max_eval_samples=2",
        "train.max_steps=2",
        "generation.max_new_tokens=4",
        "output_dir=run",
    ]
    failed = run_cli(args, tmp_path, launcher="python")
    assert failed.returncode == 2 and "cannot tell the text and summary columns apart" in failed.stderr, failed.stderr[
        -2000:
    ]
    assert not (tmp_path / "run").exists(), "a run that failed before training leaves nothing behind"
    bad.write_text("".join(json.dumps({"text": f"document {i}.", "summary": f"summary {i}."}) + "\n" for i in range(8)))
    check(run_cli(args, tmp_path, launcher="python"))
    assert (tmp_path / "run" / "model" / "accel_tasks_config.yaml").is_file()
    assert read_json(tmp_path / "run" / "metrics.json")["eval_samples"] == 2
