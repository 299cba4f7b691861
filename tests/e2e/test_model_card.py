"""The model card (issue 15, point 4): every training export writes model/README.md in the Hugging Face format;
huggingface_hub loads it offline, its lines reproduce the run, and the export's manifest lists it."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from helpers import check, cli_env, read_json, read_jsonl, run_cli

TRAIN = [
    "recipe=summarization",
    "data.max_train_samples=32",
    "data.max_eval_samples=8",
    "generation.max_new_tokens=8",
    "train.batch_size=8",
    "train.max_steps=12",
    "train.log_every=4",
    "train.eval_every=6",
    "output_dir=run",
]
# One torch thread: these 2 cores are shared, and oversubscribed cores made a short run 20x slower.
ENV = {"ACCEL_TASKS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("card")
    check(run_cli(TRAIN, work, env={**ENV, "HF_DATASETS_CACHE": str(work / "ds_cache")}))
    return work


def card_text(work: Path) -> str:
    return (work / "run" / "model" / "README.md").read_text()


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def as_launch(line: str) -> list[str]:
    """A card's ``accelerate launch ...`` line as this interpreter runs it (the same launcher, this venv)."""
    argv = shlex.split(line)
    assert argv[:2] == ["accelerate", "launch"], line
    return [sys.executable, "-m", "accelerate.commands.launch", *argv[2:]]


def test_the_card_loads_with_huggingface_hub_and_its_metadata_parses(work: Path):
    from huggingface_hub import ModelCard, ModelCardData

    card = ModelCard.load(work / "run" / "model" / "README.md")  # a local path: no network
    data = card.data
    assert isinstance(data, ModelCardData)
    reparsed = ModelCardData(**data.to_dict())  # what ModelCard.validate checks offline: the metadata parses
    assert reparsed.eval_results and reparsed.to_dict() == data.to_dict()
    assert data.license == "other" and data.library_name == "transformers" and data.pipeline_tag == "summarization"
    assert data.tags == ["accel_tasks", "summarization"]
    assert data.base_model is None, "the bundled model has no hub id; the card says what it is instead"
    metrics = read_json(work / "run" / "metrics.json")
    results = {r.metric_type: r for r in data.eval_results}
    assert sorted(results) == ["rouge1", "rouge2", "rougeL", "rougeLsum"], "scores only, not the run's facts"
    for name, result in results.items():
        assert result.metric_value == pytest.approx(metrics[name])
        assert (result.task_type, result.dataset_type, result.dataset_name, result.dataset_split) == (
            "summarization",
            "json",
            "accel_tasks bundled summarization sample",
            "validation",
        )
    assert data.model_name == "run"
    front = yaml.safe_load(card_text(work).split("---\n")[1])
    assert front["model-index"][0]["results"][0]["task"]["type"] == "summarization"


def test_the_card_holds_hyperparameters_metrics_and_versions(work: Path):
    import transformers

    text = card_text(work)
    config = yaml.safe_load((work / "run" / "config.yaml").read_text())
    metrics = read_json(work / "run" / "metrics.json")
    for heading in ("## Evaluation results", "## Training hyperparameters", "## Reproduce", "## Framework versions"):
        assert heading in text
    for key in ("lr", "batch_size", "max_steps", "lr_scheduler", "warmup_steps", "grad_accum", "weight_decay"):
        value = config["train"][key]
        assert (
            f"| train.{key} | {value:.6g} |" in text
            if isinstance(value, float)
            else f"| train.{key} | {value} |" in text
        ), key
    assert "| seed | 42 |" in text and "| processes | 1 |" in text and "| total batch size | 8 |" in text
    assert "| mixed precision | no |" in text and "| DeepSpeed ZeRO stage | none (no DeepSpeed) |" in text
    assert f"| rougeL | {metrics['rougeL']:.6g} |" in text
    assert f"| train_steps | {metrics['train_steps']} |" in text and "| best_step |" in text
    assert f"- transformers {transformers.__version__}" in text and "- accel_tasks 0.1.0" in text and "- torch " in text
    assert "- Base model: built from the recipe's bundled config (random initialisation), trained from scratch" in text


def test_the_manifest_lists_the_card_and_the_eval_line_reproduces_the_metrics(work: Path):
    from accel_tasks.manifest import MANIFEST_FILE, manifest_problem

    model_dir = work / "run" / "model"
    manifest = read_json(model_dir / MANIFEST_FILE)
    assert manifest["kind"] == "export" and manifest["files"]["README.md"] == (model_dir / "README.md").stat().st_size
    assert manifest_problem(model_dir) is None
    _, score_line = code_blocks(card_text(work))
    assert (
        score_line == "accelerate launch -m accel_tasks.run recipe=summarization mode=eval model.name_or_path=run/model"
    )
    # The eval-only run checks the export's manifest (the card included) and scores it as the training run did.
    import subprocess

    result = subprocess.run(
        [*as_launch(score_line), "output_dir=scored"],
        cwd=work,
        env=cli_env(ENV),
        capture_output=True,
        text=True,
        timeout=600,
    )
    check(result)
    trained, scored = read_json(work / "run" / "metrics.json"), read_json(work / "scored" / "metrics.json")
    assert all(scored[k] == trained[k] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
    assert read_jsonl(work / "scored" / "predictions.jsonl") == read_jsonl(work / "run" / "predictions.jsonl")


def test_the_launch_line_repeats_the_training_run(work: Path):
    import subprocess

    train_line, _ = code_blocks(card_text(work))
    assert train_line == (
        "accelerate launch --num_processes 1 --mixed_precision no -m accel_tasks.run "
        "--config run/model/accel_tasks_config.yaml output_dir=run-rerun"
    )
    result = subprocess.run(
        as_launch(train_line), cwd=work, env=cli_env(ENV), capture_output=True, text=True, timeout=600
    )
    check(result)
    assert (work / "run-rerun" / "model" / "model.safetensors").read_bytes() == (
        work / "run" / "model" / "model.safetensors"
    ).read_bytes()
    first, again = read_json(work / "run" / "metrics.json"), read_json(work / "run-rerun" / "metrics.json")
    assert all(again[k] == first[k] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum", "train_steps"))
    assert (work / "run-rerun" / "model" / "README.md").is_file()


# -- the card's fields for other runs, without training -----------------------------------------------------


def config_for(*overrides: str) -> dict:
    from omegaconf import OmegaConf

    from accel_tasks.preflight import resolve_config

    cfg, recipe_cls = resolve_config(list(overrides), None)
    return OmegaConf.to_container(cfg, resolve=True), recipe_cls


def test_a_hub_model_and_data_set_fill_base_model_datasets_and_the_model_index():
    from huggingface_hub import ModelCardData

    from accel_tasks.reporting.model_card import LaunchFacts, build_model_card

    config, recipe_cls = config_for(
        "recipe=summarization",
        "model.name_or_path=google-t5/t5-small",
        "data.name=cnn_dailymail",
        "data.config=3.0.0",
        "output_dir=outputs/t5-cnn",
    )
    text = build_model_card(
        config,
        recipe_cls,
        {"rougeL": 0.25, "eval_samples": 100, "train_loss": 2.5},
        LaunchFacts(8, "bf16", 2),
        versions={"accel_tasks": "0.1.0"},
    )
    front = yaml.safe_load(text.split("---\n")[1])
    data = ModelCardData(**front)
    assert (data.base_model, data.datasets, data.model_name) == ("google-t5/t5-small", ["cnn_dailymail"], "t5-cnn")
    (result,) = data.eval_results
    assert (
        result.dataset_type,
        result.dataset_config,
        result.dataset_split,
        result.metric_type,
        result.metric_value,
    ) == ("cnn_dailymail", "3.0.0", "validation", "rougeL", 0.25)
    train_line = code_blocks(text)[0]
    assert train_line.startswith(
        "accelerate launch --num_processes 8 --mixed_precision bf16 --use_deepspeed --zero_stage 2 -m "
    )
    assert (
        f"| total batch size | {config['train']['batch_size'] * 8} |" in text
    )  # per process x 8 processes x 1 accumulation
    assert "| DeepSpeed ZeRO stage | 2 |" in text


@pytest.mark.parametrize(
    "recipe, tag",
    [
        ("translation", "translation"),
        ("extractive_qa", "question-answering"),
        ("speech_recognition", "automatic-speech-recognition"),
    ],
)
def test_every_recipe_names_its_hub_task(recipe: str, tag: str):
    from accel_tasks.reporting.model_card import LaunchFacts, card_metadata

    config, recipe_cls = config_for(f"recipe={recipe}", "data.validation_file=dev.csv")
    data = card_metadata(config, recipe_cls, {"score": 1.0}, "transformers")
    assert data.pipeline_tag == tag and data.tags == ["accel_tasks", recipe]
    assert (data.eval_results[0].task_type, data.eval_results[0].dataset_type, data.eval_results[0].dataset_name) == (
        tag,
        "csv",
        "dev.csv",
    )
    assert LaunchFacts().launcher_args() == ["--num_processes", "1", "--mixed_precision", "no"]


def test_a_resumed_run_repeats_from_scratch_and_local_models_stay_out_of_base_model(tmp_path: Path):
    from accel_tasks.reporting.model_card import LaunchFacts, card_metadata, launch_lines

    (tmp_path / "mine").mkdir()
    config, recipe_cls = config_for(
        "recipe=summarization", f"model.name_or_path={tmp_path / 'mine'}", "train.resume_from=latest"
    )
    train_line, _ = launch_lines(config, LaunchFacts())
    assert train_line.endswith("output_dir=outputs/summarization-rerun train.resume_from=null")
    assert card_metadata(config, recipe_cls, {}, "transformers").base_model is None


# -- a LoRA run: the adapter export and the merged model beside it --------------------------------------------

LORA_TRAIN = [
    "recipe=summarization",
    "data.max_train_samples=16",
    "data.max_eval_samples=4",
    "generation.max_new_tokens=8",
    "train.batch_size=4",
    "train.max_steps=4",
    "train.lr=1e-2",
    "train.report_to=[none]",
    # The README's LoRA settings, with the merged export.
    "peft.method=lora",
    "peft.r=8",
    "peft.alpha=16",
    "peft.merge=true",
    "output_dir=lora",
]


def train_lora(work: Path) -> Path:
    check(run_cli(LORA_TRAIN, work, env={"HF_DATASETS_CACHE": str(work / "ds_cache")}))
    return work


@pytest.fixture(scope="module")
def lora_work(tmp_path_factory) -> Path:
    return train_lora(tmp_path_factory.mktemp("lora_card"))


def score_args(line: str) -> list[str]:
    """The arguments of a card's ``accelerate launch -m accel_tasks.run ...`` eval line."""
    argv = shlex.split(line)
    assert argv[:4] == ["accelerate", "launch", "-m", "accel_tasks.run"], line
    return argv[4:]


def test_lora_exports_and_their_merged_model_get_cards(lora_work: Path):
    """A real LoRA run (peft.merge=true) writes a card into the adapter export (library peft) and one into
    model_merged (library transformers); both carry the LoRA settings and the final scores, their manifests list them,
    and each card's eval line scores its own export to those scores."""
    from huggingface_hub import ModelCard

    from accel_tasks.manifest import MANIFEST_FILE, manifest_problem

    run = lora_work / "lora"
    model_dir, merged = run / "model", run / "model_merged"
    assert (model_dir / "adapter_model.safetensors").is_file() and (model_dir / "adapter_config.json").is_file()
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    metrics = read_json(run / "metrics.json")
    scores = {k: metrics[k] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
    config = yaml.safe_load((run / "config.yaml").read_text())
    cards = {}
    for directory, library in ((model_dir, "peft"), (merged, "transformers")):
        card = cards[directory.name] = ModelCard.load(directory / "README.md")
        assert card.data.library_name == library, directory
        assert (card.data.pipeline_tag, card.data.tags, card.data.model_name) == (
            "summarization",
            ["accel_tasks", "summarization"],
            "lora",
        )
        assert {r.metric_type: r.metric_value for r in card.data.eval_results} == pytest.approx(scores)
        # The tiny adapter scores 0 after 4 steps: the run facts show the card read this run's metrics.json.
        assert f"| train_loss | {metrics['train_loss']:.6g} |" in card.text and "| train_steps | 4 |" in card.text
        for row in ("| peft.method | lora |", "| peft.r | 8 |", "| peft.alpha | 16 |", "| peft.merge | True |"):
            assert row in card.text, (directory, row)
        assert "| processes | 1 |" in card.text and "| train.max_steps | 4 |" in card.text
        assert f"| train.lr | {config['train']['lr']:.6g} |" in card.text
        train_line, score_line = code_blocks(card.text)
        assert train_line.endswith(
            "-m accel_tasks.run --config lora/model/accel_tasks_config.yaml output_dir=lora-rerun"
        )
        assert score_line.endswith(f"mode=eval model.name_or_path=lora/{directory.name}")
        manifest = read_json(directory / MANIFEST_FILE)
        assert manifest["files"]["README.md"] == (directory / "README.md").stat().st_size
        assert manifest_problem(directory) is None
    assert cards["model"].text != cards["model_merged"].text
    # What each card says it reproduces: its eval line scores its own export to the card's results.
    for name, card in cards.items():
        _, score_line = code_blocks(card.text)
        check(run_cli([*score_args(score_line), f"output_dir=scored-{name}"], lora_work))
        scored = read_json(lora_work / f"scored-{name}" / "metrics.json")
        assert {k: scored[k] for k in scores} == scores, name
        assert read_jsonl(lora_work / f"scored-{name}" / "predictions.jsonl") == read_jsonl(run / "predictions.jsonl")


def test_only_the_main_process_writes_the_cards(lora_work: Path, tmp_path: Path):
    """write_model_card on the real exports, as the loop calls it on a process other than the first: nothing."""
    import shutil

    from accel_tasks.preflight import resolve_config
    from accel_tasks.reporting.model_card import write_model_card

    for name in ("model", "model_merged"):
        shutil.copytree(lora_work / "lora" / name, tmp_path / name)
        (tmp_path / name / "README.md").unlink()
    cfg, recipe_cls = resolve_config([*LORA_TRAIN, f"output_dir={tmp_path}"], None)
    other = SimpleNamespace(
        is_main_process=False,
        num_processes=2,
        mixed_precision="no",
        state=SimpleNamespace(deepspeed_plugin=None),
        distributed_type=SimpleNamespace(value="MULTI_CPU"),
    )
    write_model_card(other, tmp_path / "model", cfg, recipe_cls(cfg), {"rougeL": 0.5})
    assert not (tmp_path / "model" / "README.md").exists() and not (tmp_path / "model_merged" / "README.md").exists()


def test_model_scores_leave_out_the_run_facts():
    from accel_tasks.reporting.model_card import model_scores

    metrics = {
        "rougeL": 0.5,
        "sacrebleu": 12,
        "eval_samples": 8,
        "eval_runtime_s": 1.0,
        "train_steps": 3,
        "train_loss": 2.0,
        "train_runtime_s": 2.0,
        "best_step": 2,
        "best_rougeL": 0.6,
        "exported_step": 2,
        "stopped_early_at_step": 3,
        "counts": [1, 2],
        "nan": float("nan"),
        "flag": True,
    }
    assert model_scores(metrics) == {"rougeL": 0.5, "sacrebleu": 12.0}
