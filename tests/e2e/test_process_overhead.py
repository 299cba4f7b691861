"""What a command costs outside the training loop: the fast exit, and no DeepSpeed import in a plain run's eval.

Both were measured as seconds of every CLI call (bench/vs_hf_trainer.py, issue 16): CPython's finalization of
torch/transformers/datasets took 2.7-3.1 s after each run, and accelerate's ``unwrap_model`` imported
deepspeed (and MLflow through it) for an ``isinstance`` check.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from helpers import check, cli_env, run_cli

EXIT_SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from accel_tasks.engines.teardown import exit_now

out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))

def late_writer():
    time.sleep(0.3)
    (out / "thread").write_text("joined")

threading.Thread(target=late_writer).start()     # non-daemon: a normal exit waits for it, so must this one
sys.stdout.write("buffered, never flushed by hand")  # stdout is a pipe here: block-buffered
exit_now(int(sys.argv[2]))
raise SystemExit("exit_now returned")
"""


def _exit_script(tmp_path: Path, status: int, env: dict | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / "exit_script.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT))
    environ = {k: v for k, v in cli_env(env).items() if k != "PYTHONUNBUFFERED"}  # stdout stays block-buffered
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(status)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def test_exit_now_keeps_what_a_normal_exit_does_and_returns_the_status(tmp_path: Path):
    done = _exit_script(tmp_path, 3)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, never flushed by hand"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "joined"
    assert "exit_now returned" not in done.stderr


def test_full_exit_env_takes_the_normal_exit(tmp_path: Path):
    done = _exit_script(tmp_path, 4, env={"ACCEL_TASKS_FULL_EXIT": "1"})
    assert done.returncode == 4, done.stderr
    assert (tmp_path / "atexit").read_text() == "ran" and (tmp_path / "thread").read_text() == "joined"


def test_a_cli_run_exits_at_once_after_its_last_line(tmp_path: Path):
    """The process ends right after the summary: under a second from the last line to the exit status, where
    finalization took about 3 s here. Everything written is complete (metrics, predictions, the manifest)."""
    command = [
        sys.executable,
        "-m",
        "accel_tasks.run",
        "recipe=summarization",
        "output_dir=out",
        "train.max_steps=2",
        "data.max_train_samples=32",
        "data.max_eval_samples=4",
        "train.batch_size=8",
        "train.eval_at_start=false",
        "generation.max_new_tokens=4",
    ]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    last_line_at = time.monotonic()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        last_line_at = time.monotonic()
    status = proc.wait(timeout=600)
    gap = time.monotonic() - last_line_at
    assert status == 0, "".join(lines[-40:])
    assert any("done: train run of recipe=summarization" in line for line in lines)
    assert gap < 1.0, f"{gap:.2f} s from the last output line to the exit"
    out = tmp_path / "out"
    assert (out / "metrics.json").is_file() and len((out / "predictions.jsonl").read_text().splitlines()) == 4
    assert (out / "model" / "accel_tasks_manifest.json").is_file()


UNWRAP_SCRIPT = """
import sys
import torch
from accelerate import Accelerator
from accel_tasks.engines.accelerator import unwrap_model

accelerator = Accelerator(cpu=True)
model = torch.nn.Linear(3, 2)
prepared = accelerator.prepare(model)
assert unwrap_model(accelerator, prepared) is model
assert unwrap_model(accelerator, torch.nn.DataParallel(model)) is model
print("deepspeed imported:", "deepspeed" in sys.modules)
"""


def test_unwrapping_a_plain_model_does_not_import_deepspeed(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-c", UNWRAP_SCRIPT], capture_output=True, text=True, env=cli_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "deepspeed imported: False" in done.stdout


def test_an_eval_only_run_of_a_plain_export_never_imports_deepspeed(tmp_path: Path):
    """The whole eval-only path (load, prepare, generate, score) of an export, through ``accelerate launch``."""
    check(
        run_cli(
            [
                "recipe=summarization",
                "output_dir=trained",
                "train.max_steps=1",
                "data.max_train_samples=16",
                "data.max_eval_samples=2",
                "train.batch_size=8",
                "train.eval_at_start=false",
                "generation.max_new_tokens=2",
            ],
            tmp_path,
        )
    )
    probe = tmp_path / "probe"
    probe.mkdir()
    # sitecustomize runs in the launched worker: it reports at exit whether deepspeed was ever imported.
    (probe / "sitecustomize.py").write_text(
        "import atexit, os, sys\n"
        "if 'ACCELERATE_MIXED_PRECISION' in os.environ:  # set by the launcher for its worker only\n"
        "    atexit.register(lambda: print('WORKER_DEEPSPEED_IMPORTED=' + str('deepspeed' in sys.modules), "
        "flush=True))\n"
    )
    done = check(
        run_cli(
            ["mode=eval", "model.name_or_path=trained/model", "output_dir=scored"],
            tmp_path,
            env={"PYTHONPATH": str(probe)},
        )
    )
    assert "WORKER_DEEPSPEED_IMPORTED=False" in done.stdout, done.stdout[-3000:]
    assert (tmp_path / "scored" / "metrics.json").is_file()


def test_both_module_entry_points_end_through_the_fast_exit_with_the_status():
    """``python -m accel_tasks`` and ``python -m accel_tasks.run`` run one entry: 0 for a listing, 2 for a bad key."""
    for module in ("accel_tasks", "accel_tasks.run"):
        listed = subprocess.run(
            [sys.executable, "-m", module, "--list"], capture_output=True, text=True, env=cli_env(), timeout=120
        )
        assert listed.returncode == 0 and "summarization" in listed.stdout, listed.stderr
        bad = subprocess.run(
            [sys.executable, "-m", module, "recipe=summarization", "train.lrr=1"],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=120,
        )
        assert bad.returncode == 2 and "accel-tasks: error: unknown config key 'train.lrr'" in bad.stderr, bad.stderr
