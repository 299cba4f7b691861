"""Stop signals through the real CLI, outside and inside the training steps.

Ctrl-C (SIGINT) takes SIGTERM's path: a checkpoint at the next step, then exit 130 with one line (a second Ctrl-C
stops at once). A SIGTERM while the run is still loading ends it with one line (exit 75) and
its lock released, and the command a cluster requeues (`train.resume_from=latest`) then trains from the start.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from helpers import check, cli_env, read_json, run_cli

SHORT = ["recipe=summarization", "data.max_train_samples=64", "data.max_eval_samples=4", "generation.max_new_tokens=4"]


def start(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "accel_tasks.run", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(proc: subprocess.Popen, text: str) -> None:
    seen = ""
    while text not in seen:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, f"the run ended early: {proc.stderr.read()[-3000:]}"
        seen += line


def error_lines(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("accel-tasks:") and not line.startswith("accel-tasks: warning:")
    ]


def test_ctrl_c_checkpoints_at_the_next_step(tmp_path: Path):
    env = cli_env({"HF_DATASETS_CACHE": str(tmp_path / "cache")})
    args = [*SHORT, "train.max_steps=200", "train.log_every=1", "train.batch_size=4"]
    proc = start([*args, "output_dir=once"], tmp_path, env)
    wait_for(proc, "step 3/200")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Ctrl-C: checkpointing at the next step (press it again to stop at once)" in err
    (line,) = error_lines(err)
    assert "Interrupted: stopped by SIGINT at step" in line and "train.resume_from=latest" in line
    assert len(list((tmp_path / "once" / "checkpoints").iterdir())) == 1
    assert "Traceback" not in err


def test_a_second_ctrl_c_stops_at_once():
    """In process (two signals a test sends are one to Python when they land before its handler runs)."""
    import os

    import pytest

    from accel_tasks.training.guards import StopRequest

    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal_name == "SIGINT"  # recorded: the loop checkpoints at the next step
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is not stop._record  # the previous handler is back


def test_sigterm_while_loading_is_one_line_and_the_requeued_command_trains_from_the_start(tmp_path: Path):
    env = cli_env({"HF_DATASETS_CACHE": str(tmp_path / "cache")})
    args = [*SHORT, "train.max_steps=2", "output_dir=job", "train.resume_from=latest"]
    proc = start(args, tmp_path, env)
    wait_for(proc, "summarization: mode=train")  # the Accelerator is up; the model and data are loading
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-3000:]
    (line,) = error_lines(err)
    assert "Preempted: stopped by SIGTERM outside the training steps: no checkpoint was written" in line
    assert "Traceback" not in err
    assert not (tmp_path / "job" / ".accel_tasks.lock").exists()

    requeued = check(run_cli(args, tmp_path, env={"HF_DATASETS_CACHE": str(tmp_path / "cache")}))
    assert "holds no complete checkpoint; training from the start" in requeued.stderr
    assert read_json(tmp_path / "job" / "metrics.json")["train_steps"] == 2


def test_main_gives_the_callers_stop_signal_handlers_back():
    """A program (or a test process that forks workers) calling main() keeps its own handlers: left ignored, its
    forked children ignored SIGTERM too and could not be stopped."""
    import signal

    from accel_tasks.run import main

    def handler(signum: int, frame: object) -> None:
        return None

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        assert main(["recipe=summarization", "learning_rate=1", "--print-config"]) == 2
        assert all(signal.getsignal(sig) is handler for sig in previous)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
