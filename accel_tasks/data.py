"""Raw datasets from a hub name, local files, or the recipe's bundled sample; column checks.

Raw datasets only; features are ``features.py``'s job. The one file loader of the package: a recipe whose task has a file layout of its own (nested SQuAD json)
plugs a reader in through ``Recipe.read_data_file`` instead of loading files itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from .config import SPLITS, DataConfig
from .errors import ConfigError, first_line

if TYPE_CHECKING:
    import datasets

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
# A recipe's reader for a file layout only it knows: the dataset, or None to use the common loader.
FileReader = Callable[[Path], Optional["datasets.Dataset"]]


def check_data_files(data_cfg: DataConfig, splits: Iterable[str]) -> None:
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


def uses_files(data_cfg: DataConfig) -> bool:
    return any(getattr(data_cfg, f"{s}_file") for s in SPLITS)


def load_raw_datasets(
    data_cfg: DataConfig,
    splits: Iterable[str],
    sample_dir: Optional[Path] = None,
    read_file: Optional[FileReader] = None,
) -> datasets.DatasetDict:
    """A DatasetDict with the requested splits, named train / validation / test.

    ``read_file`` is tried first on every local data file; it returns None for files it does not own.
    """
    import datasets

    splits = tuple(splits)
    check_data_files(data_cfg, splits)
    if uses_files(data_cfg):
        loaded = {}
        for split in splits:
            path = getattr(data_cfg, f"{split}_file")
            if path is None:
                raise ConfigError(f"data.{split}_file is not set, but this run needs a {split} split")
            custom = read_file(Path(path)) if read_file is not None else None
            loaded[split] = custom if custom is not None else _load_file(path, f"data.{split}_file", data_cfg.field)
            if len(loaded[split]) == 0:
                raise ConfigError(f"data.{split}_file {path!r} holds no rows; point it at a file with examples")
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


def _load_file(path: str, what: str, field: Optional[str] = None) -> datasets.Dataset:
    """One local file as a Dataset; a file ``datasets`` cannot read is one line naming the file and the row."""
    import datasets

    suffix = Path(path).suffix.lower()
    builder = FILE_BUILDERS[suffix]
    kwargs: dict[str, str] = {"delimiter": "\t"} if suffix == ".tsv" else {}
    if field is not None and builder == "json":
        kwargs["field"] = field
    try:
        return datasets.load_dataset(builder, data_files={"data": path}, split="data", **kwargs)
    except Exception as exc:  # datasets wraps every parse failure (DatasetGenerationError, ArrowInvalid, ...)
        raise ConfigError(f"{what} {path!r} {_file_problem(Path(path), builder, field, exc)}") from None


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
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    json.loads(line)
                except json.JSONDecodeError as error:
                    return f"line {number} is not valid JSON ({error.msg} at column {error.colno}); fix or remove that line"
        if field is not None and not (isinstance(whole, dict) and field in whole):
            keys = ", ".join(whole) if isinstance(whole, dict) else "none (not one JSON object)"
            return f"has no key {field!r} for data.field (top-level keys: {keys}); set data.field to the key holding the rows"
    cause = exc.__cause__ or exc.__context__ or exc
    return f"cannot be read as {builder}: {type(cause).__name__}: {first_line(cause)}"


def _load_named(data_cfg: DataConfig, splits: tuple[str, ...]) -> datasets.DatasetDict:
    import datasets

    names = {s: getattr(data_cfg, f"{s}_split") for s in splits}
    loaded = {}
    for split, source_split in names.items():
        try:
            loaded[split] = datasets.load_dataset(data_cfg.name, data_cfg.config, split=source_split)
        except ValueError as exc:
            if "Unknown split" in str(exc) or "split" in str(exc).lower():
                raise ConfigError(
                    f"dataset {data_cfg.name!r} has no split {source_split!r}: {first_line(exc)}; set data.{split}_split"
                ) from None
            raise ConfigError(f"dataset {data_cfg.name!r} cannot be loaded: {first_line(exc)}") from None
        except (ConnectionError, OSError) as exc:  # offline, no such repo, or a gated one: the hub is the cause
            raise ConfigError(
                f"data.name={data_cfg.name!r} cannot be loaded ({type(exc).__name__}: {first_line(exc)}); if the Hugging Face hub "
                "is unreachable from here, pass a local dataset directory (data.name=path/to/dir) or files "
                "(data.train_file=... data.validation_file=...)"
            ) from None
        if len(loaded[split]) == 0:
            raise ConfigError(f"the {source_split!r} split of {data_cfg.name!r} holds no rows; set data.{split}_split to another split")
    return datasets.DatasetDict(loaded)


def _limit(raw: datasets.DatasetDict, data_cfg: DataConfig) -> datasets.DatasetDict:
    limits = {"train": data_cfg.max_train_samples, "validation": data_cfg.max_eval_samples, "test": data_cfg.max_eval_samples}
    for split, limit in limits.items():
        if split in raw and limit is not None and limit < len(raw[split]):
            raw[split] = raw[split].select(range(limit))
    return raw


def check_columns(dataset: datasets.Dataset, required: dict[str, str], split: str) -> None:
    """A missing column is an error naming the columns that exist and the option to set."""
    for column, option in required.items():
        if column not in dataset.column_names:
            have = ", ".join(dataset.column_names)
            raise ConfigError(f"the {split} data has no column {column!r} (columns: {have}); set {option}=<column>")


