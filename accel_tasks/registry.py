"""Recipe discovery: built-ins, the ``accel_tasks.recipes`` entry-point group, and ad-hoc ``file.py:Class``.

Discovery never imports a recipe module; only the chosen recipe is imported (``--list`` imports each
to show its preset).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from accel_tasks.errors import ConfigError, first_line

ENTRY_POINT_GROUP = "accel_tasks.recipes"

BUILTIN_RECIPES: dict[str, str] = {
    "summarization": "accel_tasks.recipes.summarization:SummarizationRecipe",
    "translation": "accel_tasks.recipes.translation:TranslationRecipe",
    "extractive_qa": "accel_tasks.recipes.extractive_qa:ExtractiveQARecipe",
    "speech_recognition": "accel_tasks.recipes.speech_recognition:SpeechRecognitionRecipe",
}


@dataclass(frozen=True)
class RecipeSource:
    name: str
    target: str  # "module:Class" or "path/file.py:Class"
    origin: str  # "built-in", "entry point (dist x.y)", "file", "module"


def available_recipes() -> dict[str, RecipeSource]:
    """Built-ins plus installed plugins; a name defined twice is an error naming both sources."""
    found = {name: RecipeSource(name, target, "built-in") for name, target in BUILTIN_RECIPES.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown package"
        source = RecipeSource(ep.name, ep.value, f"entry point ({dist})")
        if ep.name in found:
            first = found[ep.name]
            raise ConfigError(
                f"recipe name {ep.name!r} is defined twice: {first.origin} {first.target} and "
                f"{source.origin} {source.target}; rename one of them"
            )
        found[ep.name] = source
    return found


def resolve(spec: str) -> RecipeSource:
    """Map ``recipe=...`` to where its class lives, without importing it."""
    if ":" in spec and not _is_windows_drive(spec):
        target_path = spec.rsplit(":", 1)[0]
        origin = "file" if target_path.endswith(".py") else "module"
        return RecipeSource(spec, spec, origin)
    recipes = available_recipes()
    if spec not in recipes:
        names = ", ".join(sorted(recipes))
        raise ConfigError(
            f"unknown recipe {spec!r}; available: {names} "
            "(or recipe=path/to/file.py:ClassName, recipe=package.module:ClassName)"
        )
    return recipes[spec]


def load_recipe_class(spec: str) -> type:
    """Import and check the recipe class named by ``spec``."""
    from accel_tasks.recipe import Recipe

    source = resolve(spec)
    module_part, _, class_name = source.target.rpartition(":")
    if not class_name:
        raise ConfigError(f"recipe {spec!r} must name a class: module:ClassName or file.py:ClassName")
    module = _import_file(module_part) if module_part.endswith(".py") else _import_module(module_part, spec)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"recipe {spec!r}: {module_part} has no class {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Recipe)):
        raise ConfigError(
            f"recipe {spec!r} ({source.origin} {source.target}) is not a Recipe: "
            f"{class_name} must subclass accel_tasks.recipe.Recipe"
        )
    if not cls.name:
        cls.name = source.name if source.origin not in ("file", "module") else class_name
    return cls


def _import_module(module_name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"recipe {spec!r}: cannot import module {module_name!r} ({exc}); is its package installed?"
            ) from None
        raise ConfigError(
            f"recipe {spec!r}: {_where_it_failed(exc)}; install what it imports or fix the import"
        ) from None
    except Exception as exc:  # the plugin's own code failed while importing: say where, not a traceback
        raise ConfigError(f"recipe {spec!r} fails to import: {_where_it_failed(exc)}") from None


def _import_file(path_text: str) -> ModuleType:
    path = Path(path_text).resolve()
    if not path.is_file():
        raise ConfigError(f"recipe file {path_text!r} does not exist")
    module_name = f"accel_tasks_user_recipe_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(
            f"recipe file {exc.filename or path_text}:{exc.lineno}: SyntaxError: {exc.msg}; fix the file"
        ) from None
    except Exception as exc:  # the plugin's own code failed while importing
        sys.modules.pop(module_name, None)
        raise ConfigError(f"recipe file {path_text!r} fails to import: {_where_it_failed(exc)}") from None
    return module


def _where_it_failed(exc: BaseException) -> str:
    """``file:line: Type: message`` of the innermost frame outside the import machinery."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    where = f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
    return f"{where}{type(exc).__name__}: {first_line(exc)}"


def _is_windows_drive(spec: str) -> bool:
    return len(spec) > 2 and spec[1] == ":" and spec[2] in "\\/"
