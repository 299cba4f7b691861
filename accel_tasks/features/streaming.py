"""data.streaming: the train split as a stream, each process reading its own share, resumable exactly.

Why its own module: a stream has no length, no random access and no cache, so everything the map-style
path takes for granted (len(), samplers, skip_first_batches over a prepared loader) is done differently
here, and the loop only asks two questions: is this split a stream, and where does its batch stream go.

How a stream is read (``stream_features``): raw rows -> seeded buffer shuffle (``data.shuffle_buffer``) ->
``datasets.distributed.split_dataset_by_node`` (whole shards per process when the shard count divides by
the processes, else every N-th row of the one shuffled stream) -> the recipe's ``preprocess`` as a batched
``map``, on the fly, so each process tokenizes its own rows only. The result is never passed through
``accelerator.prepare`` (it would shard a second time, or make the main process read for everyone):
``StreamBatches`` collates and moves batches to the device itself.

Epochs: a stream with ``train.max_steps`` simply continues. When a process reaches the end of its share it
starts the next pass with ``set_epoch(pass)`` (a different shuffle), on its own: processes whose shares
differ by a row do not have to agree on where a pass ends, and every process still yields one batch per
micro-step. To the loop the whole run is one endless epoch; ``LoopState.batches_in_epoch`` counts every
micro-batch so far.

Exact resume: datasets' ``IterableDataset.state_dict()`` does not hold the shuffle buffer's content (its
``load_state_dict`` warns and refills the buffer, so a resumed run sees other rows). The stream is instead
replayed: the same seed, shard layout and passes, the first ``batches x batch_size`` features dropped
before collation. That re-reads and re-tokenizes the skipped rows (the price of exactness), and draws
nothing from the global RNGs, so the resumed run trains on the same batches with the same dropout as an
uninterrupted one. ``stream_state.json`` in each checkpoint records the layout; preflight refuses a resume
whose layout differs, since the same position would then mean other rows.
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from accel_tasks import log
from accel_tasks.config import RunConfig
from accel_tasks.data.file_checks import first_bad_json_line
from accel_tasks.data.mixing import describe_mix
from accel_tasks.engines.deepspeed_config import world_size
from accel_tasks.errors import ConfigError, first_line
from accel_tasks.recipe import Recipe

if TYPE_CHECKING:
    import datasets
    import torch

STREAM_STATE_FILE = "stream_state.json"


def is_stream(dataset: Any) -> bool:
    """Whether a split is a ``datasets.IterableDataset`` (only the train split of a data.streaming run is)."""
    import datasets

    return isinstance(dataset, datasets.IterableDataset)


def check_streaming(cfg: RunConfig, recipe_cls: type[Recipe], resume_dir: Optional[Path]) -> None:
    """Preflight: settings that cannot work on a stream, each one line before anything loads."""
    data = cfg.data
    _check_resume_matches(cfg, resume_dir)
    if not data.streaming or cfg.mode != "train":
        return  # eval and predict runs read their split map-style (streamed only to take data.max_eval_samples rows)
    if not recipe_cls.can_stream():
        raise ConfigError(
            f"recipe={cfg.recipe} cannot stream its train data: its prepare_raw checks or fixes up the whole split "
            "and it has no prepare_stream; set data.streaming=false (or give the recipe a prepare_stream)"
        )
    if cfg.train.max_steps <= 0:
        raise ConfigError(
            "data.streaming=true needs train.max_steps=N: a stream has no length to count train.epochs in; "
            "set train.max_steps to the optimizer steps to train"
        )
    if cfg.train.packing:
        raise ConfigError(
            "train.packing packs the whole train split before training, which a stream never holds; "
            "set train.packing=false or data.streaming=false"
        )
    if cfg.train.group_by_length:
        raise ConfigError(
            "train.group_by_length sorts the whole train split by length, which a stream never holds; "
            "set train.group_by_length=false or data.streaming=false"
        )
    if data.preprocessing_num_workers is not None:
        raise ConfigError(
            "data.preprocessing_num_workers parallelises map-style preprocessing; a stream is tokenized on the fly "
            "inside each training process: set data.preprocessing_num_workers=null or data.streaming=false"
        )
    if data.dataloader_num_workers:
        raise ConfigError(
            "data.dataloader_num_workers>0 is not supported with data.streaming=true (each process reads its own "
            "share in the training process, which exact resume replays): set data.dataloader_num_workers=0"
        )


def _read_errors() -> tuple[type[BaseException], ...]:
    """What datasets' file readers raise on a bad row (JSON and parquet through pyarrow, csv through pandas)."""
    import pyarrow
    from pandas.errors import ParserError

    return (pyarrow.ArrowException, ParserError, UnicodeDecodeError, json.JSONDecodeError)


def _raised_by_reader(exc: BaseException) -> bool:
    """Whether ``exc`` came from inside datasets' file readers (e.g. pandas' JSON parser's ValueError on a bad
    line), not from a recipe's own code, whose errors keep their traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    return (
        bool(frames)
        and f"{os.sep}datasets{os.sep}" in frames[-1].filename
        or any(f"{os.sep}datasets{os.sep}packaged_modules{os.sep}" in frame.filename for frame in frames)
    )


def _bad_row(source: str, exc: BaseException) -> str:
    """The reader's complaint, named by the file's first bad line where the file is JSON lines: the reader's own
    message counts rows of its current block and can point at a row that is fine."""
    path = Path(source)
    if path.suffix.lower() in (".jsonl", ".json") and path.is_file():
        line = first_bad_json_line(path)
        if line is not None:
            return f"data.train_file {source!r} {line}"
    return f"{type(exc).__name__}: {first_line(exc)}; fix or remove that row of the data"


@dataclass
class StreamLayout:
    """What decides which rows a stream position names; a resume must match it to see the same rows."""

    processes: int
    batch_size: int
    seed: int
    shuffle_buffer: int
    max_train_samples: Optional[int]
    source: str


def stream_layout(cfg: RunConfig, processes: int) -> StreamLayout:
    data = cfg.data
    source = data.train_file or (
        f"{data.name}:{data.config or ''}:{data.train_split}" if data.name else "bundled sample"
    )
    if data.mix:  # another mix names other rows at the same position
        source = describe_mix(data)
    return StreamLayout(
        processes, cfg.train.batch_size, cfg.seed, data.shuffle_buffer, data.max_train_samples, str(source)
    )


def _check_resume_matches(cfg: RunConfig, resume_dir: Optional[Path]) -> None:
    """A checkpoint of a streamed run resumes only as a streamed run with the same layout, and vice versa."""
    if resume_dir is None or cfg.mode != "train":
        return
    path = Path(resume_dir) / STREAM_STATE_FILE
    if not path.is_file():
        if cfg.data.streaming:
            raise ConfigError(
                f"train.resume_from: {resume_dir} was trained on map-style data (no {STREAM_STATE_FILE}); "
                "resume it with data.streaming=false"
            )
        return
    if not cfg.data.streaming:
        raise ConfigError(
            f"train.resume_from: {resume_dir} was trained on a stream; resume it with data.streaming=true"
        )
    saved = json.loads(path.read_text()).get("layout", {})
    now = asdict(stream_layout(cfg, world_size()))
    differ = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in now.items() if saved.get(key) != value]
    if differ:
        raise ConfigError(
            f"train.resume_from: {resume_dir} streamed with other settings ({'; '.join(differ)}); the stream position "
            "would name other rows: resume with the checkpoint's settings "
            "(processes = accelerate launch --num_processes)"
        )


def stream_features(
    recipe: Recipe,
    raw: datasets.IterableDataset,
    split: str,
    cfg: RunConfig,
    process_index: int,
    processes: int,
) -> datasets.IterableDataset:
    """This process's share of a raw stream as features: shuffled, split by node, then preprocessed (lazily)."""
    from datasets.distributed import split_dataset_by_node

    columns = list(raw.column_names)
    shards = raw.n_shards
    stream = raw.shuffle(seed=cfg.seed, buffer_size=cfg.data.shuffle_buffer) if cfg.data.shuffle_buffer > 0 else raw
    if processes > 1:
        stream = split_dataset_by_node(stream, rank=process_index, world_size=processes)
    features = stream.map(recipe.preprocess, fn_kwargs={"split": split}, batched=True, remove_columns=columns)
    share = "whole shards" if shards % processes == 0 else "every row in turn"
    log.info(
        f"{split}: streamed ({shards} shard{'s' if shards != 1 else ''}, "
        f"{share} to {processes} process{'es' if processes != 1 else ''}, "
        f"shuffle buffer {cfg.data.shuffle_buffer or 'off'}), preprocessed on the fly"
    )
    return features


class StreamBatches:
    """Endless batches of one process's feature stream: collated, on the device, each pass reshuffled.

    Stands where the loop's prepared DataLoader stands for map-style data: ``set_epoch`` (a no-op: the passes
    are the stream's own), iteration, ``skip(n)`` for a resume (``n`` micro-batches replayed, uncollated), and
    ``write_state`` for a checkpoint.
    """

    def __init__(
        self,
        features: datasets.IterableDataset,
        batch_size: int,
        collate: Callable[[list[dict]], Any],
        device: torch.device,
        layout: StreamLayout,
    ) -> None:
        self.features = features
        self.batch_size = batch_size
        self.collate = collate
        self.device = device
        self.layout = layout
        # Micro-batches handed to the loop so far (skipped ones included) and passes begun over this share.
        self.batches = 0
        self.passes = 0

    def set_epoch(self, epoch: int) -> None:
        """The loop's epoch never advances on a stream (it is endless); passes are counted inside."""

    def rows(self) -> Iterator[dict]:
        """Feature rows of pass 0, 1, 2, ...; a pass that yields nothing is an error, not an endless wait.

        A stream reads its file as training goes, so a bad row far into it fails here, mid-run: as one line
        naming the reader's complaint (the loader's errors; a recipe's own errors keep their traceback).
        """
        unreadable = _read_errors()
        pass_number = 0
        while True:
            self.features.set_epoch(pass_number)
            self.passes = pass_number + 1
            empty = True
            rows = iter(self.features)
            while True:
                try:
                    row = next(rows)
                except StopIteration:
                    break
                except Exception as exc:
                    if not isinstance(exc, unreadable) and not _raised_by_reader(exc):
                        raise
                    raise ConfigError(
                        f"the train stream cannot be read on (pass {pass_number + 1}, after {self.batches} batches): "
                        f"{_bad_row(self.layout.source, exc)}"
                    ) from None
                empty = False
                yield row
            if empty:
                raise ConfigError(
                    "the train stream yields no features for this process; check the data, data.max_train_samples "
                    "(at least one row per process) and the recipe's length limits"
                )
            pass_number += 1

    def skip(self, batches: int) -> Iterator[Any]:
        """The batches after the first ``batches``: the stream replayed from its start, skipped rows not collated."""
        self.batches = batches
        return self._batches(islice(self.rows(), batches * self.batch_size, None))

    def __iter__(self) -> Iterator[Any]:
        self.batches = 0
        return self._batches(self.rows())

    def _batches(self, rows: Iterator[dict]) -> Iterator[Any]:
        from accelerate.utils import send_to_device

        while True:
            chunk = list(islice(rows, self.batch_size))
            if not chunk:
                return
            self.batches += 1
            yield send_to_device(self.collate(chunk), self.device)

    def write_state(self, checkpoint_dir: Path) -> None:
        """``stream_state.json``: the layout (a resume must match it) and the position, which a resume replays."""
        state = {
            "layout": asdict(self.layout),
            "micro_batches_per_process": self.batches,
            "features_per_process": self.batches * self.batch_size,
            "main_process_pass": self.passes,
            "resume": "replay: the stream is re-read from its start with the same seed, these features skipped",
        }
        (Path(checkpoint_dir) / STREAM_STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
