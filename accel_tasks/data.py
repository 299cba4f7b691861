"""Raw datasets from a hub name, local files, or the recipe's bundled sample; column checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from .config import ConfigError

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
SPLITS = ("train", "validation", "test")


def check_data_files(data_cfg: Any, splits: Iterable[str]) -> None:
    """Fail before anything heavy when a named data file is missing or of an unknown kind."""
    for split in splits:
        path = getattr(data_cfg, f"{split}_file")
        if path is None:
            continue
        if not Path(path).is_file():
            raise ConfigError(f"data.{split}_file {path!r} does not exist")
        if Path(path).suffix.lower() not in FILE_BUILDERS:
            kinds = ", ".join(sorted(FILE_BUILDERS))
            raise ConfigError(f"data.{split}_file {path!r}: unsupported file type; use one of {kinds}")


def uses_files(data_cfg: Any) -> bool:
    return any(getattr(data_cfg, f"{s}_file") for s in SPLITS)


def load_raw_datasets(data_cfg: Any, splits: Iterable[str], sample_dir: Optional[Path] = None) -> Any:
    """A DatasetDict with the requested splits, named train / validation / test."""
    import datasets

    splits = tuple(splits)
    check_data_files(data_cfg, splits)
    if uses_files(data_cfg):
        loaded = {}
        for split in splits:
            path = getattr(data_cfg, f"{split}_file")
            if path is None:
                raise ConfigError(f"data.{split}_file is not set, but this run needs a {split} split")
            loaded[split] = _load_file(path)
        raw = datasets.DatasetDict(loaded)
    elif data_cfg.name:
        raw = _load_named(data_cfg, splits)
    elif sample_dir is not None:
        files = {split: str(sample_dir / f"{split}.jsonl") for split in splits}
        missing = [s for s, f in files.items() if not Path(f).is_file()]
        if missing:
            raise ConfigError(f"the bundled sample has no {', '.join(missing)} split; set data.name or data.<split>_file")
        raw = datasets.load_dataset("json", data_files=files)
    else:
        raise ConfigError("no data given: set data.name=<hub id> or data.train_file / data.validation_file")
    return _limit(raw, data_cfg)


def _load_file(path: str) -> Any:
    import datasets

    builder = FILE_BUILDERS[Path(path).suffix.lower()]
    kwargs = {"delimiter": "\t"} if Path(path).suffix.lower() == ".tsv" else {}
    return datasets.load_dataset(builder, data_files={"data": path}, split="data", **kwargs)


def _load_named(data_cfg: Any, splits: tuple[str, ...]) -> Any:
    import datasets

    names = {s: getattr(data_cfg, f"{s}_split") for s in splits}
    loaded = {}
    for split, source_split in names.items():
        try:
            loaded[split] = datasets.load_dataset(data_cfg.name, data_cfg.config, split=source_split)
        except ValueError as exc:
            if "Unknown split" in str(exc) or "split" in str(exc).lower():
                raise ConfigError(
                    f"dataset {data_cfg.name!r} has no split {source_split!r}: {exc}; set data.{split}_split"
                ) from None
            raise
    return datasets.DatasetDict(loaded)


def _limit(raw: Any, data_cfg: Any) -> Any:
    limits = {"train": data_cfg.max_train_samples, "validation": data_cfg.max_eval_samples, "test": data_cfg.max_eval_samples}
    for split, limit in limits.items():
        if split in raw and limit is not None and limit < len(raw[split]):
            raw[split] = raw[split].select(range(limit))
    return raw


def check_columns(dataset: Any, required: dict[str, str], split: str) -> None:
    """A missing column is an error naming the columns that exist and the option to set."""
    for column, option in required.items():
        if column not in dataset.column_names:
            have = ", ".join(dataset.column_names)
            raise ConfigError(f"the {split} data has no column {column!r} (columns: {have}); set {option}=<column>")


FEATURE_CACHE_VERSION = 1


def feature_fingerprint(dataset: Any, recipe: Any, split: str) -> str:
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
        "processor": [type(processor).__name__, getattr(processor, "name_or_path", None), len(processor) if hasattr(processor, "__len__") else None],
        "preprocess": recipe.preprocess_fingerprint(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def make_features(recipe: Any, dataset: Any, split: str, data_cfg: Any, log: Any) -> Any:
    """Raw split -> features with batched ``map``; cached on disk so an identical run does not redo it."""
    fingerprint = feature_fingerprint(dataset, recipe, split)
    cached = bool(dataset.cache_files) and not data_cfg.overwrite_cache and Path(dataset._get_cache_file_path(fingerprint)).is_file()
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
    log(f"{split}: {len(dataset)} examples -> {len(features)} features ({'loaded from cache' if cached else 'preprocessed'})")
    return features
