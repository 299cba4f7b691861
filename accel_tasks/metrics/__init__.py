"""Evaluate metric modules shipped with accel_tasks, so the standard metrics work without the Hugging Face hub.

Each shipped metric is a directory `NAME/NAME.py` holding one `evaluate.Metric` with the same inputs and output
keys as the hub metric of the same name (wer/cer also return edit counts; see their module docstrings).
`evaluate` is imported only inside `load_metric`, so importing this package stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import evaluate

SHIPPED_METRICS: tuple[str, ...] = ("rouge", "sacrebleu", "chrf", "squad", "squad_v2", "wer", "cer")

_HERE = Path(__file__).resolve().parent


class MetricLoadError(ValueError):
    """A metric name or path that evaluate could not find or load."""


def metric_path(name_or_path: Union[str, os.PathLike]) -> str:
    """Resolve what `eval.metrics` names to something `evaluate.load` accepts.

    A shipped name (exactly one of SHIPPED_METRICS) wins over a same-named folder in the working directory,
    so runs do not depend on where they start; write "./rouge" to mean a local folder. Anything else (a local
    directory or .py file, or a hub id such as "someone/metric") is returned unchanged.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"metric name must be a string or path, got {type(name_or_path).__name__}: {name_or_path!r}")
    text = os.fspath(name_or_path)
    if text in SHIPPED_METRICS:
        return str(_HERE / text)
    return text


def load_metric(name_or_path: Union[str, os.PathLike], **init_kwargs: Any) -> "evaluate.EvaluationModule":
    """`evaluate.load` on `metric_path(name_or_path)`, with an error that says what works offline.

    init_kwargs go to `evaluate.load` (cache_dir, experiment_id, num_process, process_id, keep_in_memory, ...);
    the shipped modules also take their compute options here as defaults,
    e.g. `load_metric("sacrebleu", tokenize="zh")`.
    """
    import evaluate

    path = metric_path(name_or_path)
    try:
        return evaluate.load(path, **init_kwargs)
    except (FileNotFoundError, ConnectionError) as err:
        raise MetricLoadError(
            f"cannot load metric {os.fspath(name_or_path)!r} ({err}). Shipped metrics, which work offline: "
            f"{', '.join(SHIPPED_METRICS)}; a local module is a directory NAME/ holding NAME.py, or a .py file; "
            "hub ids such as 'someone/metric' need network access to the Hugging Face hub."
        ) from err
