"""train.grad_compression: 2 real gloo processes (accelerate_configs/cpu_2proc.yaml) train the bundled tiny Marian
with accelerate's DDP communication hooks, and the bad combinations fail in preflight with one line.

Every run trains the same 20 steps on the same 128 examples from the same initial weights (seeded), so the
runs differ only by what the all-reduce does:

    base            uncompressed, checkpoint at 10
    powersgd        PowerSGD rank 1 from step 3 (train.powersgd_start_iter=2), checkpoint at 10
    powersgd_resume resumed from powersgd's step_10: past the warm-up, so not bit-equal (what differs is tested)
    warmup          PowerSGD starting at step 15, checkpoint at 10
    warmup_resume   resumed from warmup's step_10: 5 warm-up steps were left, so bit-equal with warmup
    fp16            gradients all-reduced in float16

Tolerances, from the runs themselves: the uncompressed loss falls by about 1.2 nats over the 20 steps
(7.54 at step 5 to 6.34 at step 20); PowerSGD's last loss is 0.02 above it and its weights 1.7% away
(relative L2 norm over all weights); fp16's are 1.4e-5 away. The checks leave 5x room: a PowerSGD
last loss within 10% of the uncompressed drop, weights at least 0.2% away (a hook that did not run gives
exactly 0), fp16 within 1e-3 and not equal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import ACCELERATE_CONFIGS, check, one_error_line, read_json, run_cli

STEPS = 20
SMALL = [
    "recipe=summarization",
    "data.max_train_samples=128",
    "data.max_eval_samples=4",
    "train.batch_size=8",
    "eval.batch_size=8",
    f"train.max_steps={STEPS}",
    "train.log_every=5",
    "train.save_every=10",
    "train.eval_at_start=false",
    "generation.max_new_tokens=4",
]
RUNS = {
    "base": [],
    "powersgd": ["train.grad_compression=powersgd", "train.powersgd_start_iter=2"],
    "warmup": ["train.grad_compression=powersgd", "train.powersgd_start_iter=15"],
    "fp16": ["train.grad_compression=fp16"],
}
RESUMES = {"powersgd_resume": "powersgd", "warmup_resume": "warmup"}


class Runs:
    """Each run starts on first use and is shared by the tests that read it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {"HF_DATASETS_CACHE": str(root / "ds_cache"), "ACCEL_TASKS_NUM_THREADS": "1"}
        self.stdout: dict[str, str] = {}

    def get(self, name: str) -> Path:
        out = self.root / name
        if name not in self.stdout:
            if name in RESUMES:
                source = RESUMES[name]
                self.get(source)
                args = [*SMALL, *RUNS[source], f"train.resume_from={self.root / source / 'checkpoints' / 'step_10'}"]
            else:
                args = [*SMALL, *RUNS[name]]
            result = check(
                run_cli(
                    [*args, f"output_dir={out}"],
                    self.root,
                    config_file=ACCELERATE_CONFIGS / "cpu_2proc.yaml",
                    env=self.env,
                )
            )
            self.stdout[name] = result.stdout
        return out

    def losses(self, name: str) -> dict[int, float]:
        self.get(name)
        return {
            int(m.group(1)): float(m.group(2))
            for m in re.finditer(rf"step (\d+)/{STEPS} loss (\S+)", self.stdout[name])
        }

    def weights(self, name: str) -> dict:
        from safetensors.torch import load_file

        return load_file(self.get(name) / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("grad_compression"))


def relative_distance(a: dict, b: dict) -> float:
    """||a - b|| / ||a|| over all weights together."""
    assert a.keys() == b.keys()
    diff = sum(float(((a[k] - b[k]).double() ** 2).sum()) for k in a)
    norm = sum(float((a[k].double() ** 2).sum()) for k in a)
    return (diff / norm) ** 0.5


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


@pytest.mark.slow
def test_powersgd_loss_falls_like_the_uncompressed_run_and_the_hook_really_ran(runs: Runs):
    base, powersgd = runs.losses("base"), runs.losses("powersgd")
    assert sorted(base) == sorted(powersgd) == [5, 10, 15, 20]
    drop = base[5] - base[STEPS]
    assert drop > 0.8, f"the uncompressed run must learn for the comparison to mean anything: {base}"
    assert powersgd[5] - powersgd[STEPS] > 0.8 * drop, (base, powersgd)
    assert abs(powersgd[STEPS] - base[STEPS]) < 0.1 * drop, (base, powersgd)
    assert (
        abs(
            read_json(runs.get("powersgd") / "metrics.json")["train_loss"]
            - read_json(runs.get("base") / "metrics.json")["train_loss"]
        )
        < 0.1 * drop
    )
    assert "grad_compression=powersgd(rank=1,start=2)" in runs.stdout["powersgd"]
    assert "grad_compression=off" in runs.stdout["base"]
    # Rank-1 approximations of every weight matrix: not the uncompressed updates.
    assert relative_distance(runs.weights("base"), runs.weights("powersgd")) > 2e-3


@pytest.mark.slow
def test_fp16_compression_is_close_to_the_uncompressed_run_but_not_equal(runs: Runs):
    distance = relative_distance(runs.weights("base"), runs.weights("fp16"))
    assert 0 < distance < 1e-3, distance
    base, fp16 = runs.losses("base"), runs.losses("fp16")
    assert all(abs(base[s] - fp16[s]) < 1e-2 for s in base), (base, fp16)


@pytest.mark.slow
def test_powersgd_warm_up_steps_are_the_uncompressed_all_reduce(runs: Runs):
    """Up to step 14 the warmup run all-reduces in full: its step-10 checkpoint holds the base run's weights."""
    from safetensors.torch import load_file

    base = load_file(runs.get("base") / "checkpoints" / "step_10" / "model.safetensors")
    warmup = load_file(runs.get("warmup") / "checkpoints" / "step_10" / "model.safetensors")
    assert identical(base, warmup)
    assert not identical(runs.weights("base"), runs.weights("warmup")), "compression from step 15 on changes the result"


@pytest.mark.slow
def test_a_resume_inside_the_warm_up_is_exact(runs: Runs):
    state = json.loads((runs.get("warmup") / "checkpoints" / "step_10" / "powersgd_state.json").read_text())
    assert state == {"steps": 10, "start_iter": 15, "compressing": False}
    assert identical(runs.weights("warmup"), runs.weights("warmup_resume"))
    assert {s: v for s, v in runs.losses("warmup").items() if s > 10} == runs.losses("warmup_resume")


@pytest.mark.slow
def test_a_resume_past_the_warm_up_keeps_compressing_close_to_the_uninterrupted_run(runs: Runs):
    """What differs, as documented: 2 uncompressed steps after the resume, error feedback restarted empty."""
    state = json.loads((runs.get("powersgd") / "checkpoints" / "step_10" / "powersgd_state.json").read_text())
    assert state == {"steps": 10, "start_iter": 2, "compressing": True}
    uninterrupted, resumed = runs.losses("powersgd"), runs.losses("powersgd_resume")
    assert "resumed from" in runs.stdout["powersgd_resume"]
    assert sorted(resumed) == [15, 20]
    drop = runs.losses("base")[5] - runs.losses("base")[STEPS]
    assert all(abs(resumed[s] - uninterrupted[s]) < 0.05 * drop for s in resumed), (uninterrupted, resumed)
    weights = runs.weights("powersgd")
    assert (
        0
        < relative_distance(weights, runs.weights("powersgd_resume"))
        < relative_distance(weights, runs.weights("base"))
    )
    # The resumed run's own checkpoint counts every step of the run, not only its own 10.
    final = json.loads((runs.get("powersgd_resume") / "checkpoints" / "step_20" / "powersgd_state.json").read_text())
    assert final["steps"] == 20


def test_one_process_has_nothing_to_compress_and_says_so(tmp_path: Path):
    result = check(
        run_cli(
            [
                *SMALL[:5],
                "train.max_steps=2",
                "train.eval_at_start=false",
                "generation.max_new_tokens=2",
                "train.grad_compression=powersgd",
                "output_dir=out",
            ],
            tmp_path,
            env={"HF_DATASETS_CACHE": str(tmp_path / "ds_cache"), "ACCEL_TASKS_NUM_THREADS": "1"},
        )
    )
    assert (
        "accel-tasks: warning: train.grad_compression=powersgd: with 1 process there is no gradient all-reduce "
        "to compress; it has no effect" in result.stderr
    )
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()


DS_JSON = {
    "zero_optimization": {"stage": 0},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
}


@pytest.mark.parametrize(
    "args, ds_optimizer, message",
    [
        (
            ["train.grad_compression=powerSGD"],
            None,
            "train.grad_compression='powerSGD' is not a gradient compression; did you mean 'powersgd'? "
            "use one of powersgd, fp16, bf16 (or null: uncompressed)",
        ),
        (
            ["train.grad_compression=int8"],
            None,
            "train.grad_compression='int8' is not a gradient compression; use one of powersgd, fp16, bf16",
        ),
        (
            ["train.grad_compression=bf16"],
            None,
            "train.grad_compression=bf16 needs CUDA 11+ and NCCL 2.10+ (torch's bf16_compress_hook refuses gloo); "
            "on this machine (no CUDA GPU) use train.grad_compression=fp16 or powersgd",
        ),
        (["train.powersgd_rank=0"], None, "train.powersgd_rank=0 must be at least 1"),
        (
            ["train.grad_compression=powersgd", "train.powersgd_start_iter=1"],
            None,
            "train.powersgd_start_iter=1 must be at least 2: DDP rebuilds its gradient buckets after the first step",
        ),
        (
            ["train.grad_compression=fp16", "deepspeed=ds.json"],
            None,
            "train.grad_compression=fp16 is a DDP communication hook, and DeepSpeed does its own gradient "
            "communication: drop train.grad_compression, "
            "or drop DeepSpeed and launch with accelerate_configs/cpu_2proc.yaml",
        ),
        (
            ["deepspeed=ds.json"],
            "OneBitAdam",
            "DeepSpeed config 'ds.json' asks for optimizer 'OneBitAdam' (1-bit Adam), which compresses communication "
            "through DeepSpeed's NCCL/MPI/HCCL GPU backends and cannot run on this machine (no CUDA GPU); on CPU use "
            "train.grad_compression=powersgd|fp16|bf16 without DeepSpeed",
        ),
        (
            ["deepspeed=ds.json"],
            "ZeroOneAdam",
            "asks for optimizer 'ZeroOneAdam' (0/1 Adam), which compresses communication through",
        ),
        (
            ["deepspeed=ds.json"],
            "OneBitLamb",
            "asks for optimizer 'OneBitLamb' (1-bit LAMB), which compresses communication through",
        ),
    ],
    ids=[
        "typo",
        "unknown",
        "bf16-on-cpu",
        "rank-0",
        "start-iter-1",
        "with-deepspeed",
        "onebit-adam",
        "zero-one-adam",
        "onebit-lamb",
    ],
)
def test_bad_compression_settings_are_one_line_before_anything_loads(tmp_path: Path, args, ds_optimizer, message):
    from accel_tasks.engines.deepspeed_config import cuda_present

    if cuda_present():
        pytest.skip("the CPU-only refusals need a machine without a CUDA GPU")
    config = dict(DS_JSON, **({"optimizer": {"type": ds_optimizer, "params": {"lr": "auto"}}} if ds_optimizer else {}))
    (tmp_path / "ds.json").write_text(json.dumps(config))
    result = run_cli(["recipe=summarization", "output_dir=out", *args], tmp_path)
    assert message in one_error_line(result)
    assert "model:" not in result.stdout, "the model was loaded before the check"
    assert not (tmp_path / "out").exists()


def test_grad_compression_runs_import_no_torch_before_the_error(tmp_path: Path):
    """The checks read the config and the file system only (start-up time of error lines is tested elsewhere)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom accel_tasks.run import main\n"
        "code = main(['recipe=summarization', 'train.grad_compression=int8', 'output_dir=out'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'deepspeed') if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout.strip() == "[]", (done.stdout, done.stderr[-2000:])


def test_the_bench_counts_bytes_by_the_powersgd_hook_rules():
    """bench/grad_compression.py: a matrix as P + Q when that is 2x smaller, 1-D tensors and small matrices whole."""
    import sys

    from helpers import REPO

    sys.path.insert(0, str(REPO / "bench"))
    try:
        from grad_compression import payload_bytes
    finally:
        sys.path.pop(0)
    # (500, 128): P 500 + Q 128 = 628 elements; (128,) as 128 x 1 would be 129: whole;
    # (4, 4): 8 x 2 = 16 is not < 16: whole; (64, 8, 3, 3) is 64 x 72: 136.
    shapes = [(500, 128), (128,), (4, 4), (64, 8, 3, 3)]
    assert payload_bytes(shapes, rank=1) == {
        "none": 4 * 68752,
        "fp16": 2 * 68752,
        "powersgd": 4 * (628 + 128 + 16 + 136),
    }
    assert payload_bytes(shapes, rank=4)["powersgd"] == 4 * (4 * 628 + 128 + 16 + 4 * 136)
