"""Config files and Trainer-style arguments: every fault is one line (issue 27).

A config file (``--config``, a preset, the settings saved with a model: all read by ``load_yaml_layer``) that
repeats a key, is not UTF-8 text or is not valid YAML is a ConfigError naming the file, the line and the column;
Trainer's ``--learning_rate 3e-5`` / ``--do_eval`` / ``do_train=true`` get our key=value form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from accel_tasks.config import load_yaml_layer
from accel_tasks.config.aliases import trainer_flag_hint
from accel_tasks.errors import ConfigError
from accel_tasks.preflight import resolve_config

from helpers import one_error_line, run_cli


def config_error(config_file: Optional[Path], *overrides: str) -> str:
    """The message of the ConfigError that resolving the config raises; it must be one line."""
    with pytest.raises(ConfigError) as caught:
        resolve_config(["recipe=summarization", *overrides], str(config_file) if config_file else None)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def write(tmp_path: Path, content: bytes, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_a_key_written_twice_names_the_key_and_both_lines(tmp_path: Path):
    path = write(tmp_path, b"train:\n  lr: 0.001\n  epochs: 2\n  lr: 0.1\n")
    message = config_error(path)
    assert message.startswith(f"--config file '{path}' sets 'train.lr' twice (line 2 and line 4)"), message
    flow = write(tmp_path, b"seed: 1\ntrain: {epochs: 1, epochs: 2}\n", "flow.yaml")
    assert "sets 'train.epochs' twice (line 2 and line 2)" in config_error(flow)


def test_a_merge_key_may_still_be_overridden(tmp_path: Path):
    """``<<:`` merges a mapping whose keys the mapping itself may override: that is not a duplicate."""
    path = write(tmp_path, b"train:\n  <<: {lr: 0.001, epochs: 2}\n  lr: 0.002\n")
    cfg, _ = resolve_config(["recipe=summarization"], str(path))
    assert (cfg.train.lr, cfg.train.epochs) == (0.002, 2)


def test_a_file_that_is_not_utf8_names_the_byte_and_says_save_it_as_utf8(tmp_path: Path):
    path = write(tmp_path, "seed: 1\ntask:\n  source_prefix: 'résumé: '\n".encode("latin-1"))
    message = config_error(path)
    assert message.startswith(f"--config file '{path}' is not UTF-8 text: byte 0xe9 at line 3, column 20"), message
    assert "(byte offset 33)" in message and message.endswith("save it as UTF-8"), message


@pytest.mark.parametrize(
    "content, where",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "line 3, column 1"),
        ("seed: 1\n".encode("utf-16"), "line 1, column 4"),
    ],
    ids=["png", "utf16"],
)
def test_a_binary_file_is_named_as_such(tmp_path: Path, content: bytes, where: str):
    path = write(tmp_path, content)
    message = config_error(path)
    assert message.startswith(f"--config file '{path}' is binary, not YAML text (a NUL byte at {where};"), message
    assert "save it as UTF-8" in message


def test_a_character_yaml_refuses_names_its_place(tmp_path: Path):
    message = config_error(write(tmp_path, b"seed: 1\ntrain:\n  lr: \x07\n"))
    assert "holds character #x0007 at line 3, column 7, which YAML does not allow" in message, message
    assert "save it as UTF-8" in message


@pytest.mark.parametrize(
    "content, expected",
    [
        (
            b"train:\n\tlr: 0.1\n",
            "line 2, column 1: found character '\\t' that cannot start any token "
            "(YAML indents with spaces, never tabs)",
        ),
        (
            b"eval:\n  metrics: [rouge, sacrebleu\n  batch_size: 3\n",
            "line 3, column 13: expected ',' or ']', but got ':' (while parsing a flow sequence at line 2, column 12)",
        ),
        (b"seed: 1\n  train: 2\n", "line 2, column 8: mapping values are not allowed here"),
        (b"seed: 'unclosed\n", "line 2, column 1: found unexpected end of stream"),
        # safe_load's safety stays: no Python object is ever built from a config file
        (
            b"seed: !!python/object/apply:os.system ['true']\n",
            "line 1, column 7: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply",
        ),
    ],
    ids=["tab", "missing-bracket", "bad-indent", "unclosed-quote", "python-tag"],
)
def test_a_yaml_error_names_the_file_line_column_and_cause(tmp_path: Path, content: bytes, expected: str):
    path = write(tmp_path, content)
    message = config_error(path)
    assert message.startswith(f"--config file '{path}' is not valid YAML: {expected}"), message


def test_presets_and_saved_settings_are_read_the_same_way(tmp_path: Path):
    path = write(tmp_path, b"seed: 1\nseed: 2\n", "config.yaml")
    with pytest.raises(ConfigError, match=r"^settings saved with the model '.*config.yaml' sets 'seed' twice"):
        load_yaml_layer(path, "settings saved with the model")
    with pytest.raises(ConfigError, match=r"^recipe preset '.*' holds a value a config cannot take at data.name"):
        load_yaml_layer(write(tmp_path, b"data:\n  name: 2020-01-01\n", "p.yaml"), "recipe preset")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--learning_rate", "3e-5"], "Trainer-style flag --learning_rate 3e-5: here it is train.lr=3e-5"),
        (["--learning_rate=3e-5"], "Trainer-style flag --learning_rate=3e-5: here it is train.lr=3e-5"),
        (["--num_train_epochs", "3"], "Trainer-style flag --num_train_epochs 3: here it is train.epochs=3"),
        (["--output_dir", "out"], "Trainer-style flag --output_dir out: here it is output_dir=out"),
        (["--max_steps", "-1"], "Trainer-style flag --max_steps -1: here it is train.max_steps=-1"),
        (
            ["--overwrite_output_dir"],
            "Trainer-style flag --overwrite_output_dir: here it is train.overwrite_output_dir=true",
        ),
        (
            ["--source_prefix", "summarize: "],
            "Trainer-style flag --source_prefix 'summarize: ': here it is task.source_prefix='summarize: '",
        ),
        (
            ["--do_train"],
            "Trainer-style flag --do_train: mode=train is the default (a training run scores its validation split "
            "at the end): leave it out",
        ),
        (["--do_eval"], "Trainer-style flag --do_eval: here it is mode=eval (with model.name_or_path=MODEL)"),
        (
            ["--do_predict"],
            "Trainer-style flag --do_predict: here it is mode=predict (with model.name_or_path=MODEL "
            "data.test_file=FILE)",
        ),
        (["--do_train", "false", "--do_eval"], "Trainer-style flags --do_train false --do_eval: here it is mode=eval"),
        (["--fp16"], "Trainer-style flag --fp16: mixed precision is a launcher setting: accelerate launch"),
    ],
)
def test_trainer_style_flags_map_to_our_keys(args: list[str], expected: str):
    hint = trainer_flag_hint(["recipe=summarization", *args, "data.max_eval_samples=4"])
    assert hint is not None and hint.startswith(expected) and "\n" not in hint, hint


def test_several_trainer_flags_are_one_line_with_the_whole_translation():
    hint = trainer_flag_hint(
        ["--do_train", "--do_eval", "--learning_rate", "3e-5", "--output_dir", "out", "--evaluation_strategy", "steps"]
    )
    assert hint == (
        "Trainer-style flags --learning_rate 3e-5: here it is train.lr=3e-5; --output_dir out: here it is "
        "output_dir=out; --evaluation_strategy steps: no such option or setting (run with recipe=NAME --help to see "
        "every key); --do_train --do_eval: mode=train is the default (a training run scores its validation split at "
        "the end): leave it out; in all: train.lr=3e-5 output_dir=out"
    )


def test_an_option_that_is_no_trainer_flag_is_left_to_the_generic_message():
    assert trainer_flag_hint(["recipe=summarization", "--frobnicate"]) is None
    assert trainer_flag_hint(["recipe=summarization", "train.lr=1"]) is None


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["do_train=true"], "Trainer-style do_train=true: mode=train is the default"),
        (["do_eval=true"], "Trainer-style do_eval=true: here it is mode=eval (with model.name_or_path=MODEL)"),
        (["do_train=false", "do_eval=true"], "Trainer-style do_train=false do_eval=true: here it is mode=eval"),
        (["do_predict=true"], "Trainer-style do_predict=true: here it is mode=predict"),
    ],
)
def test_trainer_switches_as_keys_get_the_same_mapping(overrides: list[str], expected: str):
    message = config_error(None, *overrides)
    first = overrides[0].partition("=")[0]
    assert message.startswith(f"unknown config key {first!r} in command-line overrides; {expected}"), message


def test_trainer_switches_in_a_config_file_get_the_same_mapping(tmp_path: Path):
    message = config_error(write(tmp_path, b"do_eval: true\n"))
    assert message.endswith("; Trainer-style do_eval=true: here it is mode=eval (with model.name_or_path=MODEL)")


def test_a_bad_config_file_through_the_cli_is_one_line_and_exit_2(tmp_path: Path):
    """A fresh ``python -m accel_tasks.run``: an error line imports nothing heavy, so this takes about a second,
    where the fork server (``run_cli``'s default) would first import torch and transformers for this file alone."""
    write(tmp_path, b"train:\n\tlr: 0.1\n")
    result = run_cli(["recipe=summarization", "--config", "run.yaml", "--print-config"], tmp_path, launcher="python")
    line = one_error_line(result)
    assert line == (
        "accel-tasks: error: --config file 'run.yaml' is not valid YAML: line 2, column 1: found character '\\t' "
        "that cannot start any token (YAML indents with spaces, never tabs); fix that line"
    )
