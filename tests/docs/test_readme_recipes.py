"""The "Recipes at a glance" lines of docs/recipes-and-plugins.md and the eval-only line of README.md, typed as
written: each recipe trains on its bundled offline default, then ``recipe=NAME mode=eval
model.name_or_path=outputs/NAME/model`` (nothing else) reproduces the final metrics and predictions exactly.
extractive_qa is cut to ``train.max_steps=40`` (a setting a user types; its default takes 7 minutes); translation and
speech_recognition run their defaults.

These are the recipes' learning tests as well (bounds below). Measured through this CLI on 2 shared cores with
one thread (2026-12-01): translation default (1128 steps, 57 s) sacreBLEU 96.12 / chrF 97.77; extractive_qa
40 steps EM 26 / F1 31.05 (121 s); speech 150 steps WER 1.0 / CER 0.62 (40 s), so the test runs its default
350 (WER 0.536, 65 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import check, read_json, read_jsonl, run_cli

# recipe -> (what the user types for training beyond recipe=NAME, metric keys, {metric: (low, high)}).
# The bounds are the learning tests too, set from measured runs with room for thread-count noise:
#   translation, 1128 steps: sacreBLEU 96.12 (untrained 0.02), chrF 97.77;
#   extractive_qa, 40 steps: EM 26.0, F1 31.05 (untrained head: EM 0.0, F1 7.4; 60 steps EM 25 / F1 28.3);
#   speech_recognition, 350 steps: WER 0.536 twice, CER 0.162 (untrained WER 1.67).
FLOWS = {
    "translation": ([], ("sacrebleu", "chrf"), {"sacrebleu": (60.0, 100.0)}),
    "extractive_qa": (["train.max_steps=40"], ("exact_match", "f1"), {"f1": (20.0, 100.0)}),
    "speech_recognition": ([], ("wer", "cer"), {"wer": (0.0, 0.75), "cer": (0.0, 0.30)}),
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(FLOWS))
def test_default_run_then_the_readme_eval_line(recipe: str, tmp_path: Path):
    extra, keys, bounds = FLOWS[recipe]
    check(run_cli([f"recipe={recipe}", *extra], tmp_path, launcher="accelerate", timeout=1500))
    eval_line = [f"recipe={recipe}", "mode=eval", f"model.name_or_path=outputs/{recipe}/model"]
    check(run_cli(eval_line, tmp_path, launcher="accelerate"))
    trained = read_json(tmp_path / "outputs" / recipe / "metrics.json")
    evaluated = read_json(tmp_path / "outputs" / f"{recipe}-eval" / "metrics.json")
    for key, (low, high) in bounds.items():  # it learned, and its output is real, not empty or perfect
        assert low < trained[key] < high, (key, trained)
    assert {k: evaluated[k] for k in keys} == {k: trained[k] for k in keys}
    assert read_jsonl(tmp_path / "outputs" / f"{recipe}-eval" / "predictions.jsonl") == read_jsonl(
        tmp_path / "outputs" / recipe / "predictions.jsonl"
    )
