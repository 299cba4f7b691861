"""The error contract, case by case: a bad input ends with exit 2 and one line naming the problem and the
fix, no traceback, nothing written; checks that need no model run before it loads. The cases run as forks of the
warm test server (tests/forked_run.py: the CLI's code path and environment without seconds of imports each); the
launcher's own part has tests of its own below. Under ``accelerate
launch`` with 2 processes the line is printed once. ``ACCEL_TASKS_DEBUG=1`` shows the traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import ACCELERATE_CONFIGS, REPO, check, cli_env, one_error_line, read_json, run_cli

SAMPLE = REPO / "accel_tasks" / "samples" / "summarization"


# Settings that fail before any model or data is loaded (each run takes a second or two).
BEFORE_LOADING = [
    (["train.lr=-1"], "train.lr=-1.0 is not valid; use a learning rate >= 0"),
    (
        ["train.lr_scheduler=cosinee"],
        "train.lr_scheduler='cosinee' is not a transformers schedule; did you mean 'cosine'?",
    ),
    (["train.max_steps=0"], "train.max_steps=0 would not train; use a positive number of optimizer steps, or -1"),
    (["generation.num_beams=0"], "generation.num_beams=0 must be at least 1 (1 is greedy decoding)"),
    (["generation.max_new_tokens=0"], "generation.max_new_tokens=0 must be at least 1"),
    (["task.max_source_length=0"], "task.max_source_length=0 must be at least 1 token"),
    (["train.adam_beta1=1.5"], "train.adam_beta1=1.5 is not valid; use a value in [0, 1)"),
    (["eval.metrics=[squad]"], "eval.metrics: squad cannot score summarization predictions"),
    # Found by trying: each of these hung, or ended in a library traceback, before.
    (["data.max_train_samples=0"], "data.max_train_samples=0 must be at least 1 (or null: all examples)"),
    (["data.preprocessing_num_workers=0"], "data.preprocessing_num_workers=0 must be at least 1 (or null: in process)"),
    (["data.dataloader_num_workers=-1"], "data.dataloader_num_workers=-1 must be 0 (load in the main process) or more"),
    (["seed=-1"], "seed=-1 must be in [0, 2**32)"),
    (["output_dir=/proc/no_such_place/out"], "output_dir '/proc/no_such_place/out' cannot be created"),
    # Trainer names and typos of them get our key (the whole table: test_trainer_names_get_our_key).
    (["train.learning_rat=1e-4"], "did you mean 'train.lr'? (Trainer's learning_rate is train.lr here)"),
    (["train.fp16=true"], "mixed precision is a launcher setting: accelerate launch --mixed_precision fp16"),
]

TRAINER_NAMES = [
    (["learning_rate=1e-4"], "did you mean 'train.lr'?"),
    (["per_device_train_batch_size=8"], "did you mean 'train.batch_size'?"),
    (["per_device_eval_batch_size=8"], "did you mean 'eval.batch_size'?"),
    (["gradient_accumulation_steps=4"], "did you mean 'train.grad_accum'?"),
    (["num_train_epochs=2"], "did you mean 'train.epochs'?"),
    (["logging_steps=10"], "did you mean 'train.log_every'?"),
    (["eval_steps=100"], "did you mean 'train.eval_every'?"),
    (["save_steps=100"], "did you mean 'train.save_every'?"),
    (["warmup_ratio=0.1"], "did you mean 'train.warmup_ratio'?"),
    (["lr_scheduler_type=cosine"], "did you mean 'train.lr_scheduler'?"),
    (["bf16=true"], "mixed precision is a launcher setting: accelerate launch --mixed_precision bf16"),
]


@pytest.mark.parametrize("args, message", TRAINER_NAMES, ids=[a[0] for a, _ in TRAINER_NAMES])
def test_trainer_names_get_our_key(capsys, args, message):
    """The CLI's own entry point in this process: the same code path as above, without a process start each."""
    from accel_tasks.run import main

    assert main(["recipe=summarization", *args, "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("accel-tasks: error: unknown config key") and message in err[0], err


@pytest.mark.parametrize("args, message", BEFORE_LOADING, ids=[a[0] for a, _ in BEFORE_LOADING])
def test_settings_that_cannot_work_fail_before_anything_loads(tmp_path: Path, args, message):
    result = run_cli(["recipe=summarization", "output_dir=out", *args], tmp_path)
    assert message in one_error_line(result)
    assert "model:" not in result.stdout, "the model was loaded before the check"
    assert not (tmp_path / "out").exists()


def test_a_metric_that_cannot_score_qa_spans_fails_before_training(tmp_path: Path):
    line = one_error_line(run_cli(["recipe=extractive_qa", "eval.metrics=[rouge]", "output_dir=out"], tmp_path))
    assert "eval.metrics: rouge cannot score extractive_qa predictions" in line and "eval.metrics=[squad]" in line


@pytest.mark.parametrize(
    "source, message",
    [
        ("from accel_tasks.recipe import Recipe\nclass Mine(Recipe:\n    pass\n", "mine.py:2: SyntaxError: "),
        ("import no_such_dependency_xyz\n", "mine.py:1: ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
        ("raise RuntimeError('broken on import')\n", "mine.py:1: RuntimeError: broken on import"),
    ],
)
def test_a_plugin_that_fails_to_import_is_file_line_message(tmp_path: Path, source, message):
    (tmp_path / "mine.py").write_text(source)
    assert message in one_error_line(run_cli(["recipe=mine.py:Mine", "output_dir=out"], tmp_path))


# -- data and hub: found before training starts -------------------------------------------------------


def rows(n: int) -> list[str]:
    return [json.dumps({"document": f"document number {i}.", "summary": f"summary {i}."}) for i in range(n)]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    good = rows(30)
    bad = list(good)
    bad[17] = '{"document": "x", "summary": }'
    (tmp_path / "bad.jsonl").write_text("\n".join(bad) + "\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "ok.jsonl").write_text("\n".join(good[:6]) + "\n")
    (tmp_path / "under_data.json").write_text(json.dumps({"version": "1", "data": [json.loads(r) for r in good[:6]]}))
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["data.train_file=bad.jsonl"],
            "data.train_file 'bad.jsonl' line 18 is not valid JSON (Expecting value at column 30); "
            "fix or remove that line",
        ),
        (
            ["data.train_file=empty.jsonl"],
            "data.train_file 'empty.jsonl' is empty (no line holds any text); point it at a file with examples",
        ),
        (["data.train_file=ok.jsonl", "data.field=rows"], "has no key 'rows' for data.field"),
        (
            ["data.name=EdinburghNLP/xsum", "data.train_file=null", "data.validation_file=null"],
            "data.name='EdinburghNLP/xsum' cannot be loaded",
        ),
        (
            ["data.train_file=ok.jsonl", "model.name_or_path=google-t5/t5-small"],
            "cannot load the model config 'google-t5/t5-small'",
        ),
    ],
    ids=["malformed-json-line", "empty-split", "missing-field", "hub-dataset-offline", "hub-model-offline"],
)
def test_data_and_hub_errors_are_one_line_before_training(data_dir: Path, args, message):
    base = ["recipe=summarization", "data.validation_file=ok.jsonl", "train.max_steps=2", "output_dir=out"]
    line = one_error_line(run_cli([*base, *args], data_dir), alone=False)
    assert message in line
    if "hub" in message or "cannot be loaded" in line or "cannot load" in line:
        assert "Hugging Face hub is unreachable" in line and (
            "local dataset directory" in line or "--local-dir" in line
        )
    assert not (data_dir / "out").exists()


def test_rows_under_a_key_load_with_data_field(data_dir: Path):
    check(
        run_cli(
            [
                "recipe=summarization",
                "data.train_file=under_data.json",
                "data.validation_file=under_data.json",
                "data.field=data",
                "train.max_steps=2",
                "generation.max_new_tokens=4",
                "output_dir=out",
            ],
            data_dir,
            launcher="python",
        )
    )
    assert read_json(data_dir / "out" / "metrics.json")["eval_samples"] == 6


def test_the_hf_squad_fixture_layout_is_read_as_rows(tmp_path: Path):
    """transformers' tests/fixtures/tests_samples/SQUAD/sample.json: one object, flat rows under "data"."""
    context = "Paris is the capital of France. Berlin is the capital of Germany."
    items = [
        {
            "id": f"q{i}",
            "title": "capitals",
            "context": context,
            "question": f"What is the capital of France? ({i})",
            "answers": {"text": ["Paris"], "answer_start": [0]},
        }
        for i in range(8)
    ]
    (tmp_path / "sample.json").write_text(json.dumps({"version": 2.0, "data": items}))
    result = check(
        run_cli(
            [
                "recipe=extractive_qa",
                "data.train_file=sample.json",
                "data.validation_file=sample.json",
                "train.max_steps=2",
                "output_dir=out",
            ],
            tmp_path,
            launcher="python",
        )
    )
    assert "train: 8 examples" in result.stdout
    assert read_json(tmp_path / "out" / "metrics.json")["eval_samples"] == 8


def test_lengths_above_the_model_positions_are_capped_with_a_notice(tmp_path: Path):
    result = check(
        run_cli(
            [
                "recipe=summarization",
                "task.max_source_length=100000",
                "data.max_train_samples=8",
                "data.max_eval_samples=2",
                "generation.max_new_tokens=4",
                "train.max_steps=2",
                "output_dir=out",
            ],
            tmp_path,
            launcher="python",
        )
    )
    assert "task.max_source_length=100000 is more than the model's 256 positions; capped to 256" in result.stdout
    saved = (tmp_path / "out" / "model" / "accel_tasks_config.yaml").read_text()
    assert "max_source_length: 256" in saved, "the export remembers the capped length"


# -- under accelerate launch, and the debug switch ---------------------------------------------------


def test_two_processes_print_the_line_once_and_both_exit(tmp_path: Path):
    result = run_cli(
        ["recipe=summarization", "train.lr=-1", "output_dir=out"],
        tmp_path,
        launcher="accelerate",  # what the launcher itself reports is part of the test
        config_file=ACCELERATE_CONFIGS / "cpu_2proc.yaml",
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("accel-tasks: error:")]
    assert lines == ["accel-tasks: error: train.lr=-1.0 is not valid; use a learning rate >= 0, e.g. train.lr=5e-5"]
    assert "exitcode: 2" in result.stderr, "the launcher reports the workers' status 2"
    assert not (tmp_path / "out").exists()


def test_the_line_is_printed_when_the_first_process_is_the_last_to_fail(tmp_path: Path):
    """The race CI hit: process 1 fails first and exits at once, and torchrun stops process 0 within 0.1 s,
    before it prints. Process 0 is held back 3 s here (a sitecustomize in both workers), so without
    teardown.let_the_first_process_explain the command fails without its line, every time."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(
        "import os, time\n"
        "if os.environ.get('RANK') == '0':  # set by torchrun for its workers only\n"
        "    time.sleep(3)\n"
    )
    result = run_cli(
        ["recipe=summarization", "train.lr=-1", "output_dir=out"],
        tmp_path,
        config_file=ACCELERATE_CONFIGS / "cpu_2proc.yaml",
        env={"PYTHONPATH": str(probe)},
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("accel-tasks: error:")]
    assert lines == ["accel-tasks: error: train.lr=-1.0 is not valid; use a learning rate >= 0, e.g. train.lr=5e-5"], (
        result.stderr[-3000:]
    )
    assert result.returncode != 0 and "exitcode: 2" in result.stderr
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path: Path):
    result = run_cli(
        ["recipe=summarization", "train.lr=-1", "output_dir=out"],
        tmp_path,
        launcher="python",
        env={**cli_env(), "ACCEL_TASKS_DEBUG": "1"},
    )
    assert (
        result.returncode != 0
        and "Traceback" in result.stderr
        and "ConfigError: train.lr=-1.0 is not valid" in result.stderr
    )
