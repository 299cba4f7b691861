"""Config schema, layered merge and validation (no model or data involved)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from accel_tasks.config import build_config, load_yaml_layer, parse_overrides
from accel_tasks.errors import ConfigError
from accel_tasks.preflight import resolve_config
from accel_tasks.recipes.summarization import SummarizationOptions

from helpers import REPO


def build(*overrides: str):
    return build_config(SummarizationOptions, [("overrides", parse_overrides(overrides, SummarizationOptions))])


def test_dotted_keys_numbers_lists_and_booleans_parse_as_users_expect():
    cfg = build(
        "train.lr=3e-4",
        "generation.num_beams=4",
        "eval.metrics=[rouge,sacrebleu]",
        "train.overwrite_output_dir=true",
        "task.source_prefix=summarize: ",
    )
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.generation.num_beams == 4
    assert list(cfg.eval.metrics) == ["rouge", "sacrebleu"]
    assert cfg.train.overwrite_output_dir is True
    assert cfg.task.source_prefix == "summarize: "


def test_a_single_metric_string_means_a_list_of_one():
    assert list(build("eval.metrics=rouge").eval.metrics) == ["rouge"]


def test_unknown_key_suggests_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lrr'.*did you mean 'train\.lr'"):
        build("train.lrr=1")
    with pytest.raises(ConfigError, match=r"did you mean 'task\.max_source_length'"):
        build("task.max_source_lenght=5")


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"wrong type for train\.batch_size"):
        build("train.batch_size=big")


def test_malformed_override_is_an_error():
    for bad in ("train.lr", "=3", "train.lr=[1,"):
        with pytest.raises(ConfigError, match="malformed override"):
            parse_overrides([bad])


def test_values_are_checked():
    with pytest.raises(ConfigError, match="mode='serve' is not one of train, eval, predict"):
        build("mode=serve")
    with pytest.raises(ConfigError, match="train.grad_accum must be at least 1"):
        build("train.grad_accum=0")
    with pytest.raises(ConfigError, match="warmup_ratio"):
        build("train.warmup_ratio=1.5")


def test_merge_order_defaults_preset_file_overrides(tmp_path: Path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        "recipe: summarization\ntrain:\n  lr: 0.1\n  batch_size: 3\nmodel:\n  name_or_path: some/model\n"
    )
    cfg, recipe_cls = resolve_config(["train.lr=0.2"], str(config_file))
    assert recipe_cls.name == "summarization"
    assert cfg.train.lr == pytest.approx(0.2)  # override beats file
    assert cfg.train.batch_size == 3  # file beats preset (8)
    assert cfg.generation.num_beams == 4  # preset beats default (None)
    assert cfg.train.adam_beta1 == pytest.approx(0.9)  # schema default


def test_bundled_model_settings_apply_only_without_a_named_model(tmp_path: Path):
    from accel_tasks.recipes.summarization import SummarizationRecipe

    preset = SummarizationRecipe.preset_path()
    assert preset == REPO / "recipes" / "summarization.yaml", "the preset lives in the top-level recipes/ folder"
    smoke_lr = OmegaConf.load(preset).bundled_model.train.lr
    assert smoke_lr != pytest.approx(5e-5), "the bundled_model section sets its own learning rate"
    cfg, _ = resolve_config(["recipe=summarization"], None)
    assert cfg.train.lr == pytest.approx(smoke_lr)
    cfg, _ = resolve_config(["recipe=summarization", "model.name_or_path=t5-small"], None)
    assert cfg.train.lr == pytest.approx(5e-5)
    cfg, _ = resolve_config(["recipe=summarization", "train.lr=0.5"], None)
    assert cfg.train.lr == pytest.approx(0.5)


def test_bundled_section_must_be_a_mapping(tmp_path: Path, monkeypatch):
    from accel_tasks.recipes.summarization import SummarizationRecipe

    preset = tmp_path / "summarization.yaml"
    preset.write_text("train:\n  lr: 0.1\nbundled_model: 3\n")
    monkeypatch.setattr(SummarizationRecipe, "preset_file", preset)
    with pytest.raises(ConfigError, match="bundled_model must be a mapping"):
        resolve_config(["recipe=summarization"], None)


def test_eval_split_is_checked():
    with pytest.raises(ConfigError, match="eval.split='dev' is not one of train, validation, test"):
        resolve_config(["recipe=summarization", "eval.split=dev"], None)
    with pytest.raises(ConfigError, match="eval.split=train in a training run"):
        resolve_config(["recipe=summarization", "eval.split=train"], None)
    cfg, _ = resolve_config(["recipe=summarization", "mode=eval", "eval.split=test"], None)
    assert cfg.eval.split == "test"


def test_yaml_layer_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml_layer(tmp_path / "missing.yaml", "--config file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml_layer(bad, "--config file")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml_layer(listing, "--config file")


def test_unknown_key_in_config_file_names_the_file(tmp_path: Path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("recipe: summarization\ntrian:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'trian' in --config .*run.yaml; did you mean 'train'"):
        resolve_config([], str(config_file))


def test_epochs_typed_by_the_user_win_over_the_presets_max_steps(capsys):
    """`train.epochs=1` on the bundled summarization preset (max_steps 1200): the epochs, said in one notice."""
    from accel_tasks.preflight import resolve_config

    cfg, _ = resolve_config(["recipe=summarization", "train.epochs=1"], None)
    assert (cfg.train.epochs, cfg.train.max_steps) == (1, -1)
    assert "train.epochs=1 as given: the preset's train.max_steps=1200 is dropped" in capsys.readouterr().out
    cfg, _ = resolve_config(["recipe=summarization", "train.epochs=1", "train.max_steps=5"], None)
    assert cfg.train.max_steps == 5  # both typed: max_steps caps, as in Trainer
    cfg, _ = resolve_config(["recipe=summarization"], None)
    assert cfg.train.max_steps == 1200
