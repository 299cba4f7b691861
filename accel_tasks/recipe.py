"""What a recipe imports: the Recipe contract, the text-to-text defaults and the values that cross the contract.

The contract itself (the hooks, their order, what each may rely on) is :mod:`accel_tasks.recipe_contract`;
``Seq2SeqRecipe`` and its options are the text-to-text layer's (:mod:`accel_tasks.text2text.recipe`), which serves
encoder-decoder and decoder-only models alike. Plugins and built-in recipes import all of it from here, so where a
piece lives can change without breaking them.
"""

from accel_tasks.generation import decode_generated, generation_kwargs, smoothed_loss
from accel_tasks.recipe_contract import Recipe
from accel_tasks.recipe_types import PAD_FLOAT, PAD_INT, PREVIEW_CHARS, EvalOutput, RunContext, pad_value_for, preview
from accel_tasks.text2text import Seq2SeqOptions, Seq2SeqRecipe

__all__ = [
    "PAD_FLOAT",
    "PAD_INT",
    "PREVIEW_CHARS",
    "EvalOutput",
    "Recipe",
    "RunContext",
    "Seq2SeqOptions",
    "Seq2SeqRecipe",
    "decode_generated",
    "generation_kwargs",
    "pad_value_for",
    "preview",
    "smoothed_loss",
]
