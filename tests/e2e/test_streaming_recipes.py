"""data.streaming for the recipes whose prepare_raw fixes up whole splits: translation, extractive QA, speech.

Each of them streams through its own ``prepare_stream`` (settings from the first rows, unusable rows dropped
lazily by the same per-row rule as the map-style path). Runs go through the real CLI on the bundled sample
and default model; which rows were trained on is recorded by a real recipe plugin (``recipe=probe.py:Class``)
whose ``collate`` appends each train batch's ids to ``$RECORD_DIR/rank<R>.jsonl`` before padding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import REPO, check, logged_losses, one_error_line, read_json, recording_recipe, run_cli

SAMPLES = REPO / "accel_tasks" / "samples"
FAST = ["data.max_eval_samples=4", "generation.max_new_tokens=4", "train.report_to=[none]", "train.log_every=1"]


def recorded(tmp_path: Path, rank: int = 0) -> list[str]:
    path = tmp_path / "record" / f"rank{rank}.jsonl"
    return [row for line in path.read_text().splitlines() for row in json.loads(line)] if path.is_file() else []


def sample_rows(recipe: str, split: str, count: int) -> list[dict]:
    lines = (SAMPLES / recipe / f"{split}.jsonl").read_text().splitlines()[:count]
    return [json.loads(line) for line in lines]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


# -- translation -----------------------------------------------------------------------------------------

TRANSLATION = ["recipe=translation", "data.streaming=true", *FAST]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_translation_streams_trains_and_scores(tmp_path: Path, processes: int):
    """The bundled sample streamed: languages resolved from the first rows, the loss falls, BLEU and chrF scored."""
    steps = 10
    result = check(
        run_cli(
            [
                *TRANSLATION,
                f"train.max_steps={steps}",
                "train.batch_size=8",
                "train.lr=3e-3",
                "train.warmup_steps=0",
                "train.warmup_ratio=0",
                "output_dir=out",
            ],
            tmp_path,
            num_processes=processes,
        )
    )
    assert (
        "translation: train: streamed; rows without a source or target are dropped as they are read "
        "(0 of the first 1000)" in result.stdout
    )
    assert f"to {processes} process" in result.stdout and f"training: streamed features, {steps} steps" in result.stdout
    loss = {step: float(value) for step, value in logged_losses(result.stdout, steps).items()}
    assert len(loss) == steps and loss[steps] < loss[1], loss
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["train_steps"] == steps and metrics["eval_samples"] == 4 and {"sacrebleu", "chrf"} <= set(metrics)
    assert "source_lang: en" in (tmp_path / "out" / "config.yaml").read_text()


def unusable_translation_rows(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """12 sample rows, 3 of them unusable (an empty target, no source, a blank target); the usable ids in file order."""
    rows = sample_rows("translation", "train", 12)
    rows[3]["translation"]["de"] = ""
    del rows[7]["translation"]["en"]
    rows[10]["translation"]["de"] = "   "
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    valid = write_jsonl(tmp_path / "valid.jsonl", sample_rows("translation", "validation", 4))
    usable = [row["id"] for index, row in enumerate(rows) if index not in (3, 7, 10)]
    return train, valid, usable


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [True, False])
def test_translation_drops_unusable_rows_the_same_way_streamed_and_map_style(tmp_path: Path, streaming: bool):
    """The same 9 of 12 rows are trained on by both paths; the stream (no shuffle) in file order."""
    train, valid, usable = unusable_translation_rows(tmp_path)
    spec, env = recording_recipe(tmp_path, "translation", "TranslationRecipe")
    result = check(
        run_cli(
            [
                spec,
                f"data.streaming={str(streaming).lower()}",
                f"data.train_file={train}",
                f"data.validation_file={valid}",
                "data.shuffle_buffer=0",
                "train.batch_size=3",
                "train.max_steps=3",
                "output_dir=out",
                *FAST,
            ],
            tmp_path,
            env=env,
        )
    )
    seen = recorded(tmp_path)
    if streaming:
        assert "rows without a source or target are dropped as they are read (3 of the first 12)" in result.stdout
        assert seen == usable  # one pass, in file order, the unusable rows skipped
    else:
        assert "train: dropped 3 of 12 rows that cannot be used" in result.stdout
        assert sorted(seen) == sorted(usable)


@pytest.mark.slow
def test_translation_stream_resumes_exactly(tmp_path: Path):
    """4 steps straight vs 2 steps + resume to 4 on one process: the same losses and bit-identical weights."""
    from safetensors.torch import load_file

    args = [
        *TRANSLATION,
        "data.max_train_samples=12",
        "data.shuffle_buffer=8",
        "train.batch_size=4",
        "train.max_steps=4",
        "train.save_every=2",
        "train.lr=3e-3",
    ]
    whole = check(run_cli([*args, "output_dir=a"], tmp_path))
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_2", tmp_path / "b" / "checkpoints" / "step_2")
    resumed = check(run_cli([*args, "output_dir=b", "train.resume_from=latest"], tmp_path))
    assert "resumed from b/checkpoints/step_2 at step 2" in resumed.stdout
    assert {s: v for s, v in logged_losses(whole.stdout, 4).items() if s > 2} == logged_losses(resumed.stdout, 4)
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


# -- extractive QA ---------------------------------------------------------------------------------------

QA = [
    "recipe=extractive_qa",
    "data.streaming=true",
    "train.batch_size=4",
    "data.max_eval_samples=8",
    "train.report_to=[none]",
    "train.log_every=1",
]


@pytest.mark.slow
def test_extractive_qa_streams_trains_and_scores(tmp_path: Path):
    """The bundled SQuAD-style sample streamed on one process: the first rows checked, 4 steps, EM/F1 scored."""
    result = check(run_cli([*QA, "train.max_steps=4", "output_dir=out"], tmp_path))
    assert "train: streamed (1 shard, whole shards to 1 process" in result.stdout
    assert len(logged_losses(result.stdout, 4)) == 4
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["train_steps"] == 4 and metrics["eval_samples"] == 8 and {"exact_match", "f1"} <= set(metrics)


def qa_rows_with_a_bad_answer(tmp_path: Path, bad: int) -> tuple[Path, Path, str]:
    """12 sample rows with the question column named "query" and row ``bad``'s answer_start off by one."""
    rows = sample_rows("extractive_qa", "train", 12)
    for row in rows:
        row["query"] = row.pop("question")
    rows[bad]["answers"]["answer_start"] = [rows[bad]["answers"]["answer_start"][0] + 1]
    valid_rows = sample_rows("extractive_qa", "validation", 4)
    for row in valid_rows:
        row["query"] = row.pop("question")
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    valid = write_jsonl(tmp_path / "valid.jsonl", valid_rows)
    return train, valid, rows[bad]["id"]


QA_HEAD_OF_4 = '''
from accel_tasks.recipes import PRESETS_DIR
from accel_tasks.recipes.extractive_qa import ExtractiveQARecipe


class HeadOf4(ExtractiveQARecipe):
    """extractive_qa that looks at only the first 4 rows of a stream before training."""

    name = "head_of_4"
    preset_file = PRESETS_DIR / "extractive_qa.yaml"
    stream_head_rows = 4
'''


@pytest.mark.slow
@pytest.mark.parametrize("where", ["first rows", "mid-stream"])
def test_extractive_qa_bad_row_in_a_stream_is_one_line(tmp_path: Path, where: str):
    """A bad row among the first rows fails before anything is written; one past them (the recipe plugin looks at
    4 rows) fails when the stream reaches it: one line naming the row, exit 2, either way. Columns renamed lazily."""
    train, valid, bad_id = qa_rows_with_a_bad_answer(tmp_path, 2 if where == "first rows" else 9)
    recipe = "recipe=extractive_qa"
    if where == "mid-stream":
        (tmp_path / "plugin.py").write_text(QA_HEAD_OF_4)
        recipe = f"recipe={tmp_path / 'plugin.py'}:HeadOf4"
    result = run_cli(
        [
            recipe,
            *QA[1:],
            f"data.train_file={train}",
            f"data.validation_file={valid}",
            "task.question_column=query",
            "data.shuffle_buffer=0",
            "train.max_steps=4",
            "output_dir=out",
        ],
        tmp_path,
    )
    line = one_error_line(result, alone=False)
    what = "the first 12 rows of the train stream" if where == "first rows" else "the train stream"
    assert f"{what} has 1 unusable row(s), not dropped silently: example {bad_id!r}: answer" in line, line
    assert "fix or remove these rows" in line
    if where == "first rows":
        assert not (tmp_path / "out").exists()


# -- speech recognition ----------------------------------------------------------------------------------

SPEECH = [
    "recipe=speech_recognition",
    "data.streaming=true",
    "data.max_eval_samples=4",
    "train.report_to=[none]",
    "train.log_every=1",
]
SPEECH_SAMPLE = SAMPLES / "speech_recognition"


@pytest.mark.slow
def test_speech_streams_trains_and_scores(tmp_path: Path):
    """The bundled speech sample streamed on one process: clips probed as they are read, 4 steps, WER scored."""
    result = check(run_cli([*SPEECH, "train.max_steps=4", "train.batch_size=8", "output_dir=out"], tmp_path))
    assert "train (the first 528 streamed rows): duration filter" in result.stdout
    assert "train: streamed (1 shard, whole shards to 1 process" in result.stdout
    assert len(logged_losses(result.stdout, 4)) == 4
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["train_steps"] == 4 and metrics["eval_samples"] == 4 and {"wer", "cer"} <= set(metrics)


def speech_rows_to_drop(tmp_path: Path) -> tuple[Path, Path, float, list[str]]:
    """12 sample rows, row 2's transcript emptied; a duration limit (the rows' median) that drops about half of
    the rest. Returns the files, the limit and the ids both rules keep, in file order."""
    import soundfile

    rows = sample_rows("speech_recognition", "train", 12)
    rows[2]["text"] = "  "
    durations = [soundfile.info(str(SPEECH_SAMPLE / row["audio"])).duration for row in rows]
    limit = sorted(durations)[len(durations) // 2]
    keep = [row["id"] for index, (row, seconds) in enumerate(zip(rows, durations)) if index != 2 and seconds <= limit]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    valid = write_jsonl(tmp_path / "valid.jsonl", sample_rows("speech_recognition", "validation", 4))
    return train, valid, limit, keep


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [True, False])
def test_speech_drops_the_same_rows_streamed_and_map_style(tmp_path: Path, streaming: bool):
    """An empty transcript (task.drop_empty_transcripts=true) and clips over task.max_duration_s are dropped by
    both paths: one batch of every kept row is exactly those rows (the stream, unshuffled, in file order)."""
    train, valid, limit, keep = speech_rows_to_drop(tmp_path)
    assert 2 <= len(keep) < 11
    spec, env = recording_recipe(tmp_path, "speech_recognition", "SpeechRecognitionRecipe")
    result = check(
        run_cli(
            [
                spec,
                *SPEECH[1:],
                f"data.streaming={str(streaming).lower()}",
                f"data.train_file={train}",
                f"data.validation_file={valid}",
                f"task.audio_dir={SPEECH_SAMPLE}",
                "task.drop_empty_transcripts=true",
                f"task.max_duration_s={limit}",
                "data.shuffle_buffer=0",
                f"train.batch_size={len(keep)}",
                "train.max_steps=1",
                "output_dir=out",
            ],
            tmp_path,
            env=env,
        )
    )
    seen = recorded(tmp_path)
    if streaming:
        assert (
            "train (the first 12 streamed rows): dropped 1 of 12 rows with an empty transcript (rows 'train-0002')"
            in result.stdout
        )
        assert (
            f"train (the first 12 streamed rows): duration filter [0, {limit:g}] s removed {11 - len(keep)} of 11 clips"
            in result.stdout
        )
        assert seen == keep
    else:
        assert "train: dropped 1 of 12 rows with an empty transcript" in result.stdout
        assert f"train: duration filter [0, {limit:g}] s removed {11 - len(keep)} of 11 clips" in result.stdout
        assert sorted(seen) == sorted(keep)


@pytest.mark.slow
def test_speech_empty_transcript_in_a_stream_is_one_line(tmp_path: Path):
    """Without task.drop_empty_transcripts an empty transcript is refused, as map-style: one line naming the row."""
    train, valid, _, _ = speech_rows_to_drop(tmp_path)
    result = run_cli(
        [
            *SPEECH,
            f"data.train_file={train}",
            f"data.validation_file={valid}",
            f"task.audio_dir={SPEECH_SAMPLE}",
            "train.max_steps=1",
            "output_dir=out",
        ],
        tmp_path,
    )
    line = one_error_line(result, alone=False)
    assert "the train stream has 1 row(s) with an empty transcript (after normalisation): rows 'train-0002'" in line, (
        line
    )
    assert "set task.drop_empty_transcripts=true" in line and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_speech_stream_builds_its_vocabulary_from_the_first_rows(tmp_path: Path):
    """task.build_vocab=true on a stream: the CTC vocabulary comes from the first stream_head_rows (1000)
    transcripts, and a character met only after them is not in it (the stream is never read whole for it)."""
    from accel_tasks.recipe import Recipe
    from accel_tasks.recipes.speech.vocab import build_ctc_vocab

    rows = [json.loads(line) for line in (SPEECH_SAMPLE / "train.jsonl").read_text().splitlines() if line.strip()]
    head = Recipe.stream_head_rows
    rows = (rows * (head // len(rows) + 1))[:head]
    late = {**rows[0], "id": "late", "text": "quack"}  # q, a, c, k: letters no digit word has
    (tmp_path / "audio").symlink_to(SPEECH_SAMPLE / "audio")
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in [*rows, late]))
    validation = f"data.validation_file={SPEECH_SAMPLE / 'validation.jsonl'}"
    args = [*SPEECH, f"data.train_file={train}", validation, "task.build_vocab=true", "train.max_steps=1"]
    result = check(run_cli([*args, "train.batch_size=4", "output_dir=out"], tmp_path))
    assert f"from the first {head} streamed training transcripts" in result.stdout
    assert read_json(tmp_path / "out" / "metrics.json")["train_steps"] == 1
    vocab = read_json(tmp_path / "out" / "model" / "vocab.json")
    assert set(vocab) == set(build_ctc_vocab(row["text"] for row in rows)), vocab
    assert not {"q", "a", "c", "k"} & set(vocab)
