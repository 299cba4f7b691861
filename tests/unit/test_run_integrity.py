"""Run integrity without a training run: manifests, checkpoint resolution and retention, the output_dir
lock and marker, eval-only on models without weights, and exports that keep every trained parameter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accel_tasks.errors import ConfigError
from accel_tasks.manifest import MANIFEST_FILE, manifest_problem, write_manifest
from accel_tasks.models.loading import check_trained_weights
from accel_tasks.preflight import make_plan, resolve_config
from accel_tasks.runs.checkpoint import (
    _apply_retention,
    _remove_checkpoint,
    clear_leftovers,
    complete_checkpoints,
    resolve_resume,
)
from accel_tasks.runs.output_dir import (
    LOCK_FILE,
    MARKER_FILE,
    REPLACED_DIR,
    acquire_lock,
    check_output_dir,
    discard_replaced,
    prepare_output_dir,
    release_lock,
    restore_replaced,
)


def fake_checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    path = root / f"step_{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w" * (10 + step))
    (path / "random_states_0.pkl").write_bytes(b"r" * 7)
    (path / "loop_state.json").write_text(json.dumps({"global_step": step, "epoch": 0, "batches_in_epoch": step}))
    if complete:
        write_manifest(path, kind="checkpoint", step=step)
    return path


# -- manifests ---------------------------------------------------------------------------------------


def test_manifest_proves_completeness(tmp_path: Path):
    ckpt = fake_checkpoint(tmp_path, 3)
    assert manifest_problem(ckpt) is None
    (ckpt / "random_states_0.pkl").unlink()
    assert manifest_problem(ckpt) == "random_states_0.pkl is missing"
    (ckpt / "random_states_0.pkl").write_bytes(b"r" * 3)
    assert manifest_problem(ckpt) == "random_states_0.pkl has 3 bytes, the manifest says 7"
    (ckpt / MANIFEST_FILE).unlink()
    assert "has no accel_tasks_manifest.json" in manifest_problem(ckpt)


def test_latest_skips_incomplete_checkpoints_with_a_warning(tmp_path: Path, capsys):
    root = tmp_path / "checkpoints"
    fake_checkpoint(root, 2)
    newest = fake_checkpoint(root, 4)
    (newest / "model.safetensors").unlink()
    fake_checkpoint(root, 6, complete=False)
    assert resolve_resume("latest", root) == root / "step_2"
    err = capsys.readouterr().err
    assert (
        "skipping incomplete checkpoint" in err
        and "step_6: it has no" in err
        and "step_4: model.safetensors is missing" in err
    )
    assert len(err.strip().splitlines()) == 2


def test_a_named_incomplete_checkpoint_is_one_clear_error(tmp_path: Path):
    ckpt = fake_checkpoint(tmp_path / "checkpoints", 4)
    (ckpt / "random_states_0.pkl").unlink()
    with pytest.raises(
        ConfigError, match=r"is an incomplete checkpoint: random_states_0.pkl is missing; resume from another one"
    ):
        resolve_resume(str(ckpt), tmp_path / "checkpoints")
    # latest with nothing complete to resume (a job requeued before its first checkpoint): from the start.
    assert resolve_resume("latest", tmp_path / "checkpoints") is None


def test_retention_keeps_the_newest_complete_and_never_leaves_a_lookalike(tmp_path: Path):
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        fake_checkpoint(root, step)
    _apply_retention(root, keep=2)
    assert [p.name for p in complete_checkpoints(root)] == ["step_4", "step_6"]
    # An interrupted deletion: renamed, not yet removed. It is not a checkpoint, and the next start clears it.
    (root / "step_4").rename(root / "step_4.deleting")
    assert [p.name for p in complete_checkpoints(root)] == ["step_6"]
    (root / "step_8.tmp").mkdir()
    clear_leftovers(root)
    assert sorted(p.name for p in root.iterdir()) == ["step_6"]
    _remove_checkpoint(root / "step_6")
    assert list(root.iterdir()) == []


# -- eval-only needs trained weights --------------------------------------------------------------------


def test_eval_without_a_model_is_refused_before_anything_loads(tmp_path: Path):
    cfg, recipe_cls = resolve_config(["recipe=summarization", "mode=eval", f"output_dir={tmp_path / 'out'}"], None)
    with pytest.raises(ConfigError, match="mode=eval scores a trained model, and the bundled one has random weights"):
        make_plan(cfg, recipe_cls)
    assert not (tmp_path / "out").exists()


def test_a_model_dir_without_weights_is_refused(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds a config but no weights .*would score random weights"):
        check_trained_weights(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"x")
    check_trained_weights(str(tmp_path))
    write_manifest(tmp_path, kind="export")
    (tmp_path / "model.safetensors").write_bytes(b"xy")
    with pytest.raises(ConfigError, match="is incomplete: model.safetensors has 2 bytes"):
        check_trained_weights(str(tmp_path))


# -- output_dir: lock, marker, retry, overwrite --------------------------------------------------------


def write_lock(output_dir: Path, pid: int, host: str = "") -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / LOCK_FILE).write_text(
        json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "earlier"})
    )


def test_a_live_lock_refuses_and_a_stale_one_is_taken_over(tmp_path: Path, capsys):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, live.pid)
        with pytest.raises(ConfigError, match=rf"is in use by a live run \(pid {live.pid} on .*\); wait for it to end"):
            acquire_lock(tmp_path)
    finally:
        live.kill()
        live.wait()
    acquire_lock(tmp_path)  # the same pid is dead now: stale
    assert "taking over the stale lock" in capsys.readouterr().err
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    release_lock(tmp_path, os.getpid())
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_held_on_another_host_is_never_taken(tmp_path: Path):
    write_lock(tmp_path, 1, host="elsewhere")
    with pytest.raises(ConfigError, match="on elsewhere.*if that run is gone, delete"):
        acquire_lock(tmp_path)


def test_overwrite_deletes_only_what_a_run_of_ours_wrote(tmp_path: Path):
    foreign = tmp_path / "notes"
    (foreign / "model").mkdir(parents=True)
    (foreign / "logs").mkdir()
    with pytest.raises(ConfigError, match="holds files no accel_tasks run wrote .*nothing is deleted"):
        check_output_dir(foreign, resuming=False, overwrite=True)
    assert (foreign / "model").is_dir() and (foreign / "logs").is_dir()

    ours = tmp_path / "run"
    prepare_output_dir(ours, overwrite=False, resume_step=None, config_yaml="a: 1\n")
    for name in ("model", "checkpoints", "logs"):
        (ours / name).mkdir()
    (ours / "mine.txt").write_text("kept")
    (ours / "config.resume-1.yaml").write_text("a: 1\n")
    check_output_dir(ours, resuming=False, overwrite=True)
    prepare_output_dir(ours, overwrite=True, resume_step=None, config_yaml="a: 2\n")
    # The replaced run waits aside (config.resume-* included) until the new one ends well, then goes.
    assert sorted(p.name for p in ours.iterdir()) == sorted([MARKER_FILE, "config.yaml", "mine.txt", REPLACED_DIR])
    assert sorted(p.name for p in (ours / REPLACED_DIR).iterdir()) == sorted(
        ["model", "checkpoints", "logs", "config.yaml", "config.resume-1.yaml"]
    )
    assert (ours / "config.yaml").read_text() == "a: 2\n"
    discard_replaced(ours)
    assert sorted(p.name for p in ours.iterdir()) == sorted([MARKER_FILE, "config.yaml", "mine.txt"])


def test_an_overwrite_that_fails_puts_the_replaced_run_back(tmp_path: Path):
    prepare_output_dir(tmp_path, overwrite=False, resume_step=None, config_yaml="a: 1\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_text("weights")
    prepare_output_dir(tmp_path, overwrite=True, resume_step=None, config_yaml="a: 2\n")
    (tmp_path / "logs").mkdir()  # what the failing run wrote
    kept = restore_replaced(tmp_path)
    assert (tmp_path / "model" / "model.safetensors").read_text() == "weights"
    assert (tmp_path / "config.yaml").read_text() == "a: 1\n"
    assert kept == tmp_path / "failed-run-1" and (kept / "logs").is_dir()
    assert (kept / "config.yaml").read_text() == "a: 2\n"
    assert not (tmp_path / REPLACED_DIR).exists()
    assert restore_replaced(tmp_path) is None  # nothing set aside any more


def test_a_retry_keeps_the_failed_attempts_logs(tmp_path: Path):
    prepare_output_dir(tmp_path, overwrite=False, resume_step=None, config_yaml="a: 1\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "events").write_text("x")
    prepare_output_dir(tmp_path, overwrite=False, resume_step=None, config_yaml="a: 2\n")
    assert (tmp_path / "failed-run-1" / "logs" / "events").read_text() == "x"
    assert (tmp_path / "config.yaml").read_text() == "a: 2\n" and not (tmp_path / "logs").exists()


def test_a_run_that_failed_before_its_first_checkpoint_can_be_retried(tmp_path: Path):
    prepare_output_dir(tmp_path, overwrite=False, resume_step=None, config_yaml="a: 1\n")
    (tmp_path / "logs").mkdir()
    check_output_dir(tmp_path, resuming=False, overwrite=False)  # only config and logs: a retry is fine
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match="already holds a previous run"):
        check_output_dir(tmp_path, resuming=False, overwrite=False)


def test_a_resume_writes_its_config_beside_the_old_one(tmp_path: Path):
    prepare_output_dir(tmp_path, overwrite=False, resume_step=None, config_yaml="train: first\n")
    written = prepare_output_dir(tmp_path, overwrite=False, resume_step=4, config_yaml="train: second\n")
    assert written.name == "config.resume-1.yaml" and "# resumed from step 4" in written.read_text()
    assert (tmp_path / "config.yaml").read_text() == "train: first\n"
    assert prepare_output_dir(tmp_path, False, 8, "x: 3\n").name == "config.resume-2.yaml"


# -- exports keep every trained parameter ------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["summarization", "translation", "extractive_qa", "speech_recognition"])
def test_every_trained_parameter_survives_export_and_reload(recipe: str, tmp_path: Path):
    """For each recipe's default model: perturb every trainable parameter (as training would), export,
    reload, and get the same outputs. Parameters that save_pretrained drops must not be trainable."""
    cfg, recipe_cls = resolve_config([f"recipe={recipe}"], None)
    model, processor = recipe_cls(cfg).load_model()
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.01)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    cfg, recipe_cls = resolve_config([f"recipe={recipe}", "mode=eval", f"model.name_or_path={tmp_path}"], None)
    reloaded, _ = recipe_cls(cfg).load_model()
    model.eval()
    reloaded.eval()
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    reloaded_params = dict(reloaded.named_parameters())
    for name, param in trained.items():
        assert torch.equal(param, reloaded_params[name]), f"{name} is trained but not restored by from_pretrained"
    assert {n for n, p in reloaded.named_parameters() if p.requires_grad} == set(trained)


def test_marian_position_table_is_frozen_on_load(tmp_path: Path):
    """transformers 5 reloads Marian's sinusoidal table with requires_grad=True; our loader freezes it."""
    cfg, recipe_cls = resolve_config(["recipe=summarization"], None)
    model, processor = recipe_cls(cfg).load_model()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    cfg, recipe_cls = resolve_config(["recipe=summarization", f"model.name_or_path={tmp_path}"], None)
    reloaded, _ = recipe_cls(cfg).load_model()
    positions = [n for n, _ in reloaded.named_parameters() if "embed_positions" in n]
    assert positions and not any(p.requires_grad for n, p in reloaded.named_parameters() if n in positions)


def test_settings_saved_with_a_model_come_back_and_the_user_still_wins(tmp_path: Path):
    from helpers import save_untrained_default

    model_dir = save_untrained_default(tmp_path / "model", "summarization")
    cfg, recipe_cls = resolve_config(["mode=eval", f"model.name_or_path={model_dir}"], None)
    # No recipe typed: the saved config names it; the bundled model's settings come back with the model.
    assert recipe_cls.name == "summarization" and cfg.recipe == "summarization"
    assert (cfg.task.max_source_length, cfg.generation.num_beams, cfg.generation.max_new_tokens) == (128, 1, 48)
    cfg, _ = resolve_config(
        ["recipe=summarization", "mode=eval", f"model.name_or_path={model_dir}", "generation.num_beams=3"], None
    )
    assert cfg.generation.num_beams == 3 and cfg.task.max_source_length == 128
    # Training from the same directory does not take its settings: the preset's real-model defaults apply.
    cfg, _ = resolve_config(["recipe=summarization", f"model.name_or_path={model_dir}"], None)
    assert cfg.task.max_source_length == 1024
