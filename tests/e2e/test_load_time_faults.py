"""Issue 27's load-time faults through the CLI, one class per test: each is one line naming the real cause and the
fix (exit 2, no traceback), found before the model loads where no model is needed, with nothing written.

The cases were found by a reliability sweep of what a new user types; the checks are in data/file_checks.py,
data/values.py, evaluation/metric_checks.py, runs/compatibility.py, runs/output_dir.py and models/loading.py.
Faults preflight finds go through the CLI's entry function in this process (``main(argv)``: nothing loads before
them, so a process start would only add seconds); the others run as the CLI's own processes. The disk-full case
(runs/disk.py) needs a real failing write: a file-size limit (``ulimit -f``) makes the checkpoint's weights file
fail as a full disk does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, check, cli_env, one_error_line, run_cli

SAMPLE = REPO / "accel_tasks" / "samples" / "summarization"


def _sample_rows(count: int) -> list[dict]:
    with open(SAMPLE / "train.jsonl", encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(count)]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _refused_before_loading(result: subprocess.CompletedProcess, work: Path, out: str = "out") -> str:
    """The one error line; the model never loaded and output_dir was never made."""
    line = one_error_line(result)
    assert "model:" not in result.stdout, "the model was loaded before the check"
    assert not (work / out).exists(), "something was written"
    return line


# Where _files puts the latin-1 byte: line 4 of the sample rows, just after 'caf' in the document.
LATIN1_COLUMN = json.dumps(_sample_rows(4)[3]).index('"document": "') + len('"document": "caf') + 1


def _preflight_line(args: list[str], work: Path, capsys, monkeypatch) -> str:
    """A fault preflight finds, through the CLI's entry function in this process (no process start: preflight
    loads nothing): its one error line, with nothing loaded and nothing written."""
    from accel_tasks.run import main

    monkeypatch.chdir(work)
    before = sorted(p.name for p in work.iterdir())
    capsys.readouterr()
    status = main(args)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("accel-tasks: error: "), err
    assert "model:" not in out and sorted(p.name for p in work.iterdir()) == before, "something loaded or was written"
    return lines[0]


def _files(work: Path) -> dict[str, Path]:
    """The data files the cases point at, each with one fault (and one good file)."""
    good = _write_jsonl(work / "good.jsonl", _sample_rows(8))
    (work / "a_folder").mkdir()
    (work / "header.csv").write_text("document,summary\n")
    (work / "blank.jsonl").write_text("\n  \n\t\n")
    rows = [json.dumps(row).encode() for row in _sample_rows(5)]
    rows[3] = rows[3].replace(b'"document": "', b'"document": "caf\xe9 ', 1)  # latin-1, not UTF-8
    (work / "latin1.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    mixed = _sample_rows(6)
    mixed[2]["document"], mixed[4]["document"] = None, 5
    _write_jsonl(work / "mixed.jsonl", mixed)
    (work / "json_named.parquet").write_bytes(good.read_bytes())
    (work / "broken.parquet").write_bytes(b"PAR1" + b"\0" * 16 + b"PAR1")  # magic bytes, no parquet inside
    no_summaries = [dict(row, summary=None) for row in _sample_rows(6)]
    _write_jsonl(work / "no_summaries.jsonl", no_summaries)
    return {"good": good}


FILE_CASES = [
    (
        ["data.train_file=a_folder"],
        "data.train_file 'a_folder' is a directory, not a file; point it at one data file",
    ),
    (["data.train_file=header.csv"], "data.train_file 'header.csv' holds only a header line, no rows"),
    (["data.train_file=blank.jsonl"], "data.train_file 'blank.jsonl' is empty (no line holds any text)"),
    (
        ["data.train_file=latin1.jsonl"],
        f"data.train_file 'latin1.jsonl' is not UTF-8 text: byte 0xe9 at line 4, column {LATIN1_COLUMN} cannot be "
        "decoded; save the file as UTF-8",
    ),
    (["data.train_file=json_named.parquet"], "data.train_file 'json_named.parquet' is not a parquet file"),
]


@pytest.mark.parametrize("args, message", FILE_CASES, ids=[a[0] for a, _ in FILE_CASES])
def test_data_file_faults_are_one_line_in_preflight(tmp_path: Path, capsys, monkeypatch, args, message):
    _files(tmp_path)
    base = ["recipe=summarization", "data.validation_file=good.jsonl", "output_dir=out"]
    assert message in _preflight_line([*base, *args], tmp_path, capsys, monkeypatch)


DATA_CASES = [
    # datasets logs its reader's failure as ERROR lines first: held back, so the line stands alone.
    (["data.train_file=broken.parquet"], "data.train_file 'broken.parquet' cannot be read as parquet: "),
    (
        ["data.train_file=mixed.jsonl"],
        "the train data (data.train_file 'mixed.jsonl'): column 'document' (task.text_column) holds no text in 2 "
        "of 6 rows: rows 3 (null), 5 (int 5); every row needs a string there: fix or remove them",
    ),
    (
        ["data.train_file=no_summaries.jsonl"],
        "column 'summary' (task.summary_column) holds no text in 6 of 6 rows: rows 1 (null), 2 (null)",
    ),
]


@pytest.mark.parametrize("args, message", DATA_CASES, ids=[a[0] for a, _ in DATA_CASES])
def test_data_faults_are_one_line_before_the_model_loads(tmp_path: Path, args, message):
    _files(tmp_path)
    result = run_cli(["recipe=summarization", "data.validation_file=good.jsonl", "output_dir=out", *args], tmp_path)
    assert message in _refused_before_loading(result, tmp_path)


def test_a_null_question_in_squad_data_is_named_before_the_model_loads(tmp_path: Path):
    rows = [json.loads(line) for line in (REPO / "accel_tasks/samples/extractive_qa/train.jsonl").open()][:6]
    rows[1]["question"] = None
    _write_jsonl(tmp_path / "qa.jsonl", rows)
    args = ["recipe=extractive_qa", "data.train_file=qa.jsonl", "data.validation_file=qa.jsonl", "output_dir=out"]
    line = _refused_before_loading(run_cli(args, tmp_path), tmp_path)
    assert "column 'question' (task.question_column) holds no text in 1 of 6 rows: row 2 (null)" in line


def test_a_bad_answer_start_and_a_wrong_language_are_found_before_the_model_loads(tmp_path: Path):
    rows = [json.loads(line) for line in (REPO / "accel_tasks/samples/extractive_qa/train.jsonl").open()][:6]
    rows[2]["answers"] = {"text": ["zzz"], "answer_start": [99999]}
    _write_jsonl(tmp_path / "qa.jsonl", rows)
    qa = ["recipe=extractive_qa", "data.train_file=qa.jsonl", "data.validation_file=qa.jsonl", "output_dir=out"]
    line = _refused_before_loading(run_cli(qa, tmp_path), tmp_path)
    assert "answer 'zzz' is not at answer_start=99999" in line and rows[2]["id"] in line, line
    translation = ["recipe=translation", "task.target_lang=fr", "data.max_train_samples=2", "output_dir=out"]
    line = _refused_before_loading(run_cli(translation, tmp_path), tmp_path)
    assert (
        "task.target_lang='fr' is not a language of the train 'translation' column: its 2 rows "
        "(data.max_train_samples=2) have de, en" in line
    ), line


def test_a_missing_or_unreadable_clip_is_found_before_the_model_loads(tmp_path: Path):
    """Audio headers are read before the model (speech's check_raw); the window and decoder rules wait for it."""
    sample = REPO / "accel_tasks" / "samples" / "speech_recognition"
    shutil.copytree(sample / "audio", tmp_path / "audio")
    (tmp_path / "audio" / "empty.flac").write_bytes(b"")
    rows = [json.loads(line) for line in (sample / "train.jsonl").open()][:6]
    _write_jsonl(tmp_path / "valid.jsonl", rows)
    args = ["recipe=speech_recognition", "data.validation_file=valid.jsonl", "output_dir=out"]
    for clip, message in (("missing.flac", "audio file not found"), ("empty.flac", "cannot decode audio")):
        _write_jsonl(tmp_path / "train.jsonl", [dict(rows[0], audio=f"audio/{clip}"), *rows[1:]])
        line = _refused_before_loading(run_cli([*args, "data.train_file=train.jsonl"], tmp_path), tmp_path)
        assert f"row '{rows[0]['id']}': {message}" in line and clip in line, line


MESSAGE_CASES = [
    (["--config", "a_folder"], "--config file 'a_folder' is a directory; pass the YAML file itself"),
    (["output_dir="], "output_dir is empty (output_dir= with no value); pass output_dir=DIR"),
    (
        ["model.tokenizer_name=./no_such_tokenizer"],
        "model.tokenizer_name './no_such_tokenizer' does not exist (relative paths start from",
    ),
    (
        ["eval.metric_args={rouge: {use_stemer: true}}"],
        "eval.metric_args.rouge.use_stemer: rouge takes no argument 'use_stemer'; did you mean 'use_stemmer'?",
    ),
    (
        ["eval.metric_args={sacrebleu: {tokenize: intl}}"],
        "eval.metric_args.sacrebleu: 'sacrebleu' is not a metric of this run (its metrics: rouge)",
    ),
]


@pytest.mark.parametrize("args, message", MESSAGE_CASES, ids=[a[-1] for a, _ in MESSAGE_CASES])
def test_misleading_messages_now_name_the_real_cause(tmp_path: Path, capsys, monkeypatch, args, message):
    (tmp_path / "a_folder").mkdir()
    line = _preflight_line(["recipe=summarization", "output_dir=out", *args], tmp_path, capsys, monkeypatch)
    assert message in line, line


def test_a_folder_of_user_files_is_not_called_a_previous_run_and_is_left_alone(tmp_path: Path, capsys, monkeypatch):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine\n")
    for extra in ([], ["train.overwrite_output_dir=true"]):
        line = _preflight_line(["recipe=summarization", "output_dir=mine", *extra], tmp_path, capsys, monkeypatch)
        assert "holds files no accel_tasks run wrote" in line and "previous run" not in line, line
        assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]


def test_a_model_or_checkpoint_of_another_recipe_or_architecture_is_refused_before_loading(
    tmp_path: Path, shared_summarization_run, capsys, monkeypatch
):
    run = shared_summarization_run.output_dir
    checkpoint = next((run / "checkpoints").glob("step_*"))
    before = sorted(p.name for p in run.rglob("*"))
    cases = [
        (
            ["recipe=extractive_qa", "mode=eval", f"model.name_or_path={run / 'model'}"],
            f"model.name_or_path '{run / 'model'}' was trained by recipe=summarization, not recipe=extractive_qa: "
            "score it with recipe=summarization",
        ),
        (
            ["recipe=extractive_qa", f"train.resume_from={checkpoint}"],
            "is a checkpoint of recipe=summarization, and this run is recipe=extractive_qa; resume it with "
            "recipe=summarization",
        ),
        (
            ["recipe=summarization", "model.bundled=decoder_only", f"train.resume_from={checkpoint}"],
            "holds a marian model, and this run loads a llama model",
        ),
    ]
    for args, message in cases:
        assert message in _preflight_line([*args, "output_dir=out"], tmp_path, capsys, monkeypatch)
    assert sorted(p.name for p in run.rglob("*")) == before


@pytest.mark.slow
def test_a_disk_full_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(tmp_path: Path):
    """A real failing write: ``ulimit -f`` (KiB) below the weights file's size, with SIGXFSZ ignored so the write
    fails with EFBIG as it fails with ENOSPC on a full disk."""
    _write_jsonl(tmp_path / "small.jsonl", _sample_rows(16))
    args = [
        "recipe=summarization",
        "data.train_file=small.jsonl",
        "data.validation_file=small.jsonl",
        "data.max_eval_samples=2",
        "train.save_every=2",
        "output_dir=run",
    ]
    check(run_cli([*args, "train.max_steps=2"], tmp_path))
    resume = [*args, "train.max_steps=4", "train.resume_from=latest"]
    command = " ".join([sys.executable, "-m", "accel_tasks.run", *resume])
    result = subprocess.run(
        ["bash", "-c", f"trap '' XFSZ; ulimit -f 400; exec {command}"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 74, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = [line for line in result.stderr.splitlines() if line.startswith("accel-tasks: DiskFull: ")]
    assert len(line) == 1, result.stderr[-3000:]
    assert "writing checkpoint step_4 failed: the disk is full or a size limit was reached" in line[0]
    assert "the partial run/checkpoints/step_4.tmp was removed; the last complete checkpoint is " in line[0]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_2"]
    resumed = check(run_cli(resume, tmp_path))
    assert "resumed from" in resumed.stdout.lower() or "step 4/4" in resumed.stdout


@pytest.mark.slow  # two processes each: in make test, out of the everyday loop
@pytest.mark.parametrize(
    "args, message",
    [
        (["data.train_file=mixed.jsonl"], "column 'document' (task.text_column) holds no text in 2 of 6 rows"),
        (["eval.metric_args={rouge: {use_stemer: true}}"], "rouge takes no argument 'use_stemer'"),
    ],
    ids=["data", "config"],
)
def test_two_processes_print_the_line_once(tmp_path: Path, args, message):
    _files(tmp_path)
    result = run_cli(
        ["recipe=summarization", "data.validation_file=good.jsonl", "output_dir=out", *args],
        tmp_path,
        num_processes=2,
    )
    assert message in one_error_line(result, alone=False)
    assert result.stderr.count("accel-tasks: error:") == 1 and "Traceback" not in result.stderr
    assert "model:" not in result.stdout and not (tmp_path / "out").exists()
