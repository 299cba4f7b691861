"""One source of truth: a user's DeepSpeed JSON and the accelerate config against the run config (no runs)."""

from __future__ import annotations

import json

import pytest

from accel_tasks.config import NoOptions, schema
from accel_tasks.engines.accelerator import build_deepspeed_plugin
from accel_tasks.engines.deepspeed_config import check_deepspeed_config, fill_deepspeed_config
from accel_tasks.errors import ConfigError

from ds_fixtures import build_world
from helpers import run_cli

AUTO = {
    "zero_optimization": {"stage": 2},
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
}
LAUNCHER_ENV = (
    "ACCELERATE_USE_DEEPSPEED",
    "ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
    "ACCELERATE_GRADIENT_CLIPPING",
    "ACCELERATE_DEEPSPEED_CONFIG_FILE",
    "ACCELERATE_CONFIG_DS_FIELDS",
    "WORLD_SIZE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")


def run_config(tmp_path=None, ds: dict | None = None, **train):
    cfg = schema(NoOptions)
    cfg.train.batch_size, cfg.train.grad_accum, cfg.train.max_grad_norm = 2, 4, 0.5
    for key, value in train.items():
        setattr(cfg.train, key, value)
    if ds is not None:
        path = tmp_path / "ds.json"
        path.write_text(json.dumps(ds))
        cfg.deepspeed = str(path)
    return cfg


def test_auto_and_missing_values_are_filled_from_the_run_config(tmp_path):
    filled = check_deepspeed_config(run_config(tmp_path, AUTO))
    assert filled["gradient_accumulation_steps"] == 4
    assert filled["gradient_clipping"] == 0.5
    assert filled["train_micro_batch_size_per_gpu"] == 2
    assert filled["train_batch_size"] == 2 * 4 * 2
    # Missing keys mean "auto" too (plain accelerate would default a missing accumulation to 1).
    missing = check_deepspeed_config(run_config(tmp_path, {"zero_optimization": {"stage": 3}}))
    assert missing["gradient_accumulation_steps"] == 4 and missing["zero_optimization"] == {"stage": 3}


@pytest.mark.parametrize(
    "key, value, run_key",
    [
        ("gradient_accumulation_steps", 2, "train.grad_accum=4"),
        ("gradient_clipping", 1.0, "train.max_grad_norm=0.5"),
        ("train_micro_batch_size_per_gpu", 8, "train.batch_size=2"),
        ("train_batch_size", 64, "= 16"),
    ],
)
def test_a_contradicting_value_is_an_error_naming_both(tmp_path, key, value, run_key):
    with pytest.raises(ConfigError) as info:
        check_deepspeed_config(run_config(tmp_path, {**AUTO, key: value}))
    message = str(info.value)
    assert f"{key}={value}" in message and run_key in message and '"auto"' in message


def test_equal_explicit_values_are_accepted(tmp_path):
    ds = {**AUTO, "gradient_accumulation_steps": 4, "gradient_clipping": 0.5, "train_batch_size": 16}
    assert check_deepspeed_config(run_config(tmp_path, ds))["train_batch_size"] == 16


def test_an_adamw_section_that_agrees_is_the_loops_own_optimizer(tmp_path):
    ds = {
        **AUTO,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": [0.9, 0.999], "eps": "auto", "weight_decay": "auto"},
        },
    }
    assert "optimizer" not in check_deepspeed_config(run_config(tmp_path, ds))
    ds["optimizer"]["params"]["lr"] = 1e-3
    with pytest.raises(ConfigError, match=r"optimizer.params.lr=0.001 but the run config has train.lr=5e-05"):
        check_deepspeed_config(run_config(tmp_path, ds))
    ds["optimizer"] = {"type": "Lamb", "params": {}}
    with pytest.raises(ConfigError, match="remove the optimizer section"):
        check_deepspeed_config(run_config(tmp_path, ds))


def test_a_scheduler_section_must_be_the_run_configs_schedule(tmp_path):
    ds = {
        **AUTO,
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {
                "warmup_min_lr": 0,
                "warmup_max_lr": "auto",
                "warmup_num_steps": "auto",
                "total_num_steps": "auto",
            },
        },
    }
    assert "scheduler" not in check_deepspeed_config(run_config(tmp_path, ds))  # linear is the default
    with pytest.raises(ConfigError, match="train.lr_scheduler=cosine"):
        check_deepspeed_config(run_config(tmp_path, ds, lr_scheduler="cosine"))
    ds["scheduler"]["params"]["warmup_num_steps"] = 100
    with pytest.raises(ConfigError, match="warmup_num_steps=100"):
        check_deepspeed_config(run_config(tmp_path, ds))


def test_bad_files_are_clear_errors(tmp_path):
    cfg = run_config()
    cfg.deepspeed = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="does not exist"):
        check_deepspeed_config(cfg)
    (tmp_path / "broken.json").write_text("{")
    cfg.deepspeed = str(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        check_deepspeed_config(cfg)
    with pytest.raises(ConfigError, match="no zero_optimization"):
        check_deepspeed_config(run_config(tmp_path, {"train_batch_size": "auto"}))


def test_the_accelerate_config_cannot_contradict_the_run_config(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "1")
    with pytest.raises(
        ConfigError, match=r"deepspeed_config.gradient_accumulation_steps=1 but the run config has train.grad_accum=4"
    ):
        check_deepspeed_config(run_config())
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    monkeypatch.setenv("ACCELERATE_GRADIENT_CLIPPING", "0.5")
    assert check_deepspeed_config(run_config()) is None
    # deepspeed= together with DeepSpeed options in the accelerate config: accelerate would refuse later.
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", "zero_stage,offload_optimizer_device")
    with pytest.raises(ConfigError, match="non-DeepSpeed accelerate config"):
        check_deepspeed_config(run_config(tmp_path, AUTO))
    monkeypatch.delenv("ACCELERATE_CONFIG_DS_FIELDS")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(tmp_path / "other.json"))
    with pytest.raises(ConfigError, match="keep one of them"):
        check_deepspeed_config(run_config(tmp_path, AUTO))


def test_plugin_gets_the_run_config_and_cpu_offload_keeps_torch_adamw(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    ds = {**AUTO, "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}
    del ds["gradient_accumulation_steps"]
    plugin = build_deepspeed_plugin(run_config(tmp_path, ds), on_cpu=True)
    config = plugin.deepspeed_config
    assert config["gradient_accumulation_steps"] == 4 and plugin.gradient_accumulation_steps == 4
    assert config["train_micro_batch_size_per_gpu"] == 2 and config["train_batch_size"] == 16
    assert config["zero_force_ds_cpu_optimizer"] is False
    # On a GPU machine accelerate swaps in DeepSpeedCPUAdam with default betas: a changed beta would be lost.
    with pytest.raises(ConfigError, match="adam_beta2=0.98 would be ignored"):
        build_deepspeed_plugin(run_config(tmp_path, ds, adam_beta2=0.98), on_cpu=False)


def test_fill_is_a_copy():
    source = dict(AUTO)
    fill_deepspeed_config(source, run_config())
    assert source == AUTO


def test_contradicting_deepspeed_json_stops_the_cli_before_any_work(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({**AUTO, "gradient_accumulation_steps": 2}))
    world = build_world(tmp_path / "world")
    result = run_cli(
        [
            f"recipe={world['recipe']}:ForcedLengthSummarization",
            f"model.name_or_path={world['model']}",
            f"data.train_file={world['train']}",
            f"data.validation_file={world['validation']}",
            "train.grad_accum=4",
            f"deepspeed={bad}",
            f"output_dir={tmp_path / 'out'}",
        ],
        tmp_path,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("accel-tasks: error: DeepSpeed config")
    assert "gradient_accumulation_steps=2" in last and "train.grad_accum=4" in last
    assert not (tmp_path / "out").exists()
