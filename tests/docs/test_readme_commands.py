"""The short commands of README.md and docs/, run exactly as written through the installed ``accel-tasks`` console
script (hub ids replaced by a local directory holding the same config, nothing else changed), and the README's
30-line plugin, copied from the README as it stands and run with the README's two lines."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from helpers import REPO, check, cli_env, read_json, read_jsonl, run_cli, save_untrained_default

CONSOLE = Path(sys.executable).parent / "accel-tasks"
README = (REPO / "README.md").read_text()
USAGE = (REPO / "docs" / "usage.md").read_text()  # the command and its forms
SCALING = (REPO / "docs" / "scaling-and-engines.md").read_text()  # estimate-memory and its table


def accel_tasks(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CONSOLE), *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300)


def test_the_commands_below_are_the_docs_own():
    for line in ("--list", "recipe=translation --print-config", "recipe=translation --help"):
        assert f"accel-tasks {line}" in USAGE, line
    assert (
        "accel-tasks estimate-memory recipe=summarization model.name_or_path=facebook/bart-large --gpus-per-node 8 "
        "--nodes 1 --gpu-memory 16" in SCALING
    )


def test_list_shows_each_recipe_with_its_preset(tmp_path: Path):
    result = accel_tasks("--list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    for name in ("summarization", "translation", "extractive_qa", "speech_recognition"):
        assert "built-in" in rows[name]
        preset = Path(rows[name].split("preset: ")[1])
        assert preset.name == f"{name}.yaml" and preset.is_file()


def test_print_config_for_translation(tmp_path: Path):
    result = accel_tasks("recipe=translation", "--print-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    # The bundled model's settings (recipes/translation.yaml, bundled_model section) over the preset.
    assert (cfg["recipe"], cfg["task"]["source_lang"], cfg["task"]["target_lang"]) == ("translation", "en", "de")
    assert cfg["train"]["lr"] == 2e-3 and cfg["generation"]["num_beams"] == 1
    assert not (tmp_path / "outputs").exists()


def test_help_lists_every_task_setting_with_its_value_and_doc(tmp_path: Path):
    result = accel_tasks("recipe=translation", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from dataclasses import fields

    from accel_tasks.config import field_docs
    from accel_tasks.recipes.translation import TranslationOptions

    docs = field_docs(TranslationOptions)
    for field in fields(TranslationOptions):
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(f"task.{field.name} = "))
        assert docs[field.name] and docs[field.name] in line, line
    assert re.search(r"task\.source_lang = en\s+Keys of the translation column", result.stdout)
    assert re.search(r"train\.lr = 0\.002\s+Peak learning rate of AdamW \(Trainer: learning_rate\)", result.stdout)
    for group in ("model.*", "data.*", "train.*", "eval.*", "generation.*", "peft.*", "task.*"):
        assert any(line.startswith(group) for line in result.stdout.splitlines()), group


def test_estimate_memory_prints_the_readme_table(tmp_path: Path):
    from transformers import BartConfig

    BartConfig().save_pretrained(tmp_path / "bart-large")  # facebook/bart-large's shape: BartConfig's defaults
    result = accel_tasks(
        "estimate-memory",
        "recipe=summarization",
        "model.name_or_path=bart-large",
        "--gpus-per-node",
        "8",
        "--nodes",
        "1",
        "--gpu-memory",
        "16",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    pasted = SCALING[SCALING.index("BartForConditionalGeneration: 406,291,456") :]
    pasted = pasted[: pasted.index("```")].splitlines()
    # DeepSpeed logs its accelerator choice on stdout when imported ("[date] [WARNING] ..."); the table is the rest.
    printed = [line for line in result.stdout.splitlines() if not line.startswith("[")]
    assert printed[0] == pasted[0]
    for line in pasted:
        if line.startswith(("ZeRO-", "FSDP2 ", "setting", "pick ")):
            assert line in printed, line


def test_help_of_a_plugin_file_lists_its_options_with_their_docs(tmp_path: Path):
    """docs/recipes-and-plugins.md: `accel-tasks recipe=file.py:Class --help` documents the plugin's task.* keys."""
    recipe = REPO / "examples" / "text_classification_plugin" / "accel_tasks_textcls" / "recipe.py"
    result = accel_tasks(f"recipe={recipe}:TextClassificationRecipe", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"task\.labels = \['negative', 'positive'\]\s+The label names in id order", result.stdout)
    assert re.search(r"task\.max_length = 32\s+Tokens kept per text", result.stdout)  # 32: the plugin's own preset


# -- the README's plugin ----------------------------------------------------------------------------------------


def readme_plugin() -> tuple[str, list[str]]:
    """The README's plugin source and its command lines (backslash continuations joined), as the README has them."""
    section = README[README.index("## A plugin in 30 lines") :]
    source = section.split("```python\n", 1)[1].split("```", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return source, [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_readme_plugin_runs_as_written(tmp_path: Path):
    """README: the 30-line HeadlineRecipe, its --help line, and its training line on `make run`'s model directory
    (here the bundled model's starting weights saved where `make run` exports, to keep the test short)."""
    source, (help_line, train_line) = readme_plugin()
    assert len(source.splitlines()) <= 40
    (tmp_path / "headline.py").write_text(source)
    sample = REPO / "accel_tasks" / "samples" / "summarization"
    for name, split, count in (("train.jsonl", "train", 64), ("dev.jsonl", "validation", 16)):
        rows = read_jsonl(sample / f"{split}.jsonl")[:count]
        lines = [json.dumps({"text": row["document"], "headline": row["summary"]}) for row in rows]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    save_untrained_default(tmp_path / "outputs" / "summarization" / "model", "summarization")

    assert help_line.startswith("accel-tasks ")
    result = accel_tasks(*shlex.split(help_line)[1:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"task\.text_column = text\s+Column holding the article\.", result.stdout)
    assert re.search(r"task\.headline_column = headline\s+Column holding its headline", result.stdout)

    launch, args = train_line.split(" -m accel_tasks.run ")
    assert launch == "accelerate launch"
    check(run_cli(shlex.split(args), tmp_path, launcher="accelerate", timeout=900))
    out = tmp_path / "outputs" / "headline"
    metrics = read_json(out / "metrics.json")
    assert {"rouge1", "rougeL", "train_loss"} <= set(metrics), metrics
    predictions = read_jsonl(out / "predictions.jsonl")
    assert len(predictions) == 16 and all("reference" in record for record in predictions)
    assert (out / "model" / "config.json").is_file()
