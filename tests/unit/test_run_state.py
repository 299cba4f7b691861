"""Visible state: the resolved config is read-only after preflight, the run's decisions reach a recipe through one
RunContext (Recipe.begin_run), a setting decided at run time makes a new config (Recipe.decide), getters set
nothing, the loop sets no attribute on a recipe, and the console is accel_tasks.log alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from accel_tasks import log
from accel_tasks.preflight import make_plan, preflight_settings, resolve_config
from accel_tasks.recipe import RunContext
from accel_tasks.settings import freeze, with_settings

PACKAGE = Path(__file__).resolve().parents[2] / "accel_tasks"


def recipe_for(*overrides: str):
    cfg, recipe_cls = resolve_config(list(overrides), None)
    return recipe_cls(cfg)


# -- the config is read-only; a decision is a new config ----------------------------------------------------
def test_with_settings_makes_a_new_config_and_leaves_the_old_one_alone():
    cfg, _ = resolve_config(["recipe=summarization"], None)
    frozen = freeze(cfg)
    changed = with_settings(frozen, {"task.max_source_length": 64, "generation.max_new_tokens": 7})
    assert (changed.task.max_source_length, changed.generation.max_new_tokens) == (64, 7)
    assert (frozen.task.max_source_length, frozen.generation.max_new_tokens) == (128, 48)  # the preset's
    assert OmegaConf.is_readonly(changed), "a copy of a read-only config is read-only too"
    with pytest.raises(ReadonlyConfigError):
        changed.task.max_source_length = 1


def test_preflight_decides_the_predicted_split_and_the_output_dir_without_changing_the_config():
    cfg, recipe_cls = resolve_config(["recipe=summarization", "mode=predict", "data.test_file=test.jsonl"], None)
    assert preflight_settings(cfg, recipe_cls) == {"output_dir": "outputs/summarization-predict", "eval.split": "test"}
    assert cfg.eval.split == "validation" and cfg.output_dir is None, "preflight_settings only answers"


def test_make_plan_freezes_the_config(tmp_path: Path):
    cfg, recipe_cls = resolve_config(
        ["recipe=summarization", f"output_dir={tmp_path / 'out'}", "train.report_to=[none]"], None
    )
    plan = make_plan(cfg, recipe_cls)
    assert OmegaConf.is_readonly(plan.cfg) and plan.recipe.cfg is plan.cfg
    with pytest.raises(ReadonlyConfigError):
        plan.cfg.eval.split = "test"
    with pytest.raises(ReadonlyConfigError):
        plan.recipe.options.max_source_length = 1


# -- decisions -------------------------------------------------------------------------------------------------
def test_decide_records_only_what_changes():
    recipe = recipe_for("recipe=summarization")
    original = recipe.cfg
    recipe.decide({"task.max_source_length": 128, "task.max_target_length": 16})  # 128: the preset's
    assert recipe.decisions == {"task.max_target_length": 16}
    assert recipe.options.max_target_length == 16 and recipe.cfg.task is recipe.options
    assert original.task.max_target_length == 48, "the config the recipe was made with is left as it was"


def test_capped_lengths_are_decisions_saved_with_the_settings(capsys):
    from types import SimpleNamespace

    recipe = recipe_for("recipe=summarization", "task.max_source_length=100000")
    original = recipe.cfg
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=256))
    assert recipe.cap_to_positions(model, "task.max_source_length", "generation.max_new_tokens")
    assert recipe.decisions == {"task.max_source_length": 256}
    assert "max_source_length: 256" in OmegaConf.to_yaml(recipe.cfg)
    assert original.task.max_source_length == 100000
    out = capsys.readouterr().out
    assert out == "[accel_tasks] task.max_source_length=100000 is more than the model's 256 positions; capped to 256\n"


def test_begin_run_is_the_one_way_in():
    recipe = recipe_for("recipe=summarization")
    assert (recipe.pad_to_multiple_of, recipe.with_references) == (None, True)
    recipe.begin_run(RunContext(pad_to_multiple_of=8, with_references=False))
    assert (recipe.pad_to_multiple_of, recipe.with_references) == (8, False)
    recipe.adopt_model_settings({"max_target_length": 9})  # eval-only: what the trained model fixes
    assert recipe.decisions == {"task.max_target_length": 9} and recipe.options.max_target_length == 9
    with pytest.raises(AttributeError):
        recipe.pad_to_multiple_of = 4  # read from the context, never set from outside
    with pytest.raises(AttributeError):
        RunContext().with_references = False  # frozen


# -- getters set nothing ---------------------------------------------------------------------------------------
def test_summarization_columns_is_a_pure_answer():
    recipe = recipe_for("recipe=summarization")
    before = dict(vars(recipe))
    assert recipe.columns(["id", "document", "summary"]) == ("document", "summary")
    assert recipe.source_texts({"document": ["a", None], "summary": ["b", "c"]}) == ["a", ""]
    assert recipe.target_texts({"article": ["a"], "highlights": ["h"]}) == ["h"]
    assert vars(recipe) == before


# -- nobody outside the recipes sets a recipe attribute ----------------------------------------------------------
def test_no_module_outside_the_recipes_assigns_a_recipe_attribute():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "recipes" or relative.name == "recipe.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for target in targets:
                if isinstance(target, ast.Attribute) and "recipe" in ast.unparse(target.value).split(".")[-1]:
                    offenders.append(f"{relative}:{node.lineno}: {ast.unparse(target)}")
    assert not offenders, offenders


# -- one console -----------------------------------------------------------------------------------------------
def test_log_speaks_from_the_first_process_only(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    log.info("hello")
    log.warning("careful")
    monkeypatch.setenv("RANK", "1")
    log.info("not me")
    log.warning("not me either")
    captured = capsys.readouterr()
    assert captured.out == "[accel_tasks] hello\n"
    assert captured.err == "accel-tasks: warning: careful\n"


def test_the_package_prints_through_log_only():
    """errors.notice and the log callables are gone; print stays in log.py and the CLI's own output."""
    import accel_tasks.errors as errors

    assert not hasattr(errors, "notice")
    printing = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                printing.add(str(path.relative_to(PACKAGE)))
    assert "training/loop.py" not in printing and not any(p.startswith("training/") for p in printing)
