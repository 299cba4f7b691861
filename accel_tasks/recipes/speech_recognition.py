"""``recipe=speech_recognition``: the speech recipe of the model's family, picked when the recipe is made.

Why an entry class: users (and saved run configs, and plugins) name one speech recipe, while a CTC model and an
encoder-decoder model are two recipes (:class:`~accel_tasks.recipes.speech_ctc.SpeechCTCRecipe`,
:class:`~accel_tasks.recipes.speech_seq2seq.SpeechSeq2SeqRecipe`). The family follows from the run config
(task.model_type, else model.name_or_path's config), which is complete once the recipe is made, so
``SpeechRecognitionRecipe(cfg)`` makes the family's recipe: the model type is the class, decided once, and no
hook asks for it again.

A plugin that subclasses this class keeps its overrides: ``Plugin(cfg)`` makes a class deriving from the plugin
and then the family (``Plugin`` first in the method order), so the plugin's ``super()`` calls reach the family.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Optional

from accel_tasks.config import RunConfig
from accel_tasks.recipes import PRESETS_DIR
from accel_tasks.recipes.speech.base import SpeechRecipe
from accel_tasks.recipes.speech.options import NORMALIZERS, SpeechRecognitionOptions
from accel_tasks.recipes.speech_ctc import SpeechCTCRecipe
from accel_tasks.recipes.speech_seq2seq import SpeechSeq2SeqRecipe

__all__ = [
    "NORMALIZERS",
    "SpeechCTCRecipe",
    "SpeechRecognitionOptions",
    "SpeechRecognitionRecipe",
    "SpeechSeq2SeqRecipe",
    "family_recipe",
]

FAMILIES: dict[str, type[SpeechRecipe]] = {
    SpeechCTCRecipe.model_type: SpeechCTCRecipe,
    SpeechSeq2SeqRecipe.model_type: SpeechSeq2SeqRecipe,
}


def family_recipe(cfg: RunConfig, default_model_dir: Optional[Path]) -> type[SpeechRecipe]:
    """The recipe class for the run's model: task.model_type, else the family its config declares.

    ``default_model_dir``: the model used when model.name_or_path is unset. Reads only the model's config.
    """
    from accel_tasks.recipes.speech.models import choose_model_type

    override = getattr(cfg.task, "model_type", None)
    config = None
    if override is None:
        from accel_tasks.models.loading import load_model_config

        config = load_model_config(cfg.model, default_model_dir)
    return FAMILIES[choose_model_type(config, override)]


class SpeechRecognitionRecipe(SpeechRecipe):
    """Speech recognition, CTC or encoder-decoder by the model: making one makes the family's recipe."""

    preset_file = PRESETS_DIR / "speech_recognition.yaml"

    def __new__(cls, cfg: RunConfig, *args: Any, **kwargs: Any) -> SpeechRecipe:
        if cls.model_type is not None:  # already a plugin on a family (made by with_family): nothing to pick
            return super().__new__(cls)
        family = family_recipe(cfg, cls.sample_dir / "model" if cls.sample_dir else None)
        if cls is SpeechRecognitionRecipe:
            return family(cfg, *args, **kwargs)  # not an instance of cls: Python does not run __init__ again
        return super().__new__(with_family(cls, family))

    def __reduce_ex__(self, protocol: Any) -> tuple:
        """Pickled (preprocessing workers) as its plugin and family, the two importable classes it is made of."""
        plugin, family = type(self).__bases__
        return (_plugin_on_family, (plugin, family), self.__dict__)


@cache
def with_family(plugin: type[SpeechRecognitionRecipe], family: type[SpeechRecipe]) -> type[SpeechRecipe]:
    """A plugin of ``recipe=speech_recognition`` on a family: the plugin's overrides first, then the family's."""
    return type(
        plugin.__name__,
        (plugin, family),
        {"__module__": plugin.__module__, "__qualname__": f"{plugin.__qualname__}[{family.model_type}]"},
    )


def _plugin_on_family(plugin: type[SpeechRecognitionRecipe], family: type[SpeechRecipe]) -> SpeechRecipe:
    return object.__new__(with_family(plugin, family))
