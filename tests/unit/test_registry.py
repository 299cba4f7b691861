"""Recipe discovery: built-ins, entry points, file.py:Class and module:Class."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from accel_tasks import registry
from accel_tasks.errors import ConfigError
from accel_tasks.recipe import Recipe


def test_builtins_are_listed_without_importing_them():
    for module in [m for m in sys.modules if m.startswith("accel_tasks.recipes.")]:
        del sys.modules[module]
    recipes = registry.available_recipes()
    assert {"summarization", "translation", "extractive_qa", "speech_recognition"} <= set(recipes)
    assert recipes["summarization"].origin == "built-in"
    assert not [m for m in sys.modules if m.startswith("accel_tasks.recipes.")]


def test_unknown_recipe_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown recipe 'nope'; available: .*summarization"):
        registry.resolve("nope")


def test_file_recipe_is_loaded_from_a_path(tmp_path: Path):
    path = tmp_path / "my_recipe.py"
    path.write_text(
        textwrap.dedent(
            """
            from accel_tasks.recipe import Seq2SeqRecipe

            class Shout(Seq2SeqRecipe):
                def source_texts(self, batch):
                    return batch["text"]

                def target_texts(self, batch):
                    return [t.upper() for t in batch["text"]]

            class NotARecipe:
                pass
            """
        )
    )
    cls = registry.load_recipe_class(f"{path}:Shout")
    assert issubclass(cls, Recipe) and cls.name == "Shout"
    with pytest.raises(ConfigError, match=r"is not a Recipe: NotARecipe must subclass accel_tasks\.recipe\.Recipe"):
        registry.load_recipe_class(f"{path}:NotARecipe")
    with pytest.raises(ConfigError, match="has no class 'Missing'"):
        registry.load_recipe_class(f"{path}:Missing")
    with pytest.raises(ConfigError, match="does not exist"):
        registry.load_recipe_class(f"{tmp_path / 'nope.py'}:Shout")


def test_module_recipe_is_imported_by_name():
    cls = registry.load_recipe_class("accel_tasks.recipes.summarization:SummarizationRecipe")
    assert cls.name == "summarization"
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg.mod'"):
        registry.load_recipe_class("no_such_pkg.mod:Thing")


def test_entry_point_recipes_are_found_and_duplicates_name_both_sources(monkeypatch):
    plugin = EntryPoint(name="ner", value="my_pkg.ner:NerRecipe", group=registry.ENTRY_POINT_GROUP)
    clash = EntryPoint(name="summarization", value="other_pkg.sum:Sum", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [plugin])
    recipes = registry.available_recipes()
    assert recipes["ner"].target == "my_pkg.ner:NerRecipe"
    assert recipes["ner"].origin.startswith("entry point")
    monkeypatch.setattr(registry, "entry_points", lambda group: [clash])
    with pytest.raises(
        ConfigError,
        match=(
            r"'summarization' is defined twice: built-in accel_tasks\.recipes\.summarization:SummarizationRecipe "
            r"and entry point .* other_pkg\.sum:Sum"
        ),
    ):
        registry.available_recipes()
