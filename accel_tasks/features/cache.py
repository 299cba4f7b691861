"""Raw split -> model features through the recipe's ``preprocess``, cached on disk by a stable key.

Why its own module: features are the one place where data meets the recipe (its code, options and
processor are part of the cache key); ``data.py`` below it only knows files and hub data sets.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from accel_tasks import log
from accel_tasks.config import DataConfig
from accel_tasks.recipe import Recipe

if TYPE_CHECKING:
    import datasets


FEATURE_CACHE_VERSION = 1


def feature_fingerprint(dataset: datasets.Dataset, recipe: Recipe, split: str) -> str:
    """A stable cache key: same data, recipe, task options and processor -> the same cached features."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    processor = recipe.processor
    identity = {
        "version": FEATURE_CACHE_VERSION,
        "data": dataset._fingerprint,
        "recipe": f"{type(recipe).__module__}.{type(recipe).__qualname__}",
        "task": OmegaConf.to_container(recipe.cfg.task, resolve=True) if recipe.cfg.task is not None else None,
        "split": split,
        "with_references": recipe.with_references,
        "processor": [
            type(processor).__name__,
            getattr(processor, "name_or_path", None),
            len(processor) if hasattr(processor, "__len__") else None,
        ],
        "preprocess": recipe.preprocess_fingerprint(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def features_cached(dataset: datasets.Dataset, fingerprint: str) -> bool:
    """Whether ``map`` will load these features from the cache, by datasets' own rule: the one cache file, or
    every shard file of an earlier run with N preprocessing workers (``cache-FP_00000_of_0000N.arrow``, any N)."""
    if not dataset.cache_files:
        return False
    path = Path(dataset._get_cache_file_path(fingerprint))
    if path.is_file():
        return True
    shard = re.compile(re.escape(path.stem) + r"_(\d+)_of_(\d+)" + re.escape(path.suffix))
    ranks: dict[int, set[int]] = {}
    for candidate in path.parent.glob(f"{path.stem}_*_of_*{path.suffix}"):
        match = shard.fullmatch(candidate.name)
        if match:
            ranks.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    return any(found == set(range(count)) for count, found in ranks.items())


def make_features(recipe: Recipe, dataset: datasets.Dataset, split: str, data_cfg: DataConfig) -> datasets.Dataset:
    """Raw split -> features with batched ``map``; cached on disk so an identical run does not redo it."""
    fingerprint = feature_fingerprint(dataset, recipe, split)
    cached = not data_cfg.overwrite_cache and features_cached(dataset, fingerprint)
    features = dataset.map(
        recipe.preprocess,
        fn_kwargs={"split": split},
        batched=True,
        remove_columns=dataset.column_names,
        num_proc=data_cfg.preprocessing_num_workers,
        load_from_cache_file=not data_cfg.overwrite_cache,
        new_fingerprint=fingerprint,
        desc=f"preprocessing {split}",
    )
    log.info(
        f"{split}: {len(dataset)} examples -> {len(features)} features "
        f"({'loaded from cache' if cached else 'preprocessed'})"
    )
    return features
