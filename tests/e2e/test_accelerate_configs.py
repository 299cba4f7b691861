"""Every launcher config in accelerate_configs/ is valid for `accelerate launch` and says what it is for."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from helpers import ACCELERATE_CONFIGS, cli_env

CONFIGS = sorted(ACCELERATE_CONFIGS.glob("*.yaml"))
REQUIRED = {
    "cpu.yaml",
    "cpu_2proc.yaml",
    "single_gpu.yaml",
    "multi_gpu.yaml",
    "deepspeed_zero1.yaml",
    "deepspeed_zero2.yaml",
    "deepspeed_zero3.yaml",
    "deepspeed_zero3_offload.yaml",
    "fsdp2.yaml",
    "fsdp2_multinode.yaml",
}


def test_the_expected_configs_exist():
    names = {path.name for path in CONFIGS}
    assert REQUIRED <= names, REQUIRED - names
    multinode = [p for p in CONFIGS if yaml.safe_load(p.read_text()).get("num_machines", 1) > 1]
    assert multinode, "a commented multi-node example"
    config = yaml.safe_load(multinode[0].read_text())
    assert (
        config["main_process_ip"]
        and config["main_process_port"]
        and config["num_processes"] % config["num_machines"] == 0
    )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid_for_accelerate_launch(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    config = load_config_from_file(str(path))  # rejects unknown keys and bad enum values
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "train.py"]))
    assert args.num_processes == config.num_processes >= 1
    assert args.num_machines == config.num_machines
    raw = yaml.safe_load(path.read_text())
    if raw["distributed_type"] == "FSDP":
        # accel_tasks runs FSDP2 only (engines/fsdp.py); FSDP1 configs are refused in preflight.
        assert args.use_fsdp and raw["fsdp_config"]["fsdp_version"] == 2
    if raw["distributed_type"] == "DEEPSPEED":
        assert args.use_deepspeed and args.zero_stage == raw["deepspeed_config"]["zero_stage"]
        # One source of truth: batch size, accumulation and clipping are run-config settings.
        assert not {"gradient_accumulation_steps", "gradient_clipping", "deepspeed_config_file"} & set(
            raw["deepspeed_config"]
        )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_starts_with_its_purpose_and_launch_line(path):
    lines = path.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 2 and len(header[0]) > 20, "first line: a comment saying what the config is for"
    launch = [line for line in header if "accelerate launch" in line]
    assert launch and f"--config_file accelerate_configs/{path.name}" in launch[0]
    assert "-m accel_tasks.run" in launch[0]


def test_offload_and_stage_settings():
    def ds(name: str) -> dict:
        return yaml.safe_load((ACCELERATE_CONFIGS / name).read_text())["deepspeed_config"]

    assert [ds(f"deepspeed_zero{s}.yaml")["zero_stage"] for s in (1, 2, 3)] == [1, 2, 3]
    offload = ds("deepspeed_zero3_offload.yaml")
    assert (
        offload["zero_stage"] == 3
        and offload["offload_optimizer_device"] == "cpu"
        and offload["offload_param_device"] == "cpu"
    )
    assert ds("deepspeed_zero3.yaml")["zero3_init_flag"] is True


SHOW_WORLD = """
import os
from accelerate import Accelerator
accelerator = Accelerator(cpu=True)
print(f"rank={accelerator.process_index} world={accelerator.num_processes} \
type={accelerator.distributed_type.value}", flush=True)
"""


def test_cpu_2proc_really_starts_two_processes(tmp_path):
    script = tmp_path / "show_world.py"
    script.write_text(SHOW_WORLD)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ACCELERATE_CONFIGS / "cpu_2proc.yaml"),
            str(script),
        ],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Both workers share the launcher's stdout, so their lines can interleave: find the records, not lines.
    lines = sorted(re.findall(r"rank=\d+ world=\d+ type=[A-Z_]+", result.stdout))
    assert lines == ["rank=0 world=2 type=MULTI_CPU", "rank=1 world=2 type=MULTI_CPU"], result.stdout
