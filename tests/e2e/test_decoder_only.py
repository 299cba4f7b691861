"""Decoder-only LLMs in the generative recipes, through the real CLI, on real transformers classes.

Tiny Llama, Qwen2, GPT-2 and Gemma models (tests/llm_fixtures.py: local tokenizers, saved with weights) are each
trained a few steps by ``recipe=summarization`` with no setting that names the model family, exported, and scored
by ``mode=eval`` on the export with the path alone, which must reproduce the run. Then translation, LoRA with its
merge, exact resume with the best checkpoint, predict, streaming, the model card and report, and the one-line
refusals.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from llm_fixtures import save_tiny_causal_lm

from helpers import check, one_error_line, read_json, read_jsonl, run_cli

SMALL = [
    "data.max_train_samples=48",
    "data.max_eval_samples=6",
    "train.batch_size=8",
    "train.max_steps=6",
    "train.log_every=1",
    "task.max_source_length=48",
    "generation.max_new_tokens=10",
    "generation.num_beams=1",
    "train.report_to=[none]",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llms")
    return {family: save_tiny_causal_lm(root / family, family) for family in ("llama", "qwen2", "gpt2", "gemma")}


def final_metrics(output_dir: Path) -> dict:
    return {key: value for key, value in read_json(output_dir / "metrics.json").items() if key.startswith("rouge")}


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gemma"])
def test_each_family_trains_exports_and_its_export_reproduces_with_the_path_alone(tmp_path, models, family):
    run = check(
        run_cli(["recipe=summarization", f"model.name_or_path={models[family]}", *SMALL, "output_dir=out"], tmp_path)
    )
    assert "Traceback" not in run.stderr
    assert re.search(r"train example: \d+ prompt \+ \d+ completion tokens, loss on the completion only", run.stdout)
    if family == "gpt2":  # no pad token and no chat template: one notice each, then the plain template
        assert "the tokenizer has no pad token; padding with '<|endoftext|>'" in run.stdout
        assert "the tokenizer has no chat template; prompts are task.prompt_template as plain text" in run.stdout
        assert 'Summary:" + " ' in run.stdout  # the plain prompt, then the answer after a space
    export = tmp_path / "out" / "model"
    saved = read_json(export / "tokenizer_config.json")
    assert saved.get("pad_token") is not None and saved["padding_side"] == "left"
    if family != "gpt2":
        assert (export / "chat_template.jinja").is_file() or "chat_template" in saved
    generation = read_json(export / "generation_config.json")
    assert generation["pad_token_id"] is not None and generation["eos_token_id"] is not None
    trained = final_metrics(tmp_path / "out")
    assert set(trained) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    check(run_cli(["mode=eval", f"model.name_or_path={export}", "output_dir=again"], tmp_path))
    assert final_metrics(tmp_path / "again") == trained
    first = [r["prediction"] for r in read_jsonl(tmp_path / "out" / "predictions.jsonl")]
    assert [r["prediction"] for r in read_jsonl(tmp_path / "again" / "predictions.jsonl")] == first


def test_translation_with_a_decoder_only_model_names_the_languages_in_its_prompt(tmp_path, models):
    args = [
        "recipe=translation",
        f"model.name_or_path={models['qwen2']}",
        *SMALL,
        "task.source_lang=en",
        "output_dir=out",
    ]
    run = check(run_cli(args, tmp_path))
    assert "Translate this English text to German:" in run.stdout  # the example line: the languages by name
    trained = read_json(tmp_path / "out" / "metrics.json")
    check(run_cli(["mode=eval", f"model.name_or_path={tmp_path / 'out' / 'model'}", "output_dir=again"], tmp_path))
    again = read_json(tmp_path / "again" / "metrics.json")
    assert again["sacrebleu"] == trained["sacrebleu"] and again["chrf"] == trained["chrf"]


def test_lora_on_a_llama_targets_every_projection_and_both_exports_reproduce(tmp_path, models):
    args = ["recipe=summarization", f"model.name_or_path={models['llama']}", *SMALL, "output_dir=out"]
    run = check(run_cli([*args, "peft.method=lora", "peft.merge=true", "train.lr=5e-3"], tmp_path))
    assert "target_modules=['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']" in run.stdout
    trained = final_metrics(tmp_path / "out")
    for export, name in (("model", "adapter"), ("model_merged", "merged")):
        check(run_cli(["mode=eval", f"model.name_or_path={tmp_path / 'out' / export}", f"output_dir={name}"], tmp_path))
        assert final_metrics(tmp_path / name) == trained, export


def test_resume_is_exact_and_the_best_checkpoint_is_kept(tmp_path, models):
    from safetensors.torch import load_file

    args = [
        "recipe=summarization",
        f"model.name_or_path={models['qwen2']}",
        *SMALL,
        "train.max_steps=8",
        "train.save_every=4",
        "train.eval_every=4",
        "train.lr=3e-3",
    ]
    whole = check(run_cli([*args, "output_dir=a"], tmp_path))
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_4", tmp_path / "b" / "checkpoints" / "step_4")
    resumed = check(run_cli([*args, "output_dir=b", "train.resume_from=latest"], tmp_path))
    losses = [re.findall(r"step ([5-8])/8 loss (\S+)", text.stdout) for text in (whole, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in "ab")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    metrics = [read_json(tmp_path / d / "metrics.json") for d in "ab"]
    assert metrics[0]["rougeL"] == metrics[1]["rougeL"]
    # The best evaluation (steps 4 and 8 and the final one) is recorded, the same after the resume.
    assert metrics[0]["best_step"] in (4, 8) and metrics[0]["best_step"] == metrics[1]["best_step"]
    assert metrics[0]["best_rougeL"] == metrics[1]["best_rougeL"]


def test_predict_streaming_label_smoothing_card_and_report(tmp_path, models):
    import json

    (tmp_path / "docs.jsonl").write_text(
        "".join(json.dumps({"document": f"Document number {i} talks. It goes on."}) + "\n" for i in range(3))
    )
    model = f"model.name_or_path={models['llama']}"
    run = check(
        run_cli(
            ["recipe=summarization", model, *SMALL, "data.streaming=true", "train.label_smoothing=0.1", "output_dir=s"],
            tmp_path,
        )
    )
    assert "trained 6 steps" in run.stdout
    card = (tmp_path / "s" / "model" / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and "type: summarization" in card  # the model-index task stays
    # Token-budget eval batches (prompts sorted by length, left-padded): the same predictions as the run's own eval.
    budget = ["mode=eval", f"model.name_or_path={tmp_path / 's' / 'model'}", "eval.max_tokens_per_batch=150"]
    check(run_cli([*budget, "output_dir=budget"], tmp_path))
    assert read_jsonl(tmp_path / "budget" / "predictions.jsonl") == read_jsonl(tmp_path / "s" / "predictions.jsonl")
    check(run_cli(["report", str(tmp_path / "s")], tmp_path, launcher="python"))
    assert (tmp_path / "s" / "report.html").is_file()
    args = [
        "mode=predict",
        f"model.name_or_path={tmp_path / 's' / 'model'}",
        "data.test_file=docs.jsonl",
        "output_dir=p",
    ]
    check(run_cli(args, tmp_path))
    records = read_jsonl(tmp_path / "p" / "predictions.jsonl")
    assert len(records) == 3 and all("prediction" in r and "reference" not in r for r in records)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("task.prompt_template=Summarize {title}: {document}", r"task.prompt_template names \{title\}"),
        ("task.prompt_template=Summarize.", r"has no \{document\} field"),
    ],
)
def test_template_errors_are_one_line_before_anything_loads(tmp_path, models, setting, message):
    result = run_cli(["recipe=summarization", f"model.name_or_path={models['llama']}", setting], tmp_path)
    assert result.returncode == 2
    assert re.search(message, one_error_line(result))
    assert not (tmp_path / "outputs").exists()


def test_a_prompt_longer_than_the_context_and_a_non_generative_model_are_one_line(tmp_path, models):
    long = "task.prompt_template=" + "Read this. " * 150 + "{document}"
    result = run_cli(["recipe=summarization", f"model.name_or_path={models['gpt2']}", long, *SMALL], tmp_path)
    assert result.returncode == 2 and "more than the model's 256 positions" in one_error_line(result)
    from transformers import BertConfig

    BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    ).save_pretrained(tmp_path / "bert")
    result = run_cli(["recipe=summarization", f"model.name_or_path={tmp_path / 'bert'}"], tmp_path)
    assert result.returncode == 2
    assert "model_type 'bert' is neither an encoder-decoder" in one_error_line(result)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_zero3_on_two_processes_trains_and_generates_and_its_export_reproduces_in_one(tmp_path, models):
    """ZeRO-3 shards the causal LM; eval generates with synced_gpus (left-padded prompts on both ranks)."""
    import yaml

    from helpers import ACCELERATE_CONFIGS

    config = yaml.safe_load((ACCELERATE_CONFIGS / "deepspeed_zero3.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no")
    (tmp_path / "zero3.yaml").write_text(yaml.safe_dump(config))
    args = ["recipe=summarization", f"model.name_or_path={models['qwen2']}", *SMALL, "train.batch_size=4"]
    run = check(run_cli([*args, "output_dir=z3"], tmp_path, config_file=tmp_path / "zero3.yaml"))
    assert "processes=2 distributed=DEEPSPEED" in run.stdout
    trained = final_metrics(tmp_path / "z3")
    assert len(read_jsonl(tmp_path / "z3" / "predictions.jsonl")) == 6  # each eval example once
    check(run_cli(["mode=eval", f"model.name_or_path={tmp_path / 'z3' / 'model'}", "output_dir=one"], tmp_path))
    assert final_metrics(tmp_path / "one") == trained


def test_a_completion_that_cannot_fit_is_dropped_and_counted(tmp_path, models):
    import json

    rows = [{"document": f"Document {i} is here. It says more.", "summary": f"Document {i} is here."} for i in range(8)]
    rows.append({"document": "A short document.", "summary": " ".join(["long"] * 400)})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["recipe=summarization", f"model.name_or_path={models['gpt2']}", "data.train_file=train.jsonl"]
    args += [
        "data.validation_file=train.jsonl",
        "train.max_steps=2",
        "generation.max_new_tokens=4",
        "train.batch_size=4",
    ]
    run = check(run_cli([*args, "data.max_eval_samples=2"], tmp_path))
    assert (
        "train: dropped 1 of 9 examples whose completion does not fit the model's context beside the prompt"
        in run.stderr
    )
    assert "train: 8 examples -> 8 features" in run.stdout
