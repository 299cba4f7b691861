"""The values that cross the Recipe contract: :class:`RunContext` in (``Recipe.begin_run``), :class:`EvalOutput`
out (``Recipe.postprocess``), the padding convention of ``Recipe.predict``'s outputs, and the shortened inputs of
predictions.jsonl.

Re-exported by :mod:`accel_tasks.recipe`, where recipes import them from; a module of its own (plain values, no
Recipe) so that the evaluation code and the generation helpers need not import the Recipe class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RunContext:
    """What the run decided for the recipe after preflight, given to it once: :meth:`Recipe.begin_run`.

    Why one frozen value and not attributes the loop sets: a recipe reads the run's decisions from one documented
    place, at one known time, and nothing changes them afterwards. What is known earlier reaches the recipe
    when it is made: the resolved config (``Recipe(cfg)``), in which preflight has already decided the eval split
    (mode=predict scores the test split).

    - ``pad_to_multiple_of``: 8 under fp16/bf16 mixed precision (tensor cores), None in fp32; collate pads each
      batch's lengths up to a multiple of it.
    - ``with_references``: False only in mode=predict on inputs without references (``has_references`` said so):
      then required_columns, preprocess and postprocess leave the reference columns alone.

    What the trained model fixes (eval-only) comes later, once the model is loaded: ``adopt_model_settings``.
    """

    pad_to_multiple_of: Optional[int] = None
    with_references: bool = True


# The loop's padding convention for prediction outputs gathered across processes and batches.
PAD_INT = -100
PAD_FLOAT = -1e4


@dataclass
class EvalOutput:
    """What postprocessing hands back for the whole eval split.

    ``predictions`` and ``references`` go to every metric's ``compute`` unchanged (their element type is
    whatever the recipe's metrics expect: strings, SQuAD dicts, label ids); ``references`` is None when the
    inputs have none (mode=predict). ``records`` become the lines of predictions.jsonl, one JSON-serialisable
    dict per example, in input order: ``id``, ``input`` (the source or question, shortened by ``preview``),
    the prediction, and the reference when there is one.
    """

    predictions: list
    references: Optional[list]
    records: list[dict]

    @property
    def scorable(self) -> bool:
        """False for mode=predict on inputs without references: nothing to score, predictions only."""
        return self.references is not None


# Characters of the source or question kept in each predictions.jsonl record: enough to recognise the example.
PREVIEW_CHARS = 200


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """``text`` shortened to ``limit`` characters (with an ellipsis), so predictions.jsonl reads on its own."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def pad_value_for(array: Union[np.ndarray, torch.Tensor]) -> float:
    """The loop's padding convention for prediction outputs (see Recipe.predict)."""
    kind = getattr(array, "dtype", None)
    is_float = getattr(kind, "is_floating_point", None)
    if is_float is None:
        is_float = np.issubdtype(kind, np.floating)
    return PAD_FLOAT if is_float else PAD_INT
