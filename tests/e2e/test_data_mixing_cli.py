"""data.mix through the real CLI: the --config YAML form and the command-line list form, the per-source line, exact
resume map-style and streamed, and the refusals before anything loads.

Two sources in public layouts: ``news.jsonl`` (the bundled sample's document/summary columns) and ``cnn.jsonl``
(cnn_dailymail's article/highlights names, renamed by the source's ``columns``). Which rows each batch held is
recorded by the real recipe plugin of ``helpers.recording_recipe``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from helpers import REPO, check, logged_losses, one_error_line, read_jsonl, recording_recipe, run_cli

SAMPLE = REPO / "accel_tasks" / "samples" / "summarization" / "train.jsonl"
FAST = ["data.max_eval_samples=4", "generation.max_new_tokens=4", "train.report_to=[none]", "train.log_every=1"]
# The YAML of docs/data-and-streaming.md (Mixing data sets), as a user writes it.
MIX_YAML = """\
data:
  mix:
    - {train_file: news.jsonl, weight: 0.7}
    - {train_file: cnn.jsonl, weight: 0.3, columns: {article: document, highlights: summary}}
  validation_file: dev.jsonl
"""
MIX_ARG = (
    "data.mix=[{train_file: news.jsonl, weight: 0.7}, "
    "{train_file: cnn.jsonl, weight: 0.3, columns: {article: document, highlights: summary}}]"
)
LINE = re.compile(
    r"train: data\.mix gave (\d+) rows (per epoch|in pass \d+) \(first_exhausted, data\.mix_seed 42\): "
    r"news\.jsonl (\d+) \([\d.]+%, weight 70\.0%\), cnn\.jsonl (\d+) \([\d.]+%, weight 30\.0%\)"
)


def write_sources(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:124]]
    (tmp_path / "news.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:60]))
    cnn = [{"article": r["document"], "highlights": r["summary"], "id": f"cnn-{r['id']}"} for r in rows[60:120]]
    (tmp_path / "cnn.jsonl").write_text("".join(json.dumps(row) + "\n" for row in cnn))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[120:]))
    (tmp_path / "mix.yaml").write_text(MIX_YAML)


def batches(tmp_path: Path) -> list[list[str]]:
    return read_jsonl(tmp_path / "record" / "rank0.jsonl")


def whole_then_resumed(tmp_path: Path, args: list[str]) -> tuple[str, str, list, list]:
    """4 steps straight into a/, then a/'s step_2 copied to b/ and resumed to 4: both outputs and batches."""
    spec, env = recording_recipe(tmp_path)
    whole = check(run_cli([spec, *args, "output_dir=a"], tmp_path, env=env)).stdout
    whole_batches = batches(tmp_path)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_2", tmp_path / "b" / "checkpoints" / "step_2")
    spec, env = recording_recipe(tmp_path)
    resumed = check(run_cli([spec, *args, "output_dir=b", "train.resume_from=latest"], tmp_path, env=env)).stdout
    assert "resumed from b/checkpoints/step_2 at step 2" in resumed
    return whole, resumed, whole_batches, batches(tmp_path)


def same_weights(tmp_path: Path) -> bool:
    from safetensors.torch import load_file

    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


STEPS = ["train.batch_size=4", "train.max_steps=4", "train.save_every=2", *FAST]


def test_a_mix_from_a_config_file_logs_its_rows_per_source_and_resumes_exactly(tmp_path: Path):
    """Map-style: the line counts the mixed split (its rows are the training features), both sources reach the
    batches, and 2 steps + resume to 4 trains on the same batches to the same weights as 4 straight."""
    write_sources(tmp_path)
    whole, resumed, whole_batches, resumed_batches = whole_then_resumed(tmp_path, ["--config", "mix.yaml", *STEPS])
    total, _, news, cnn = LINE.search(whole).groups()
    assert int(news) + int(cnn) == int(total) and f"training: {total} features" in whole, whole
    assert LINE.search(resumed).groups() == (total, "per epoch", news, cnn)
    trained = [row for batch in whole_batches for row in batch]
    assert any(row.startswith("cnn-") for row in trained) and any(row.startswith("sum-") for row in trained)
    assert resumed_batches == whole_batches[2:]
    assert {s: v for s, v in logged_losses(whole, 4).items() if s > 2} == logged_losses(resumed, 4)
    assert same_weights(tmp_path)


def test_a_streamed_mix_typed_on_the_command_line_counts_each_pass_and_resumes_exactly(tmp_path: Path):
    """data.streaming=true: 12 mixed rows in batches of 4, so a pass is 3 steps and the resumed half crosses into
    pass 2; each pass read to its end prints its line; the resume replays to the same batches and weights."""
    write_sources(tmp_path)
    args = [MIX_ARG, "data.validation_file=dev.jsonl", "data.streaming=true", "data.max_train_samples=12"]
    args += ["data.shuffle_buffer=8", *STEPS]
    whole, resumed, whole_batches, resumed_batches = whole_then_resumed(tmp_path, args)
    passes = [match.groups() for match in LINE.finditer(whole)]
    assert passes[0][:2] == ("12", "in pass 1") and passes[1][:2] == ("12", "in pass 2"), whole
    assert int(passes[0][2]) + int(passes[0][3]) == 12
    assert resumed_batches == whole_batches[2:]
    assert {s: v for s, v in logged_losses(whole, 4).items() if s > 2} == logged_losses(resumed, 4)
    assert same_weights(tmp_path)
    spec, env = recording_recipe(tmp_path)  # the recipe that wrote the checkpoint: only the mix differs
    other = run_cli([spec, *args, "data.mix_seed=7", "output_dir=b", "train.resume_from=latest"], tmp_path, env=env)
    line = one_error_line(other)
    assert "streamed with other settings (source 'mix(first_exhausted, seed 42)" in line and "seed 7)" in line


@pytest.mark.parametrize(
    "args,expected",
    [
        ([MIX_ARG, "data.train_file=news.jsonl"], "data.mix and data.train_file both give the train split"),
        (
            ["data.mix=[{train_file: news.jsonl, weight: 0.7}, {train_file: cnn.jsonl, weight: 0}]"],
            "data.mix[1].weight=0.0 must be a positive number",
        ),
        (["data.mix=[{train_file: news.jsonl}, {train_file: gone.jsonl}]"], "data.mix[1].train_file 'gone.jsonl'"),
        (
            ["data.mix=[{train_file: news.jsonl}, {train_file: cnn.jsonl}]", "data.validation_file=null"],
            "data.mix gives",
        ),
    ],
)
def test_a_bad_mix_is_one_line_before_anything_loads(tmp_path: Path, args: list[str], expected: str):
    write_sources(tmp_path)
    result = run_cli(["recipe=summarization", "data.validation_file=dev.jsonl", *args, "output_dir=out"], tmp_path)
    assert expected in one_error_line(result)
    assert not (tmp_path / "out").exists()
