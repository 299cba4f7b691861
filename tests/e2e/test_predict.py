"""mode=predict: a trained model on inputs without references, for every recipe, through the real CLI.

Each test writes the inputs a user would have (documents, sources, questions, audio clips; no targets),
runs ``mode=predict model.name_or_path=<export> data.test_file=<file>`` and reads predictions.jsonl: one
line per input, in input order, with its id, the input and the prediction, and no metrics. The
predictions must be the ones an eval run of the same model makes on the same inputs with references.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import pytest
import yaml

from accel_tasks.recipe import PREVIEW_CHARS

from helpers import check, one_error_line, read_json, read_jsonl, run_cli, save_untrained_default

SAMPLES = Path(__file__).resolve().parents[2] / "accel_tasks" / "samples"

pytestmark = pytest.mark.slow


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sample_rows(recipe: str, count: int) -> list[dict]:
    return read_jsonl(SAMPLES / recipe / "validation.jsonl")[:count]


def predict_and_eval(
    tmp_path: Path,
    recipe: str,
    inputs: list[dict],
    labelled: list[dict],
    extra: list[str],
    num_processes: int = 1,
    model: Optional[Path] = None,
):
    """predict on ``inputs`` (no references), then eval on ``labelled`` (the same rows with them); both outputs.

    ``model``: the model both runs use; the recipe's untrained default (save_untrained_default) when None.
    """
    model = model or save_untrained_default(tmp_path / "model", recipe)
    unlabelled = write_jsonl(tmp_path / "inputs.jsonl", inputs)
    with_refs = write_jsonl(tmp_path / "labelled.jsonl", labelled)
    predict = check(
        run_cli(
            [
                f"recipe={recipe}",
                "mode=predict",
                f"model.name_or_path={model}",
                f"data.test_file={unlabelled}",
                f"output_dir={tmp_path / 'predict'}",
                *extra,
            ],
            cwd=tmp_path,
            num_processes=num_processes,
        )
    )
    evaluated = check(
        run_cli(
            [
                f"recipe={recipe}",
                "mode=eval",
                f"model.name_or_path={model}",
                f"data.validation_file={with_refs}",
                f"output_dir={tmp_path / 'eval'}",
                *extra,
            ],
            cwd=tmp_path,
        )
    )
    return predict, evaluated


def assert_predictions_only(tmp_path: Path, inputs: list[dict], prediction_key: str = "prediction") -> list[dict]:
    records = read_jsonl(tmp_path / "predict" / "predictions.jsonl")
    assert [r["id"] for r in records] == [row["id"] for row in inputs]  # one line per input, in input order
    assert all(isinstance(r[prediction_key], str) for r in records)
    assert all(0 < len(r["input"]) <= PREVIEW_CHARS for r in records)
    assert not {"reference", "references", "answers", "reference_normalized"} & set().union(*records)
    metrics = read_json(tmp_path / "predict" / "metrics.json")
    assert set(metrics) == {"predict_samples", "predict_runtime_s"} and metrics["predict_samples"] == len(inputs)
    return records


def same_predictions(tmp_path: Path, key: str = "prediction") -> None:
    assert predictions(tmp_path / "predict", key) == predictions(tmp_path / "eval", key)


def predictions(output_dir: Path, key: str = "prediction") -> list[tuple[str, str]]:
    return [(r["id"], r[key]) for r in read_jsonl(output_dir / "predictions.jsonl")]


def test_summarization_predicts_documents_on_two_processes(tmp_path, shared_summarization_run):
    """The session's trained summarizer (conftest.py) predicts on 2 processes what an eval run of it predicts, and
    not what the untrained model predicts: a predict path that ignored the trained weights would fail here."""
    labelled = sample_rows("summarization", 7)[::-1]  # not the file's order: the output must follow the input
    inputs = [{"id": row["id"], "document": row["document"]} for row in labelled]
    trained = shared_summarization_run.output_dir / "model"
    extra = ["generation.max_new_tokens=12"]
    predict, _ = predict_and_eval(tmp_path, "summarization", inputs, labelled, extra, num_processes=2, model=trained)
    assert "no references: predictions only" in predict.stdout
    records = assert_predictions_only(tmp_path, inputs)
    assert records[0]["input"].startswith(labelled[0]["document"][:40])
    same_predictions(tmp_path)
    saved = yaml.safe_load((tmp_path / "predict" / "config.yaml").read_text())
    assert saved["mode"] == "predict" and saved["eval"]["split"] == "test"  # the saved config says what was predicted
    assert saved["model"]["name_or_path"] == str(trained)
    # The trained model's predictions are its own: the untrained model's, on the same inputs, differ on every row,
    # and the trained one's overlap the references.
    untrained = save_untrained_default(tmp_path / "untrained", "summarization")
    check(
        run_cli(
            [
                "recipe=summarization",
                "mode=predict",
                f"model.name_or_path={untrained}",
                f"data.test_file={tmp_path / 'inputs.jsonl'}",
                f"output_dir={tmp_path / 'predict-untrained'}",
                *extra,
            ],
            cwd=tmp_path,
        )
    )
    ours, theirs = predictions(tmp_path / "predict"), predictions(tmp_path / "predict-untrained")
    assert [i for i, _ in ours] == [i for i, _ in theirs]
    assert all(a != b for (_, a), (_, b) in zip(ours, theirs)), (ours, theirs)
    assert read_json(tmp_path / "eval" / "metrics.json")["rougeL"] > 0.05


def test_translation_predicts_sources_alone(tmp_path):
    labelled = sample_rows("translation", 6)
    inputs = [{"id": row["id"], "translation": {"en": row["translation"]["en"]}} for row in labelled]
    # The export remembers en -> de; only the English side is given.
    predict_and_eval(tmp_path, "translation", inputs, labelled, ["generation.max_new_tokens=12"])
    records = assert_predictions_only(tmp_path, inputs)
    assert [r["input"] for r in records] == [row["translation"]["en"] for row in labelled]
    same_predictions(tmp_path)


def test_extractive_qa_predicts_questions_and_contexts(tmp_path):
    labelled = sample_rows("extractive_qa", 8)
    inputs = [{"id": row["id"], "question": row["question"], "context": row["context"]} for row in labelled]
    predict_and_eval(tmp_path, "extractive_qa", inputs, labelled, [])
    records = assert_predictions_only(tmp_path, inputs, prediction_key="prediction_text")
    assert records[0]["input"].startswith(labelled[0]["question"])
    same_predictions(tmp_path, key="prediction_text")


def test_speech_recognition_predicts_audio_alone(tmp_path):
    labelled = sample_rows("speech_recognition", 5)
    shutil.copytree(SAMPLES / "speech_recognition" / "audio", tmp_path / "audio")
    inputs = [{"id": row["id"], "audio": row["audio"]} for row in labelled]
    predict_and_eval(tmp_path, "speech_recognition", inputs, labelled, [])
    records = assert_predictions_only(tmp_path, inputs)
    assert [r["input"] for r in records] == [row["audio"] for row in labelled]
    same_predictions(tmp_path)


def test_predict_scores_when_references_happen_to_be_there(tmp_path, shared_summarization_run):
    model = shared_summarization_run.output_dir / "model"  # trained: its scores are not all 0
    data = write_jsonl(tmp_path / "test.jsonl", sample_rows("summarization", 4))
    result = check(
        run_cli(
            [
                "recipe=summarization",
                "mode=predict",
                f"model.name_or_path={model}",
                f"data.test_file={data}",
                "generation.max_new_tokens=8",
                f"output_dir={tmp_path / 'out'}",
            ],
            cwd=tmp_path,
        )
    )
    assert "with references: they are scored too" in result.stdout
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert {"rouge1", "rougeL", "predict_samples"} <= set(metrics) and metrics["rougeL"] > 0.05
    assert all("reference" in r for r in read_jsonl(tmp_path / "out" / "predictions.jsonl"))


def test_predict_without_inputs_is_one_line_before_loading(tmp_path):
    model = save_untrained_default(tmp_path / "model", "summarization")
    result = run_cli(["recipe=summarization", "mode=predict", f"model.name_or_path={model}"], cwd=tmp_path)
    line = one_error_line(result)
    assert "mode=predict needs inputs: set data.test_file=FILE" in line
    assert not (tmp_path / "outputs").exists()


def test_predict_from_a_checkpoint_and_an_adapter_on_a_dataset_split(tmp_path):
    """The other trained-model kinds (checkpoints/step_N, a LoRA adapter dir) and data.name + data.test_split."""
    short = [
        "recipe=summarization",
        "data.max_train_samples=32",
        "data.max_eval_samples=4",
        "train.batch_size=8",
        "train.max_steps=2",
        "train.save_every=2",
        "generation.max_new_tokens=6",
        "train.report_to=[none]",
    ]
    check(run_cli([*short, "output_dir=full"], tmp_path))
    check(run_cli([*short, "peft.method=lora", "output_dir=lora"], tmp_path))
    documents = tmp_path / "documents"
    documents.mkdir()
    rows = [{"id": row["id"], "document": row["document"]} for row in sample_rows("summarization", 5)]
    write_jsonl(
        documents / "test.jsonl", rows
    )  # a local dataset dir as datasets reads hub repos: the split from the file name
    predicted = {}
    for model in ("full/checkpoints/step_2", "full/model", "lora/model"):
        out = tmp_path / "predict" / model.replace("/", "_")
        check(
            run_cli(
                [
                    "recipe=summarization",
                    "mode=predict",
                    f"model.name_or_path={model}",
                    f"data.name={documents}",
                    "data.test_split=test",
                    f"output_dir={out}",
                ],
                tmp_path,
            )
        )
        predicted[model] = read_jsonl(out / "predictions.jsonl")
        assert [r["id"] for r in predicted[model]] == [row["id"] for row in rows]
    # The last checkpoint and the export hold the same weights: the same predictions.
    assert predicted["full/checkpoints/step_2"] == predicted["full/model"]
