"""Two machines on localhost, and clean process exits, run for real on CPU (gloo).

The multi-node command of the README, once per machine rank, on one host:

    accelerate launch --config_file accelerate_configs/deepspeed_zero3_multinode.yaml --num_machines 2 \\
        --num_processes 2 --machine_rank R --main_process_ip 127.0.0.1 --main_process_port P -m accel_tasks.run ...

(R=1 started in the background, R=0 in the foreground), the same with accelerate_configs/fsdp2_multinode.yaml
(FSDP2 sharding across the two machines), and for plain DDP with multi_gpu-style CPU processes
(``--multi_gpu --num_machines 2 ...``: Accelerator(cpu=True), gloo). Each backend trains
the tiny BART of tests/ds_fixtures.py 4 steps with a checkpoint at 2 (run A), then a second pair of
launchers resumes A's step-2 checkpoint into a new output_dir (run B). Every launcher (= every rank)
must exit 0 with no abort text on stderr; A and B export full weights and score all 11 eval examples;
B's steps 3-4 repeat A's losses and end at A's weights (an exact resume on the same 2 processes).

test_clean_exit_script_* runs scripts/check_clean_exits.py once (one 2-process ZeRO-3 run): both
ranks exit 0 and no abort text; its per-rank report is also checked on a torchrun failure text. The
error path: a non-finite loss on 2 ZeRO-3 processes ends with exit 3 and no abort on any rank.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ds_fixtures import WORLD_ARGS, build_world
from helpers import ACCELERATE_CONFIGS, REPO, cli_env, read_json, read_jsonl, scalars

COMMON = WORLD_ARGS
ABORT_TEXT = re.compile(r"terminate called|Fatal Python error|Aborted|SIGABRT|exitcode\s*:")
# Launcher flags per backend, besides the machine rank and the rendezvous address.
BACKENDS = {
    "zero3": ["--config_file", str(ACCELERATE_CONFIGS / "deepspeed_zero3_multinode.yaml"), "--mixed_precision", "no"],
    "ddp": ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"],
    "fsdp2": ["--config_file", str(ACCELERATE_CONFIGS / "fsdp2_multinode.yaml"), "--mixed_precision", "no"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_machines(
    backend: str, args: list[str], cwd: Path, timeout: int = 900
) -> dict[int, subprocess.CompletedProcess]:
    """Machine rank 1 in the background, then rank 0; each launcher's result by machine rank."""
    port = str(free_port())
    procs = {}
    for rank in (1, 0):
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *BACKENDS[backend],
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
            "-m",
            "accel_tasks.run",
            *args,
        ]
        procs[rank] = (
            command,
            subprocess.Popen(
                command, cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
        )
    results = {}
    for rank in (0, 1):
        command, proc = procs[rank]
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for _, other in procs.values():
                other.kill()
            stdout, stderr = proc.communicate()
        results[rank] = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    return results


def check_every_rank(results: dict[int, subprocess.CompletedProcess]) -> str:
    """Both launchers exit 0 with no abort text; returns rank 0's stdout (the run's log)."""
    for rank, result in results.items():
        assert result.returncode == 0, (
            f"machine rank {rank}: exit {result.returncode}\n"
            f"STDOUT:\n{result.stdout[-4000:]}\nSTDERR:\n{result.stderr[-4000:]}"
        )
        aborts = [line for line in result.stderr.splitlines() if ABORT_TEXT.search(line)]
        assert not aborts, f"machine rank {rank}: {aborts}"
    return results[0].stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return build_world(tmp_path_factory.mktemp("multinode") / "world")


def run_args(world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        f"recipe={world['recipe']}:ForcedLengthSummarization",
        f"model.name_or_path={world['model']}",
        f"data.train_file={world['train']}",
        f"data.validation_file={world['validation']}",
        *COMMON,
        *extra,
        f"output_dir={out}",
    ]


def assert_full_export_and_eval(world: dict[str, Path], out: Path) -> dict:
    from safetensors.torch import load_file

    exported = load_file(out / "model" / "model.safetensors")
    initial = load_file(Path(world["model"]) / "model.safetensors")
    assert set(initial) <= set(exported) or set(exported) <= set(initial)
    for name, tensor in exported.items():
        assert tensor.shape == initial[name].shape, name  # whole tensors, not a rank's ZeRO-3 partition
    assert len(read_jsonl(out / "predictions.jsonl")) == 11
    metrics = read_json(out / "metrics.json")
    assert metrics["eval_samples"] == 11
    return exported


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["zero3", "ddp", "fsdp2"])
def test_two_machines_on_localhost_train_checkpoint_and_resume(world, tmp_path, backend):
    import torch

    first = tmp_path / "a"
    log = check_every_rank(launch_two_machines(backend, run_args(world, first), tmp_path))
    kind = {"zero3": "DEEPSPEED", "ddp": "MULTI_CPU", "fsdp2": "FSDP2"}[backend]
    assert f"processes=2 distributed={kind}" in log
    assert (first / "checkpoints" / "step_2").is_dir() and (first / "checkpoints" / "step_4").is_dir()
    exported_a = assert_full_export_and_eval(world, first)

    resumed = tmp_path / "b"
    checkpoint = first / "checkpoints" / "step_2"
    log = check_every_rank(
        launch_two_machines(backend, run_args(world, resumed, f"train.resume_from={checkpoint}"), tmp_path)
    )
    assert f"resumed from {checkpoint} at step 2" in log
    exported_b = assert_full_export_and_eval(world, resumed)
    loss_a, loss_b = scalars(first, "train/loss"), scalars(resumed, "train/loss")
    assert sorted(loss_b) == [3, 4]
    for step in (3, 4):
        assert loss_b[step] == pytest.approx(loss_a[step], rel=1e-4), (loss_a, loss_b)
    assert loss_a[4] < loss_a[1]
    for name, tensor in exported_a.items():
        assert torch.allclose(exported_b[name].float(), tensor.float(), atol=1e-6), name


# ------------------------------------------------------------------ clean exits


def load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_clean_exits", REPO / "scripts" / "check_clean_exits.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


TORCHRUN_FAILURE = """\
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
accel_tasks.run FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-01_13:02:11
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -6 (pid: 4242)
  error_file: <N/A>
  traceback : Signal 6 (SIGABRT) received by PID 4242
============================================================
"""


def test_clean_exit_script_reads_each_ranks_status_from_a_torchrun_failure():
    script = load_script()
    assert script.torchrun_rank_codes(TORCHRUN_FAILURE) == {1: -6}
    assert any("SIGABRT" in line for line in script.abort_lines(TORCHRUN_FAILURE))
    assert script.abort_lines("terminate called without an active exception\n") == [
        "terminate called without an active exception"
    ]
    assert script.abort_lines("[accel_tasks] step 4/4 loss 8.2\n") == []


@pytest.mark.slow
def test_clean_exit_script_one_two_process_zero3_run_every_rank_exits_0(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "check_clean_exits.py"),
            "--runs",
            "1",
            "--layouts",
            "processes",
            "--precisions",
            "bf16",
            "--keep",
            str(tmp_path),
        ],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "run 1/1 processes mixed_precision=bf16 rank0=0 rank1=0  abort text: none" in result.stdout
    assert "clean exits: 1/1 runs, 2/2 rank exit statuses 0, 0 abort lines" in result.stdout
    # The run itself finished: export and eval, on both ranks' behalf.
    assert read_json(tmp_path / "run1" / "metrics.json")["eval_samples"] == 11
    stderr = (tmp_path / "run1.stderr").read_text()
    assert "terminate called" not in stderr and "Fatal Python error" not in stderr


@pytest.mark.slow
def test_a_run_stopped_on_every_rank_ends_with_its_own_status_and_no_abort(world, tmp_path):
    """The error path of teardown.py: a non-finite loss on 2 ZeRO-3 processes ends with exit 3, never an abort."""
    import yaml

    from helpers import run_cli

    args = [
        a
        for a in run_args(world, tmp_path / "diverged", "train.lr=1e20", "train.max_grad_norm=0")
        if a != "train.lr=3e-3"
    ]
    config = yaml.safe_load((ACCELERATE_CONFIGS / "deepspeed_zero3.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no")
    (tmp_path / "zero3_2.yaml").write_text(yaml.safe_dump(config))
    result = run_cli(args, tmp_path, config_file=tmp_path / "zero3_2.yaml", timeout=900)
    assert "the training loss is nan (not finite)" in result.stderr, result.stderr[-3000:]
    codes = load_script().torchrun_rank_codes(result.stderr)
    # Each rank's status, from torchrun's report: 3 (NonFiniteLoss), or -15 where torchrun, failing fast after
    # the first rank's exit, sent SIGTERM to a rank still on its way out; never -6 (SIGABRT).
    assert set(codes) == {0, 1} and set(codes.values()) <= {3, -15} and 3 in codes.values(), result.stderr[-3000:]
    assert not [
        line for line in result.stderr.splitlines() if re.search(r"terminate called|Fatal Python error|SIGABRT", line)
    ]
