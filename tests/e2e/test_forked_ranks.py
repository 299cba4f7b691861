"""run_cli(launcher="forked") for several processes: each worker a fork of the warm server (tests/forked_run.py).

What makes the forked launcher worth trusting is checked against the real one: a worker's whole environment equals
what ``accelerate launch`` + torchrun give it (a script that dumps os.environ, under both), and a 2-process run
trains and fails as under ``accelerate launch``: the other workers are stopped, the exit status is the first
failure's, nothing hangs past the timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forked_run import _launcher_env, run_forked_ranks
from helpers import ACCELERATE_CONFIGS, check, cli_env, launch_flags, one_error_line, read_json, run_cli

DUMP_ENV = """
import json, os, sys
from pathlib import Path

Path(f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(dict(os.environ), sort_keys=True))
"""
# Rank 1 fails at once while rank 0 would go on for a minute: the launcher has to stop rank 0.
ONE_FAILS = """
import os, sys, time

print(f"rank {os.environ['RANK']} started", flush=True)
print(f"rank {os.environ['RANK']} err", file=sys.stderr, flush=True)
if os.environ["RANK"] == "1":
    sys.exit(3)
time.sleep(60)
"""
SLEEPS = """
import sys, time

print("asleep", file=sys.stderr, flush=True)
time.sleep(60)
"""


def dumped(folder: Path) -> dict[str, dict[str, str]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("rank*.json"))}


@pytest.mark.parametrize(
    "config,processes,expected_flags",
    [
        ("fsdp2.yaml", 2, ["--config_file", "CONFIG", "--num_processes", "2"]),
        (None, 2, ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]),
    ],
)
def test_a_forked_worker_gets_the_environment_accelerate_launch_gives_it(
    tmp_path: Path, config: str, processes: int, expected_flags: list[str]
):
    """Why the whole environment and not a few keys: anything accelerate or torchrun sets that the fork missed
    could change the run's path. The only differences allowed: MASTER_PORT (a free port each time) and
    TORCHELASTIC_* (the agent's own; nothing the run imports reads them, see forked_run._torchrun_env)."""
    config_file = ACCELERATE_CONFIGS / config if config else None
    flags = launch_flags(config_file, processes, "no")
    assert flags == [str(config_file) if flag == "CONFIG" else flag for flag in expected_flags] + (
        ["--multi_gpu"] if config is None else []
    )
    script = tmp_path / "dump_env.py"
    script.write_text(DUMP_ENV)
    (tmp_path / "real").mkdir()
    (tmp_path / "forked").mkdir()
    launch = [sys.executable, "-m", "accelerate.commands.launch", *flags, str(script)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    real_launch = subprocess.Popen(launch, cwd=tmp_path / "real", env=cli_env(), **pipes)  # meanwhile, the forks
    check(run_forked_ranks(flags, [], tmp_path / "forked", cli_env(), timeout=120, script=str(script)))
    out, err = real_launch.communicate(timeout=120)
    check(subprocess.CompletedProcess(launch, real_launch.returncode, out, err))
    real, forked = dumped(tmp_path / "real"), dumped(tmp_path / "forked")
    assert sorted(real) == sorted(forked) == ["rank0", "rank1"]
    for rank, real_env in real.items():
        forked_env = forked[rank]
        assert forked_env["MASTER_PORT"].isdigit() and real_env["MASTER_PORT"].isdigit()
        assert not [key for key in forked_env if key.startswith("TORCHELASTIC_")]
        kept = {key: value for key, value in real_env.items() if not key.startswith("TORCHELASTIC_")}
        assert {**kept, "MASTER_PORT": ""} == {**forked_env, "MASTER_PORT": ""}
        launcher_keys = [key for key in real_env if key.startswith(("ACCELERATE_", "FSDP_"))]
        launcher_keys += ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"]
        assert {key: forked_env.get(key) for key in launcher_keys} == {key: real_env[key] for key in launcher_keys}
    assert real["rank1"]["RANK"] == "1" and real["rank1"]["WORLD_SIZE"] == "2"
    if config == "fsdp2.yaml":  # the config file was read: FSDP2 in bf16, its own process count (8) overridden
        assert real["rank0"]["ACCELERATE_USE_FSDP"] == "true" and real["rank0"]["FSDP_VERSION"] == "2"
        assert real["rank0"]["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_the_one_process_fork_sets_what_accelerate_sets_for_one_process(tmp_path: Path):
    """The default forked run (forked_run._launcher_env) writes accelerate's one-process environment by hand;
    accelerate's own code (a forked launcher=\"forked\" run of one process) says what it is."""
    script = tmp_path / "dump_env.py"
    script.write_text(DUMP_ENV)
    env = {key: value for key, value in cli_env().items() if key != "OMP_NUM_THREADS"}  # accelerate's default: 1
    for precision in ("no", "bf16"):
        check(run_forked_ranks(launch_flags(None, 1, precision), [], tmp_path, env, timeout=60, script=str(script)))
        [accelerate_env] = dumped(tmp_path).values()
        ours = _launcher_env(precision)
        assert {key: accelerate_env.get(key) for key in ours} == ours
        assert {key for key in accelerate_env if key.startswith("ACCELERATE_")} == {
            key for key in ours if key.startswith("ACCELERATE_")
        }
        assert "RANK" not in accelerate_env and "MASTER_PORT" not in accelerate_env


def test_two_forked_processes_train(tmp_path: Path):
    args = [
        "recipe=summarization",
        "train.max_steps=4",
        "data.max_train_samples=32",
        "data.max_eval_samples=8",
        "generation.max_new_tokens=4",
        "train.eval_at_start=false",
        "train.report_to=[none]",
        "output_dir=run",
    ]
    env = {"HF_DATASETS_CACHE": str(tmp_path / "ds_cache")}
    config = ACCELERATE_CONFIGS / "cpu_2proc.yaml"
    start = time.monotonic()
    result = check(run_cli(args, tmp_path, launcher="forked", config_file=config, num_processes=2, env=env))
    print(f"2-process forked run: {time.monotonic() - start:.1f} s")
    assert "processes=2" in result.stdout
    assert read_json(tmp_path / "run" / "metrics.json")
    assert (tmp_path / "run" / "model").is_dir()


def test_a_failing_process_ends_the_run_with_its_error_line_and_status(tmp_path: Path):
    """Rank 1 meets the error too and waits for the launcher to stop it (teardown.let_the_first_process_explain):
    the forked launcher has to do what torchrun does, or the run would take the whole grace period."""
    config = ACCELERATE_CONFIGS / "cpu_2proc.yaml"
    start = time.monotonic()
    result = run_cli(["recipe=summarization", "train.lr=-1", "output_dir=out"], tmp_path, "forked", config)
    assert time.monotonic() - start < 30
    line = one_error_line(result, alone=False)
    assert line == "accel-tasks: error: train.lr=-1.0 is not valid; use a learning rate >= 0, e.g. train.lr=5e-5"
    assert not (tmp_path / "out").exists()


def test_the_first_failure_stops_the_others_and_outputs_come_rank_by_rank(tmp_path: Path):
    script = tmp_path / "one_fails.py"
    script.write_text(ONE_FAILS)
    flags = launch_flags(None, 2, "no")
    start = time.monotonic()
    result = run_forked_ranks(flags, [], tmp_path, cli_env(), timeout=60, script=str(script))
    assert time.monotonic() - start < 10, "rank 0 was stopped, not waited for"
    assert result.returncode == 3
    assert result.stdout == "rank 0 started\nrank 1 started\n"
    assert result.stderr.index("rank 0 err") < result.stderr.index("rank 1 err")


def test_a_forked_run_past_its_timeout_is_killed_and_raises(tmp_path: Path):
    script = tmp_path / "sleeps.py"
    script.write_text(SLEEPS)
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as raised:
        run_forked_ranks(launch_flags(None, 2, "no"), [], tmp_path, cli_env(), timeout=2, script=str(script))
    assert time.monotonic() - start < 10
    assert raised.value.stderr.count("asleep") == 2


def test_what_a_fork_cannot_reproduce_is_refused_not_run(tmp_path: Path):
    """Refused in the test itself, never as a failed run: a test that expects a failure must not pass because of it."""
    args = ["recipe=summarization", "output_dir=out"]
    with pytest.raises(ValueError, match="does not start DeepSpeed runs"):
        run_cli(args, tmp_path, launcher="forked", config_file=ACCELERATE_CONFIGS / "deepspeed_zero2.yaml")
    with pytest.raises(ValueError, match="PYTHONPATH"):  # read at start-up, which a fork skips
        run_cli(args, tmp_path, launcher="forked", num_processes=2, env={"PYTHONPATH": str(tmp_path)})
    assert not (tmp_path / "out").exists()
