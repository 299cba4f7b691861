"""data.mix: the train split drawn from several sources by weight, map-style or streamed, seeded and resumable.

Why: practitioners mix data sets (LLaMA-Factory's ``interleave_probs``, axolotl's dataset lists, fairseq's
temperature sampling); a run here otherwise reads one source. The draws are datasets' own
``interleave_datasets(probabilities=weights / sum, seed=data.mix_seed, stopping_strategy=data.mix_stopping)``.

How a source is read: by the package's one loader (``raw.load_raw_datasets``, handed in as ``load``: raw.py calls
this module, so it imports nothing of raw.py), as if it were the run's only train data, its errors renamed to the
source's keys (``data.mix[1].split``). Its ``columns`` are renamed next; the mix keeps the columns every source has
(one line names what is left out, and where), cast to the first source's types.

Epochs: the mix is drawn once per run. Map-style, every epoch holds the same rows (the loader shuffles their order
anew); a stream re-reads the mix each pass with the same draws (its shuffle buffer reorders them), so a pass holds
what a map-style epoch holds. first_exhausted ends the mix when a source runs out (no row twice);
all_exhausted when every source has given every row (the others start again: oversampling).

Counts: map-style, a source-index column goes through the interleave and is counted, then dropped: one line per
run, the rows each source gives per epoch. A stream counts rows as it reads them and prints the line when a pass
ends (never for a pass cut short by train.max_steps). A mixed stream is one shard: every process reads the mix and
keeps every N-th row, so the line counts the rows all processes together trained on in that pass.

Exact resume: the mixed split is a function of the sources, weights, stopping rule and seed, so a map-style resume
sees the same split and the sampler resumes as for any split; a stream is replayed (``features/streaming.py``), and
the generator below yields the same rows each replay. :func:`describe_mix` goes into a stream's layout, so a resume
with another mix is refused there.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from accel_tasks import log
from accel_tasks.config import DataConfig
from accel_tasks.config.groups import MixSource
from accel_tasks.errors import ConfigError, first_line

if TYPE_CHECKING:
    import datasets

# The column that carries each row's source index through the interleave; dropped before anyone sees the split.
MIX_COLUMN = "__accel_tasks_mix_source"
# A source's train split as the one loader returns it (a Dataset, or an IterableDataset under data.streaming).
Loader = Callable[[DataConfig], Any]
# The recipe's required_columns for the train split: its columns -> {column it reads: option naming it}.
RequiredColumns = Callable[[list[str]], dict[str, str]]
# Keys of a whole-run DataConfig in the loader's messages, and the same key of a mix source.
_SOURCE_KEYS = (
    ("data.train_file", "train_file"),
    ("data.train_split", "split"),
    ("data.name", "name"),
    ("data.config", "config"),
)


def source_label(source: MixSource) -> str:
    """How the lines name a source: its file, or its data set (with config and split when not the defaults)."""
    if source.train_file is not None:
        return str(source.train_file)
    config = f" ({source.config})" if source.config else ""
    split = f" split {source.split}" if source.split != "train" else ""
    return f"{source.name}{config}{split}"


def source_config(data_cfg: DataConfig, source: MixSource) -> DataConfig:
    """The DataConfig that reads ``source`` as a run's only train data (unlimited: the limit applies to the mix)."""
    return DataConfig(
        name=source.name,
        config=source.config,
        train_split=source.split,
        train_file=source.train_file,
        field=data_cfg.field,
        streaming=data_cfg.streaming,
        shuffle_buffer=data_cfg.shuffle_buffer,
    )


def without_mix(data_cfg: DataConfig) -> DataConfig:
    """The run's DataConfig for its other splits: the same settings with no data.mix."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_object(data_cfg) if OmegaConf.is_config(data_cfg) else data_cfg
    return dataclasses.replace(plain, mix=[])


def describe_mix(data_cfg: DataConfig) -> str:
    """The mix as one stable string (sources, weights, columns, stopping rule, seed): a stream's layout holds it."""
    sources = [
        {key: value for key, value in dataclasses.asdict(_plain(source)).items() if value not in (None, {})}
        for source in data_cfg.mix
    ]
    return f"mix({data_cfg.mix_stopping}, seed {data_cfg.mix_seed}) " + json.dumps(sources, sort_keys=True)


def check_sources(data_cfg: DataConfig, check_files: Callable[[DataConfig], None]) -> None:
    """Preflight: each source's file checked as a run's train file is (``raw.check_data_files``, its errors naming
    the source's keys), and a data set named by a local path must be there (a hub id is only known to the hub)."""
    for index, source in enumerate(data_cfg.mix):
        with _as_source(index):
            check_files(source_config(data_cfg, source))
        name = source.name
        if name is not None and name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().exists():
            raise ConfigError(
                f"data.mix[{index}].name {name!r} does not exist; point it at a dataset directory or give a hub id"
            )


def mix_train(
    data_cfg: DataConfig, load: Loader, streaming: bool, required: Optional[RequiredColumns] = None
) -> datasets.Dataset | datasets.IterableDataset:
    """The train split drawn from data.mix's sources by weight; the line of rows per source is printed here
    (map-style) or at the end of each pass (stream). ``required``: the recipe's columns, checked on each source."""
    import datasets

    sources = [_plain(source) for source in data_cfg.mix]
    parts = []
    for index, source in enumerate(sources):
        with _as_source(index):
            part = load(source_config(data_cfg, source))
        part = _renamed(part, source, index)
        if required is not None:
            _check_required(part, required, index, source)
        parts.append(part)
    parts = _tagged(_aligned(parts, sources))
    total = sum(source.weight for source in sources)
    probabilities = [source.weight / total for source in sources]
    mixed = datasets.interleave_datasets(
        parts, probabilities=probabilities, seed=data_cfg.mix_seed, stopping_strategy=data_cfg.mix_stopping
    )
    what = f"{data_cfg.mix_stopping}, data.mix_seed {data_cfg.mix_seed}"
    counts = MixCounts([source_label(source) for source in sources], probabilities, what)
    if streaming:
        return counts.stream(mixed, data_cfg.max_train_samples)
    return counts.split(mixed, data_cfg.max_train_samples)


class MixCounts:
    """Counts the rows each source gives and prints them in one line: once for a map-style split (the same rows
    every epoch), at the end of each pass for a stream."""

    def __init__(self, labels: list[str], probabilities: list[float], what: str) -> None:
        self.labels = labels
        self.probabilities = probabilities
        self.what = what
        self.passes = 0  # passes of the stream read to their end by this process

    def line(self, counts: list[int], when: str) -> str:
        """``train: data.mix gave N rows <when> (rule, seed): a.jsonl 70 (70.0%, weight 70.0%), ...``."""
        total = sum(counts)
        parts = [
            f"{label} {count} ({100 * count / max(total, 1):.1f}%, weight {100 * share:.1f}%)"
            for label, count, share in zip(self.labels, counts, self.probabilities)
        ]
        return f"train: data.mix gave {total} rows {when} ({self.what}): " + ", ".join(parts)

    def split(self, mixed: datasets.Dataset, limit: Optional[int]) -> datasets.Dataset:
        """The map-style mix (its first ``limit`` rows), counted by its source column, which is then dropped."""
        if limit is not None and limit < len(mixed):
            mixed = mixed.select(range(limit))
        sources = mixed.select_columns([MIX_COLUMN]).with_format("arrow")[:][MIX_COLUMN]  # one column, no rows
        drawn = dict(zip(*(values.to_pylist() for values in sources.value_counts().flatten())))
        log.info(self.line([int(drawn.get(index, 0)) for index in range(len(self.labels))], "per epoch"))
        return mixed.remove_columns(MIX_COLUMN)

    def stream(self, mixed: datasets.IterableDataset, limit: Optional[int]) -> datasets.IterableDataset:
        """The mixed stream as a generator that counts each pass's rows and prints them at its end."""
        import datasets

        features = datasets.Features({k: v for k, v in mixed.features.items() if k != MIX_COLUMN})
        return datasets.IterableDataset.from_generator(
            self._rows, features=features, gen_kwargs={"mixed": mixed, "limit": limit}
        )

    def _rows(self, mixed: datasets.IterableDataset, limit: Optional[int]) -> Iterator[dict]:
        tally = [0] * len(self.labels)
        for row in islice(mixed, limit):
            tally[row.pop(MIX_COLUMN)] += 1
            yield row
        self.passes += 1
        log.info(self.line(tally, f"in pass {self.passes}"))


def _plain(source: Any) -> MixSource:
    """A mix entry as a MixSource (the run config holds OmegaConf nodes; tests may pass dataclasses)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(source) if OmegaConf.is_config(source) else source


@contextmanager
def _as_source(index: int, label: Optional[str] = None) -> Iterator[None]:
    """An error about the run's train data, told about data.mix[index]: its keys, or prefixed with it (and
    ``label``, where the message does not name the source)."""
    try:
        yield
    except ConfigError as exc:
        text = str(exc)
        for key, name in _SOURCE_KEYS:
            text = text.replace(key, f"data.mix[{index}].{name}")
        if f"data.mix[{index}]" not in text:
            text = f"data.mix[{index}]{f' ({label})' if label else ''}: {text}"
        raise ConfigError(text) from None


def _renamed(part: Any, source: MixSource, index: int) -> Any:
    """The source with its ``columns`` renamed; a column it lacks or a name it already has is one line."""
    have = list(part.column_names)
    for old, new in source.columns.items():
        if old not in have:
            raise ConfigError(
                f"data.mix[{index}].columns renames {old!r}, which {source_label(source)} does not have "
                f"(its columns: {', '.join(have)}); rename one of those"
            )
        if new in have and new not in source.columns:
            raise ConfigError(
                f"data.mix[{index}].columns renames {old!r} to {new!r}, which {source_label(source)} already has; "
                f"rename {new!r} too, or leave {old!r} as it is"
            )
    return part.rename_columns(dict(source.columns)) if source.columns else part


def _check_required(part: Any, required: RequiredColumns, index: int, source: MixSource) -> None:
    """The recipe's columns on one source: the one that lacks them is named, with both ways to fix it."""
    have = list(part.column_names)
    with _as_source(index, source_label(source)):
        needed = required(have)
    for column, option in needed.items():
        if column not in have:
            raise ConfigError(
                f"data.mix[{index}] ({source_label(source)}) has no column {column!r}, which the recipe reads "
                f"(its columns: {', '.join(have)}); rename one: data.mix[{index}].columns={{<its column>: {column}}}, "
                f"or set {option}=<column>"
            )


def _aligned(parts: list[Any], sources: list[MixSource]) -> list[Any]:
    """The columns every source has, in the first source's types (interleaving needs one schema)."""
    common = [column for column in parts[0].column_names if all(column in p.column_names for p in parts)]
    if not common:
        raise ConfigError(
            "data.mix's sources share no column; rename them to the recipe's names with data.mix[i].columns"
        )
    left_out = {
        column: [source_label(s) for s, p in zip(sources, parts) if column not in p.column_names]
        for p in parts
        for column in p.column_names
        if column not in common
    }
    if left_out:
        absent = "; ".join(f"{column}: not in {', '.join(where)}" for column, where in left_out.items())
        log.info(f"train: data.mix keeps the columns every source has ({', '.join(common)}); left out: {absent}")
    parts = [p.select_columns(common) if list(p.column_names) != common else p for p in parts]
    features = parts[0].features
    aligned = [parts[0]]
    for index, part in enumerate(parts[1:], start=1):
        if part.features != features:
            try:
                part = part.cast(features)
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    f"data.mix[{index}] ({source_label(sources[index])}) has columns of other types than "
                    f"data.mix[0] ({first_line(exc)}); give the sources the same types"
                ) from None
        aligned.append(part)
    return aligned


def _tagged(parts: list[Any]) -> list[Any]:
    """Each source with its index in MIX_COLUMN, so the mixed rows say where they came from."""
    import hashlib

    import datasets
    import numpy

    tagged = []
    for index, part in enumerate(parts):
        if isinstance(part, datasets.IterableDataset):
            features = datasets.Features({**part.features, MIX_COLUMN: datasets.Value("int64")})
            tagged.append(part.map(lambda row, i=index: {MIX_COLUMN: i}, features=features))
        else:  # the fingerprint from the source's and the index (datasets would hash the whole column)
            fingerprint = hashlib.sha256(f"{part._fingerprint}:{MIX_COLUMN}:{index}".encode()).hexdigest()[:32]
            column = numpy.full(len(part), index, dtype=numpy.int64)
            tagged.append(part.add_column(MIX_COLUMN, column, new_fingerprint=fingerprint))
    return tagged
