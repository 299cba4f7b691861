"""Raw datasets from a hub name, local files, or the recipe's bundled sample; column checks.

Raw datasets only; features are ``features.py``'s job (and ``streaming.py``'s for a streamed train split).
With data.streaming the train split is a ``datasets.IterableDataset`` (columns resolved from its first rows);
an eval split is streamed only to take its first data.max_eval_samples rows, then held map-style. The one file
loader of the package: a recipe whose task has a file layout of its own (nested SQuAD json) plugs a reader in
through ``Recipe.read_data_file`` instead of loading files itself.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

from accel_tasks.config import SPLITS, DataConfig
from accel_tasks.data.audio_columns import allow_undecoded_audio, undecoded_audio_columns
from accel_tasks.data.file_checks import check_file_path, check_parquet_file, check_text_file, first_bad_json_line
from accel_tasks.data.mixing import RequiredColumns, check_sources, mix_train, without_mix
from accel_tasks.errors import ConfigError, first_line

if TYPE_CHECKING:
    import datasets

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
# How much of a local file a stream reads at a time (datasets' defaults: 10 MiB of JSON lines, a whole parquet
# row group): small, so that memory does not grow with the file (bench/streaming_memory.py).
STREAM_READ_SIZES: dict[str, dict[str, int]] = {
    "json": {"chunksize": 1 << 20},
    "csv": {"chunksize": 1000},
    "parquet": {"batch_size": 1000},
}
# A recipe's reader for a file layout only it knows: the dataset, or None to use the common loader.
FileReader = Callable[[Path], Optional["datasets.Dataset"]]


def check_data_files(data_cfg: DataConfig, splits: Iterable[str]) -> None:
    """Fail before anything heavy when a named data file is missing or of an unknown kind."""
    if "train" in splits and data_cfg.mix:  # each data.mix source as if it were the train data (mixing.py)
        check_sources(data_cfg, lambda source: check_data_files(source, ("train",)))
    for split in splits:
        path = getattr(data_cfg, f"{split}_file")
        if path is None:
            continue
        check_file_path(Path(path), f"data.{split}_file")
        if Path(path).suffix.lower() not in FILE_BUILDERS:
            kinds = ", ".join(sorted(FILE_BUILDERS))
            raise ConfigError(f"data.{split}_file {path!r}: unsupported file type; use one of {kinds}")
        check_text_file(Path(path), f"data.{split}_file")
        check_parquet_file(Path(path), f"data.{split}_file")


def uses_files(data_cfg: DataConfig) -> bool:
    return any(getattr(data_cfg, f"{s}_file") for s in SPLITS)


def load_raw_datasets(
    data_cfg: DataConfig,
    splits: Iterable[str],
    sample_dir: Optional[Path] = None,
    read_file: Optional[FileReader] = None,
    required_columns: Optional[RequiredColumns] = None,
) -> datasets.DatasetDict:
    """A DatasetDict with the requested splits, named train / validation / test.

    ``read_file`` is tried first on every local data file; it returns None for files it does not own. Audio columns
    come undecoded (``{"path", "bytes"}``) and are stored without torchcodec (audio_columns.py says why). With
    data.mix the train split is drawn from its sources (mixing.py), each checked for ``required_columns`` (the
    recipe's train columns) when given; the other splits come from the usual keys.
    """
    import datasets

    allow_undecoded_audio()
    splits = tuple(splits)
    check_data_files(data_cfg, splits)
    streamed = streamed_splits(data_cfg, splits)
    if data_cfg.mix and "train" in splits:
        rest = tuple(split for split in splits if split != "train")
        raw = load_raw_datasets(without_mix(data_cfg), rest, sample_dir, read_file) if rest else datasets.DatasetDict()
        raw["train"] = mix_train(
            data_cfg,
            lambda source: load_raw_datasets(source, ("train",), read_file=read_file)["train"],
            "train" in streamed,
            required_columns,
        )
        return raw
    if uses_files(data_cfg):
        loaded = {}
        for split in splits:
            path = getattr(data_cfg, f"{split}_file")
            if path is None:
                raise ConfigError(f"data.{split}_file is not set, but this run needs a {split} split")
            custom = read_file(Path(path)) if read_file is not None else None
            if custom is not None and split in streamed:
                custom = custom.to_iterable_dataset()
            what = f"data.{split}_file"
            loaded[split] = (
                custom if custom is not None else _load_file(path, what, data_cfg.field, streaming=split in streamed)
            )
            if split in streamed:
                loaded[split] = resolve_stream(loaded[split], f"{what} {path!r}")
            elif len(loaded[split]) == 0:
                raise ConfigError(f"data.{split}_file {path!r} holds no rows; point it at a file with examples")
        raw = datasets.DatasetDict(loaded)
    elif data_cfg.name:
        raw = _load_named(data_cfg, splits, streamed)
    elif sample_dir is not None:
        files = {split: str(sample_dir / f"{split}.jsonl") for split in splits}
        missing = [s for s, f in files.items() if not Path(f).is_file()]
        if missing:
            raise ConfigError(
                f"the bundled sample has no {', '.join(missing)} split; set data.name or data.<split>_file"
            )
        if streamed:
            raw = datasets.DatasetDict(
                {
                    split: _load_file(file, f"the bundled {split} sample", streaming=split in streamed)
                    for split, file in files.items()
                }
            )
            for split in streamed:
                raw[split] = resolve_stream(raw[split], f"the bundled {split} sample")
        else:
            raw = datasets.load_dataset("json", data_files=files)
    else:
        raise ConfigError("no data given: set data.name=<hub id> or data.train_file / data.validation_file")
    return _limit(undecoded_audio_columns(raw), data_cfg)


def streamed_splits(data_cfg: DataConfig, splits: Iterable[str]) -> set[str]:
    """The splits read as streams: train under data.streaming; an eval split too when only its first
    data.max_eval_samples rows are wanted (they are taken from the stream, the rest is never read)."""
    if not data_cfg.streaming:
        return set()
    return {s for s in splits if s == "train" or data_cfg.max_eval_samples is not None}


def resolve_stream(stream: datasets.IterableDataset, what: str) -> datasets.IterableDataset:
    """The stream with its columns known (read from its first rows), Audio columns undecoded; an empty or unreadable
    start is one line."""
    try:
        stream = undecoded_audio_columns(stream._resolve_features())
        first = next(iter(stream.take(1)), None)
    except Exception as exc:  # datasets raises its parse errors lazily, on the first read
        cause = exc.__cause__ or exc.__context__ or exc
        raise ConfigError(f"{what} cannot be streamed: {type(cause).__name__}: {first_line(cause)}") from None
    if first is None:
        raise ConfigError(f"{what} holds no rows; point it at data with examples")
    return stream


def _load_file(path: str, what: str, field: Optional[str] = None, streaming: bool = False) -> datasets.Dataset:
    """One local file as a Dataset (an IterableDataset when ``streaming``); a file ``datasets`` cannot read is
    one line naming the file and the row (a stream is only opened here: its rows are checked as they are read)."""
    import datasets

    suffix = Path(path).suffix.lower()
    builder = FILE_BUILDERS[suffix]
    kwargs: dict[str, Any] = {"delimiter": "\t"} if suffix == ".tsv" else {}
    if streaming:
        kwargs.update(STREAM_READ_SIZES[builder])
    if field is not None and builder == "json":
        kwargs["field"] = field
    try:
        with datasets_errors_unlogged():
            return datasets.load_dataset(
                builder, data_files={"data": path}, split="data", streaming=streaming, **kwargs
            )
    except Exception as exc:  # datasets wraps every parse failure (DatasetGenerationError, ArrowInvalid, ...)
        raise ConfigError(f"{what} {path!r} {_file_problem(Path(path), builder, field, exc)}") from None


@contextmanager
def datasets_errors_unlogged() -> Iterator[None]:
    """datasets logs a reader's failure (``ERROR ... Failed to read ...``) before raising it, sometimes with a row
    number of its block: the failure is reported once, in our line, so its log records are held back meanwhile."""
    import datasets

    library = datasets.utils.logging.get_logger("datasets")
    level = library.level
    library.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        library.setLevel(level)


def _file_problem(path: Path, builder: str, field: Optional[str], exc: BaseException) -> str:
    """What is wrong with a file datasets refused: the first bad JSON line, a missing field, or datasets' reason."""
    import json

    if path.stat().st_size == 0:
        return "is empty; point it at a file with examples"
    if builder == "json":
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
            bad_line = first_bad_json_line(path)
            if bad_line is not None:
                return bad_line
        if field is not None and not (isinstance(whole, dict) and field in whole):
            keys = ", ".join(whole) if isinstance(whole, dict) else "none (not one JSON object)"
            return (
                f"has no key {field!r} for data.field (top-level keys: {keys}); "
                "set data.field to the key holding the rows"
            )
    cause = exc.__cause__ or exc.__context__ or exc
    return f"cannot be read as {builder}: {type(cause).__name__}: {first_line(cause)}"


def _load_named(data_cfg: DataConfig, splits: tuple[str, ...], streamed: Iterable[str] = ()) -> datasets.DatasetDict:
    import datasets

    names = {s: getattr(data_cfg, f"{s}_split") for s in splits}
    loaded = {}
    for split, source_split in names.items():
        try:
            with datasets_errors_unlogged():
                loaded[split] = datasets.load_dataset(
                    data_cfg.name, data_cfg.config, split=source_split, streaming=split in streamed
                )
        except ValueError as exc:
            if "Unknown split" in str(exc) or "split" in str(exc).lower():
                raise ConfigError(
                    f"dataset {data_cfg.name!r} has no split {source_split!r}: {first_line(exc)}; "
                    f"set data.{split}_split"
                ) from None
            raise ConfigError(f"dataset {data_cfg.name!r} cannot be loaded: {first_line(exc)}") from None
        except datasets.exceptions.DatasetGenerationError as exc:  # a row the builder cannot store
            cause = exc.__cause__ or exc
            raise ConfigError(
                f"data.name={data_cfg.name!r} cannot be read: {type(cause).__name__}: {first_line(cause)}"
            ) from None
        except (ConnectionError, OSError) as exc:  # offline, no such repo, or a gated one: the hub is the cause
            raise ConfigError(
                f"data.name={data_cfg.name!r} cannot be loaded ({type(exc).__name__}: {first_line(exc)}); "
                "if the Hugging Face hub is unreachable from here, pass a local dataset directory "
                "(data.name=path/to/dir) or files "
                "(data.train_file=... data.validation_file=...)"
            ) from None
        if split in streamed:
            loaded[split] = resolve_stream(loaded[split], f"the {source_split!r} split of {data_cfg.name!r}")
        elif len(loaded[split]) == 0:
            raise ConfigError(
                f"the {source_split!r} split of {data_cfg.name!r} holds no rows; "
                f"set data.{split}_split to another split"
            )
    return datasets.DatasetDict(loaded)


def _limit(raw: datasets.DatasetDict, data_cfg: DataConfig) -> datasets.DatasetDict:
    """The first N rows of each split; an eval stream's first N become a map-style Dataset (eval needs len and
    order)."""
    import datasets

    limits = {
        "train": data_cfg.max_train_samples,
        "validation": data_cfg.max_eval_samples,
        "test": data_cfg.max_eval_samples,
    }
    for split, limit in limits.items():
        if split not in raw or limit is None:
            continue
        if isinstance(raw[split], datasets.IterableDataset):
            stream = raw[split].take(limit)
            raw[split] = (
                stream if split == "train" else datasets.Dataset.from_list(list(stream), features=stream.features)
            )
        elif limit < len(raw[split]):
            raw[split] = raw[split].select(range(limit))
    return raw


def check_columns(dataset: datasets.Dataset, required: dict[str, str], split: str) -> None:
    """A missing column is an error naming the columns that exist and the option to set."""
    for column, option in required.items():
        if column not in dataset.column_names:
            have = ", ".join(dataset.column_names)
            raise ConfigError(f"the {split} data has no column {column!r} (columns: {have}); set {option}=<column>")
