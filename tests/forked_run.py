"""Run ``accel_tasks.run`` in a process forked from a warm server: a real, separate process that skips start-up.

Why: a run's own work in these tests takes a second or two, while a fresh interpreter spends 7-11 s importing
torch, transformers, datasets and accelerate (twice under ``accelerate launch``: the launcher, then the worker).
Each test process starts one multiprocessing *forkserver* that imports those once; every run is a fork of it. The
run is still a process of its own: its exit status, files, signals and ``os._exit`` are its own, and nothing it
changes (the Accelerator's shared state, torch's threads, the RNG, the environment, the working directory) leaks.

Why a server and not a fork of the test process itself: the test process has threads (pytest-xdist's, and the
thread teams of whatever torch work a test did in process); a fork copies a lock another thread held at that
moment, and a child that needs it waits forever (seen: a forked speech run hung once in three). The server only
imports, runs no test and starts no thread, so its forks start clean.

What it is not: the launcher or start-up. Tests of those (``accelerate launch`` itself, DeepSpeed, imports, the
process exit) name ``launcher="accelerate"`` or ``"python"`` in ``run_cli``.
The child reproduces what a single-process ``accelerate launch --mixed_precision X --dynamo_backend no`` puts in
the environment (read off accelerate 1.16), so the run takes the same code path.

Several processes (``run_cli(..., launcher="forked")``, :func:`run_forked_ranks`), any process count, with or
without a config file: a real ``accelerate launch`` costs 10-15 s of start-up per run on 2 cores (the launcher's
imports, then each worker's). Here one fork (the planner) runs accelerate's own launcher code in the run's
environment and working directory (its parser, ``_validate_launch_command``, ``prepare_multi_gpu_env``; FSDP and
plain multi-GPU/CPU data parallel go through it, as under ``accelerate launch``) to get the workers' environment,
adds what torchrun adds for each worker (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, ROLE_RANK, ...,
MASTER_ADDR=127.0.0.1, MASTER_PORT a free port; not TORCHELASTIC_*, see :func:`_torchrun_env`), then one fork
per worker. tests/e2e/test_forked_ranks.py compares a worker's whole environment with a real launch's. The parent
plays torchrun's agent: it waits for every worker, and once one fails it stops the others as torchrun does
(SIGTERM 0.1 s later, SIGKILL 30 s after that), so a worker waiting on a dead peer never hangs a test. Refused
(name ``"accelerate"``): DeepSpeed, several machines, TPU, mpirun.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

# Variables the run reads when it runs (not when a library is imported): safe to set in the forked child.
CALL_TIME_ENV = (
    "RECORD_DIR",
    "PREPROCESS_LOG",
    "PID_LOG",
    "ACCEL_TASKS_",
    "ACCELERATE_",
    "MLFLOW_TRACKING_URI",
    "HF_DATASETS_CACHE",
    "HF_HUB_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "PYTHONUNBUFFERED",
)
# Imported once by the server: what every run imports (the rest each run imports itself, in a second or less).
PRELOAD = [
    "torch",
    "transformers",
    "datasets",
    "evaluate",
    "accelerate",
    "accel_tasks.run",
    "accel_tasks.training.loop",
    "accel_tasks.recipes.summarization",
    "transformers.models.marian.modeling_marian",
]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def forkable(env_changes: dict) -> bool:
    """Whether every variable the test sets is read at call time, so a fork sees it as a new process would."""
    return all(key.startswith(CALL_TIME_ENV) for key in env_changes)


def _launcher_env(mixed_precision: str) -> dict:
    """What ``accelerate launch`` (one process, no config file) sets for its worker."""
    return {
        "ACCELERATE_USE_CPU": "False",
        "ACCELERATE_MIXED_PRECISION": mixed_precision,
        "ACCELERATE_DYNAMO_BACKEND": "NO",
        "ACCELERATE_DYNAMO_MODE": "default",
        "ACCELERATE_DYNAMO_USE_FULLGRAPH": "False",
        "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "False",
        "OMP_NUM_THREADS": "1",
    }


def _own_streams(out_path: str, err_path: str) -> None:
    """Point fds 1 and 2, ``sys.stdout``/``sys.stderr`` and the logging handlers made on the server's streams at
    this process's own files: what the forked process prints is its own, as a launched worker's is."""
    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    # The server's streams, as handlers made at import hold them, and what replaces each.
    server_out = {id(sys.stdout), id(sys.__stdout__)}
    server_streams = server_out | {id(sys.stderr), id(sys.__stderr__)}
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in server_streams:
                handler.setStream(sys.stdout if id(handler.stream) in server_out else sys.stderr)


def _enter(env: dict, cwd: str) -> None:
    """The launched process's environment and working directory, as a new process would start with them."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    if "HF_DATASETS_CACHE" in env:  # datasets reads it at import, which happened in the server
        import datasets.config

        datasets.config.HF_DATASETS_CACHE = Path(env["HF_DATASETS_CACHE"])


def _child(
    args: Sequence[str],
    cwd: str,
    env: dict,
    out_path: str,
    err_path: str,
    timeout: float,
    script: Optional[str] = None,
) -> None:
    """The forked process: its own streams and environment, then the CLI's own entry point (which never returns:
    it ends the process through teardown.exit_now with the run's status, as ``python -m accel_tasks.run`` does).
    ``script``: run that file as ``__main__`` instead (``accelerate launch SCRIPT ARGS``; the env test uses it)."""
    import faulthandler

    _own_streams(out_path, err_path)
    # A run that hangs shows where, in its stderr, before the test gives up on it.
    faulthandler.dump_traceback_later(max(timeout - 5, 1), exit=False, file=sys.stderr)
    _enter(env, cwd)
    if script is not None:
        import runpy

        sys.argv = [script, *args]
        runpy.run_path(script, run_name="__main__")
        return
    sys.argv = ["accel_tasks.run", *args]
    from accel_tasks.run import entry

    entry()


def run_forked(
    args: Sequence[str], cwd: Path, env: dict, mixed_precision: str = "no", timeout: int = 600
) -> subprocess.CompletedProcess:
    """``accelerate launch -m accel_tasks.run ARGS`` (one process) as a fork of the warm server; same result type."""
    child_env = {**env, **_launcher_env(mixed_precision)}
    with tempfile.TemporaryDirectory(prefix="forked_run_") as folder:
        out_path, err_path = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        for path in (out_path, err_path):
            Path(path).touch()
        process = _context.Process(target=_child, args=(list(args), str(cwd), child_env, out_path, err_path, timeout))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            stderr = Path(err_path).read_text(errors="replace")
            sys.stderr.write(f"forked run timed out; its stderr:\n{stderr[-6000:]}\n")
            raise subprocess.TimeoutExpired(["<fork>", *args], timeout, Path(out_path).read_text(), stderr)
        return subprocess.CompletedProcess(
            ["<fork>", "-m", "accel_tasks.run", *args],
            process.exitcode,
            Path(out_path).read_text(errors="replace"),
            Path(err_path).read_text(errors="replace"),
        )


# -- several processes: launcher="forked" -------------------------------------------------------------------------

# What torchrun's agent does when a worker fails: it notices within its monitor interval (0.1 s, accelerate's
# default), sends SIGTERM to the others, and kills (SIGKILL) those still alive 30 s later.
MONITOR_INTERVAL_S = 0.1
CLOSE_TIMEOUT_S = 30.0
ENTRY_ARGS = ["-m", "accel_tasks.run"]


class Refused(ValueError):
    """A launch the forked launcher does not reproduce: raised in the test, not reported as a failed run (a test
    that expects the run to fail must not pass because the launcher refused it)."""


def _torchrun_env(rank: int, world: int, port: int, nccl_async: str) -> dict[str, str]:
    """What torchrun (one machine, static rendezvous, no restarts) adds for worker ``rank``: the variables of
    torch's LocalElasticAgent._start_workers, read off torch 2.13. TORCHELASTIC_* are left out: nothing the run
    imports reads them (checked: accel_tasks, accelerate, torch.distributed's env:// rendezvous reads only
    TORCHELASTIC_USE_AGENT_STORE), and that one must stay unset here: "True" tells rank 0 that an agent hosts the
    TCPStore, and without an agent rank 0 has to host it."""
    return {
        "RANK": str(rank),
        "GROUP_RANK": "0",
        "ROLE_RANK": str(rank),
        "ROLE_NAME": "default",
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world),
        "WORLD_SIZE": str(world),
        "GROUP_WORLD_SIZE": "1",
        "ROLE_WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": nccl_async,
    }


def worker_envs(flags: Sequence[str]) -> list[dict[str, str]]:
    """Each worker's environment under ``accelerate launch FLAGS -m accel_tasks.run``, computed by accelerate's own
    code (its parser, ``_validate_launch_command``, then the launcher ``launch_command`` would pick), so it stays
    what the installed accelerate does. Call it where ``os.environ`` and the working directory are the run's: the
    planner process (:func:`_plan_child`). One machine only; DeepSpeed, TPU, SageMaker are refused."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import ComputeEnvironment, check_cuda_p2p_ib_support
    from accelerate.utils.launch import prepare_multi_gpu_env, prepare_simple_launcher_cmd_env
    from accelerate.utils.other import get_free_port

    args = launch_command_parser().parse_args([*flags, *ENTRY_ARGS])
    args, defaults, _ = _validate_launch_command(args)
    if args.num_machines > 1:
        raise Refused("launcher='forked' starts the processes of one machine; use launcher='accelerate'")
    if args.main_process_port is None:
        # accelerate's default 29500 would be shared by tests running side by side: a free port, as accelerate's
        # own "port in use" fallback (standalone mode) ends up with.
        args.main_process_port = 0
    if args.use_deepspeed and not args.cpu:
        raise Refused("launcher='forked' does not start DeepSpeed runs; use launcher='accelerate'")
    if (args.use_fsdp or args.use_megatron_lm or args.multi_gpu) and not args.cpu:  # multi_gpu_launcher
        env = prepare_multi_gpu_env(args)
        if not check_cuda_p2p_ib_support():
            env.setdefault("NCCL_P2P_DISABLE", "1")
            env.setdefault("NCCL_IB_DISABLE", "1")
        port = get_free_port() if getattr(args, "standalone", False) else int(args.main_process_port)
        world = int(args.nproc_per_node)
        nccl_async = env.get("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        return [{**env, **_torchrun_env(rank, world, port, nccl_async)} for rank in range(world)]
    if args.tpu or (defaults is not None and defaults.compute_environment == ComputeEnvironment.AMAZON_SAGEMAKER):
        raise Refused("launcher='forked' starts local CPU or GPU processes only; use launcher='accelerate'")
    if args.mpirun_hostfile is not None:
        raise Refused("launcher='forked' does not start mpirun; use launcher='accelerate'")
    _, env = prepare_simple_launcher_cmd_env(args)  # simple_launcher: one process, whatever --num_processes says
    return [env]


def _plan_child(flags: Sequence[str], cwd: str, env: dict, plan_path: str, out_path: str, err_path: str) -> None:
    """The launcher's half, forked like a worker so that what accelerate reads (os.environ, the working directory,
    the config file) and prints (its warnings) is the run's, never the test process's."""
    _own_streams(out_path, err_path)
    _enter(env, cwd)
    try:
        plan: object = worker_envs(flags)
    except Refused as refused:
        plan = {"refused": str(refused)}
    Path(plan_path).write_text(json.dumps(plan))


def _stream_paths(folder: Path, name: str) -> tuple[str, str]:
    """Empty stdout and stderr files for one forked process."""
    paths = (str(folder / f"{name}.stdout"), str(folder / f"{name}.stderr"))
    for path in paths:
        Path(path).touch()
    return paths


def _read(path: str) -> str:
    return Path(path).read_text(errors="replace")


def _plan(
    flags: Sequence[str], cwd: Path, env: dict, folder: Path, timeout: float
) -> tuple[Optional[list[dict]], str, str, Optional[int]]:
    """Run the planner: (every worker's environment, or None where the launcher failed; its stdout, stderr, exit
    status, None if it ran past ``timeout``)."""
    out_path, err_path = _stream_paths(folder, "launcher")
    plan_path = str(folder / "plan.json")
    process = _context.Process(target=_plan_child, args=(list(flags), str(cwd), env, plan_path, out_path, err_path))
    process.start()
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()
    envs = json.loads(Path(plan_path).read_text()) if process.exitcode == 0 else None
    if isinstance(envs, dict):
        raise Refused(envs["refused"])
    return envs, _read(out_path), _read(err_path), process.exitcode


def _stop(running: list, deadline: float) -> None:
    """What torchrun does to the other workers once one has failed: SIGTERM, then SIGKILL if still alive 30 s on
    (or at the run's deadline, whichever is first)."""
    time.sleep(MONITOR_INTERVAL_S)
    for process in running:
        if process.is_alive():
            process.terminate()
    close_by = min(time.monotonic() + CLOSE_TIMEOUT_S, deadline)
    for process in running:
        process.join(max(close_by - time.monotonic(), 0))
    for process in running:
        if process.is_alive():
            process.kill()
            process.join()


def _wait_ranks(processes: list, deadline: float) -> Optional[list[int]]:
    """Wait for every worker: the non-zero exit codes in the order they came (the first one is the run's), or None
    if the deadline passed first (then every worker is killed). Once one fails the others are stopped
    (:func:`_stop`), so a worker waiting on a dead peer never hangs the test."""
    from multiprocessing.connection import wait

    running, failures = list(processes), []
    while running:
        left = deadline - time.monotonic()
        if left <= 0:
            for process in running:
                process.kill()
                process.join()
            return None
        wait([process.sentinel for process in running], timeout=left)
        for process in [process for process in running if not process.is_alive()]:
            process.join()
            running.remove(process)
            if process.exitcode != 0:
                failures.append(process.exitcode)
        if failures and running:
            _stop(running, deadline)
            running = []
    return failures


def run_forked_ranks(
    flags: Sequence[str],
    args: Sequence[str],
    cwd: Path,
    env: dict,
    timeout: float = 600,
    script: Optional[str] = None,
) -> subprocess.CompletedProcess:
    """``accelerate launch FLAGS -m accel_tasks.run ARGS`` (or ``... SCRIPT ARGS``) as forks of the warm server: one
    planner fork computes every worker's environment with accelerate's code, then one fork per worker.

    The result: returncode the first non-zero exit of a worker (0 if none; the launcher's own if it failed);
    stdout rank 0's then the others', stderr the launcher's warnings then rank 0's then the others'. Past
    ``timeout`` every worker is killed and subprocess.TimeoutExpired raised, as for one forked process.
    """
    command = ["<fork>", "accelerate", "launch", *flags, *(ENTRY_ARGS if script is None else [script]), *args]
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="forked_ranks_") as name:
        folder = Path(name)
        envs, launcher_out, launcher_err, status = _plan(flags, cwd, env, folder, timeout)
        if status is None:
            raise subprocess.TimeoutExpired(command, timeout, launcher_out, launcher_err)
        if envs is None:
            return subprocess.CompletedProcess(command, status, launcher_out, launcher_err)
        streams = [_stream_paths(folder, f"rank{rank}") for rank in range(len(envs))]
        left = deadline - time.monotonic()
        processes = [
            _context.Process(target=_child, args=(list(args), str(cwd), rank_env, out, err, left, script))
            for rank_env, (out, err) in zip(envs, streams)
        ]
        for process in processes:
            process.start()
        failures = _wait_ranks(processes, deadline)
        stdout = launcher_out + "".join(_read(out) for out, _ in streams)
        stderr = launcher_err + "".join(_read(err) for _, err in streams)
    if failures is None:
        sys.stderr.write(f"forked run timed out; its stderr:\n{stderr[-6000:]}\n")
        raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
    return subprocess.CompletedProcess(command, failures[0] if failures else 0, stdout, stderr)
