"""`accel-tasks average OUTPUT_DIR --last N` / `--steps A,B,C`: the mean of a run's checkpoints as OUTPUT_DIR/model_avg.

Short runs of the bundled summarization model (a tiny Marian built from its config) save a checkpoint every step;
the averaged weights are compared with the mean computed here from the checkpoint files themselves (safetensors,
DeepSpeed's zero_to_fp32 output, torch's own reader of a distributed checkpoint), and an eval-only run takes
model_avg with its path alone. The refusals run in process, on copies of the plain run's checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from helpers import ACCELERATE_CONFIGS, check, read_json, run_cli

TINY = [
    "recipe=summarization",
    "data.max_train_samples=16",
    "data.max_eval_samples=2",
    "train.eval_at_start=false",
    "task.max_source_length=64",
    "generation.num_beams=1",
    "generation.max_new_tokens=8",
    "train.batch_size=4",
    "eval.batch_size=4",
    "train.lr=1e-2",
    "train.warmup_steps=0",
    "train.max_steps=3",
    "train.save_every=1",
    "train.save_total_limit=3",
]
LORA = ["peft.method=lora", "peft.r=4"]
RUN_SETTINGS = "accel_tasks_config.yaml"


def checkpoint_weights(checkpoint: Path) -> dict:
    """The weights a checkpoint directory holds, read from its files without accel_tasks."""
    import torch

    if (checkpoint / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(checkpoint / "model.safetensors"))
    if (checkpoint / "fsdp_state").is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        whole = checkpoint.parent / f"{checkpoint.name}.pt"
        dcp_to_torch_save(checkpoint / "fsdp_state", whole)
        return torch.load(whole, weights_only=True)["model"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))


def by_hand(run: Path, steps: list[int]) -> dict:
    """fairseq's rule: floating-point tensors summed in fp32 over the checkpoints, divided by their number."""
    states = [checkpoint_weights(run / "checkpoints" / f"step_{step}") for step in steps]
    return {
        key: sum(state[key].float() for state in states) / len(states)
        for key, value in states[-1].items()
        if value.is_floating_point()
    }


def assert_mean(saved: dict, expected: dict, rename=lambda key: key) -> None:
    import torch

    assert saved, "no weights written"
    for key, value in saved.items():
        torch.testing.assert_close(value.float(), expected[rename(key)], rtol=0, atol=0, msg=key)


def adapter_key(key: str) -> str:
    """An exported adapter's key as the training checkpoint names it (with the adapter's name)."""
    for part in (".lora_A", ".lora_B"):
        key = key.replace(f"{part}.weight", f"{part}.default.weight")
    return key


def launcher_config(name: str, folder: Path, num_processes: int) -> Path:
    """A shipped accelerate config on ``num_processes`` CPU processes in fp32."""
    import yaml

    config = yaml.safe_load((ACCELERATE_CONFIGS / name).read_text())
    config.update(num_processes=num_processes, mixed_precision="no")
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def average(run: Path, *options: str):
    return check(run_cli(["average", str(run), *options], run.parent))


def eval_alone(model_dir: Path, name: str) -> dict:
    """An eval-only run of ``model_dir`` with its path alone; its metrics."""
    check(run_cli(["mode=eval", f"model.name_or_path={model_dir}", f"output_dir={name}"], model_dir.parent.parent))
    return read_json(model_dir.parent.parent / name / "metrics.json")


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("average")
    check(run_cli([*TINY, "output_dir=plain"], root))
    return root / "plain"


def test_the_last_checkpoints_average_to_their_mean_and_evaluate_with_the_path_alone(plain_run):
    from safetensors.torch import load_file

    result = average(plain_run, "--last", "3")
    out = plain_run / "model_avg"
    assert "averaging steps 1, 2, 3 of" in result.stdout and f"model.name_or_path={out}" in result.stdout
    assert_mean(load_file(str(out / "model.safetensors")), by_hand(plain_run, [1, 2, 3]))
    assert read_json(out / "accel_tasks_manifest.json")["averaged_steps"] == [1, 2, 3]
    assert "steps 1, 2, 3" in (out / "accel_tasks_config.yaml").read_text().splitlines()[0]
    assert {"config.json", "generation_config.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    assert eval_alone(out, "eval_avg")["eval_samples"] == 2
    # A second average replaces the first, which this command wrote, and says so.
    again = average(plain_run, "--steps", "1,3")
    assert f"replacing {out}" in again.stdout
    assert_mean(load_file(str(out / "model.safetensors")), by_hand(plain_run, [1, 3]))


def test_lora_adapters_average_and_export_as_the_run_does(tmp_path):
    from safetensors.torch import load_file

    check(run_cli([*TINY, *LORA, "peft.merge=true", "output_dir=lora"], tmp_path))
    run = tmp_path / "lora"
    average(run, "--last", "2")
    out = run / "model_avg"
    exported = {p.name for p in (run / "model").iterdir()}
    assert exported - {"README.md"} <= {p.name for p in out.iterdir()}
    assert (run / "model_avg_merged" / "accel_tasks_average.json").is_file()
    # The bundled base has random weights: its exact copy goes beside the adapter, as in the run's export.
    assert (out / "base" / "model.safetensors").is_file()
    assert_mean(load_file(str(out / "adapter_model.safetensors")), by_hand(run, [2, 3]), rename=adapter_key)
    assert eval_alone(out, "eval_avg")["eval_samples"] == 2


@pytest.mark.slow
def test_fsdp2_checkpoints_of_two_processes_average(tmp_path):
    """A 2-process FSDP2 LoRA run: the adapter read from each distributed checkpoint into the run's PeftModel."""
    from safetensors.torch import load_file

    fsdp2 = launcher_config("fsdp2.yaml", tmp_path, num_processes=2)
    check(run_cli([*TINY, *LORA, "output_dir=fsdp"], tmp_path, num_processes=2, config_file=fsdp2))
    run = tmp_path / "fsdp"
    assert (run / "checkpoints" / "step_3" / "fsdp_state").is_dir()
    result = average(run, "--steps", "2,3")
    assert "FSDP2 checkpoint written by 2 processes" in result.stdout
    assert_mean(load_file(str(run / "model_avg" / "adapter_model.safetensors")), by_hand(run, [2, 3]), adapter_key)


@pytest.mark.slow
def test_deepspeed_checkpoints_average(tmp_path):
    """A DeepSpeed ZeRO-2 LoRA run: each checkpoint's weights through zero_to_fp32 into the run's PeftModel."""
    from safetensors.torch import load_file

    zero2 = launcher_config("deepspeed_zero2.yaml", tmp_path, num_processes=1)
    check(run_cli([*TINY, *LORA, "train.max_steps=2", "output_dir=ds"], tmp_path, config_file=zero2))
    run = tmp_path / "ds"
    result = average(run, "--last", "2")
    assert "DeepSpeed ZeRO-1/2 checkpoint" in result.stdout
    assert_mean(load_file(str(run / "model_avg" / "adapter_model.safetensors")), by_hand(run, [1, 2]), adapter_key)


# -- refusals: one line, exit 2, nothing written ------------------------------------------------------------------


@pytest.fixture
def copy(plain_run, tmp_path) -> Path:
    """The plain run's checkpoints and settings, to break."""
    target = tmp_path / "run"
    shutil.copytree(plain_run, target, ignore=shutil.ignore_patterns("model_avg*", "logs"))
    return target


def refused(capsys, *args: str) -> str:
    from accel_tasks.run import main

    capsys.readouterr()
    assert main(["average", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def rewrite(checkpoint: Path, name: str, change) -> None:
    """Change one file of a checkpoint and make its manifest match again (a complete checkpoint of another run)."""
    from accel_tasks.manifest import write_manifest

    path = checkpoint / name
    path.write_text(change(path.read_text()))
    write_manifest(checkpoint, kind="checkpoint")


def test_what_cannot_be_averaged_is_one_line_before_any_weights_load(copy, capsys, tmp_path):
    run, checkpoints = str(copy), copy / "checkpoints"
    assert "pass one of --last N" in refused(capsys, run)
    assert "pass one of --last N" in refused(capsys, run, "--last", "2", "--steps", "1,2")
    assert "holds 3 complete checkpoints (steps 1, 2, 3); pass --last 3 or fewer" in refused(capsys, run, "--last", "4")
    assert "two or more" in refused(capsys, run, "--last", "1")
    assert "no complete checkpoint of step 5" in refused(capsys, run, "--steps", "1,5")
    assert "separated by commas" in refused(capsys, run, "--steps", "1;2")
    assert "names a step twice" in refused(capsys, run, "--steps", "2,2")
    (checkpoints / "step_2" / "optimizer.bin").unlink()
    assert "step_2: optimizer.bin is missing" in refused(capsys, run, "--steps", "1,2")
    (tmp_path / "empty").mkdir()
    assert "holds no complete checkpoint" in refused(capsys, str(tmp_path / "empty"), "--last", "2")
    assert "is not a directory" in refused(capsys, str(tmp_path / "nowhere"), "--last", "2")
    rewrite(checkpoints / "step_1", "config.json", lambda text: text.replace('"d_model": ', '"d_model": 1'))
    assert "step_1 and step_3 are checkpoints of different models (config.json d_model" in refused(
        capsys, run, "--steps", "1,3"
    )
    shutil.rmtree(checkpoints / "step_1")
    shutil.rmtree(checkpoints / "step_2")
    assert "holds only step_3" in refused(capsys, run, "--last", "2")
    assert not (copy / "model_avg").exists()


def test_recipes_targets_and_live_runs_are_checked_too(copy, capsys):
    run, checkpoints = str(copy), copy / "checkpoints"
    rewrite(
        checkpoints / "step_1", RUN_SETTINGS, lambda text: text.replace("recipe: summarization", "recipe: translation")
    )
    assert "recipe: 'translation' vs 'summarization'" in refused(capsys, run, "--steps", "1,2")
    mine = copy / "model_avg"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert "was not written by accel-tasks average" in refused(capsys, run, "--steps", "2,3")
    assert (mine / "notes.txt").read_text() == "mine"
    shutil.rmtree(mine)
    live = {"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}
    (copy / ".accel_tasks.lock").write_text(json.dumps(live))
    assert "in use by a live run" in refused(capsys, run, "--steps", "2,3")
    assert not mine.exists()
