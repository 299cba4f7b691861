"""The Recipe contract: everything task-specific, nothing about devices, processes or loops.

A recipe is one class. It never iterates over batches and never touches the Accelerator; the loop never
knows a task. Plugins import it from :mod:`accel_tasks.recipe`, which also gives them ``Seq2SeqRecipe`` (the
generative defaults of the text-to-text layer, accel_tasks/text2text/recipe.py) and the contract's values.

The loop calls the hooks in this order, and each hook may rely on what ran before it::

    Recipe(cfg)                      cfg: the resolved RunConfig (read-only); cfg.task is an instance of Options
    validate_options()               preflight: before any model or data is loaded
    load_data(splits)                -> DatasetDict with the splits the run needs (train / validation / test)
    has_references(dataset)          mode=predict only: are there references to score against?
    begin_run(context)               once: the run's decisions (RunContext: padding multiple, references)
    required_columns(split, cols)    checked against each raw split, before the model loads
    string_columns(split, cols)      their values checked (strings, no nulls), before the model loads
    check_raw(dataset, split)        the task's own checks of a raw split that need no model (rows, languages)
    load_model()                     sets self.model and self.processor
    settings_from_model(model)       eval only: what the trained model fixes (labels, vocab) wins over options,
    adopt_model_settings(settings)   adopted as the recipe's decisions (columns are checked again after it)
    peft_modules_to_save(model)      only when peft.* trains an adapter
    prepare_raw(dataset, split)      last fix-ups of a raw split (filter, rename, cast)
    prepare_stream(stream, split)    instead of prepare_raw for a streamed split: lazy (first rows, filter, rename)
    preprocess(batch, split)         raw rows -> features, through datasets.map(batched=True), cached
    collate(features)                features -> tensors, per batch
    training_loss(model, batch)      train only
    predict(model, batch)            eval: what postprocess needs, as tensors with the batch first
    postprocess(outputs, examples, features) -> EvalOutput, on the main process, in input order

State a recipe holds is its own or the run's, never set from outside: the run's decisions arrive once through
``begin_run``, and a setting the recipe decides at run time (``decide``: a length capped to the model, a language
found in the data) makes a new ``self.cfg``, which the loop saves as the run's settings. Getters return values
and set nothing.
"""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Optional, Union

import numpy as np

from accel_tasks import log
from accel_tasks.config import NoOptions, RunConfig
from accel_tasks.errors import ConfigError
from accel_tasks.generation import positions_limit
from accel_tasks.recipe_types import PAD_INT, EvalOutput, RunContext
from accel_tasks.settings import with_settings

if TYPE_CHECKING:
    import datasets
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

    Processor = Union[PreTrainedTokenizerBase, ProcessorMixin]
    Batch = dict[str, torch.Tensor]


class Recipe(ABC):
    """Base class of every recipe; subclasses fill in the hooks for their task.

    Class attributes a recipe sets:

    - ``name``: the ``recipe=NAME`` of the recipe (plugins get the entry-point name when unset).
    - ``Options``: a dataclass; its fields are the ``task.*`` settings, each field's docstring is its
      ``--help`` line, and ``self.options`` is the resolved instance.
    - ``default_metrics``: evaluate ids or paths to metric modules, used when ``eval.metrics`` is unset.
    - ``primary_metric``: the metric key that picks the best evaluation when ``eval.best_metric`` is unset.
    - ``auto_model_class`` / ``processor_class``: transformers Auto class names for the default loader.
    - ``sample_dir``: the bundled offline sample: ``{train,validation}.jsonl`` and ``model/``.
    - ``preset_file``: the YAML preset (not inherited); None: ``<module>.yaml`` beside the recipe's module (plugins).
    - ``length_column``: feature column whose length orders eval batches (``eval.group_by_length``).
    - ``pipeline_tag``: the Hugging Face task of the exported model (model card ``pipeline_tag`` and
      ``model-index`` task type), e.g. ``summarization``; None: the card names the recipe instead.
    - ``example_score_name`` / ``example_score_higher_is_better``: what :meth:`example_scores` returns
      (e.g. ``ROUGE-L``, higher is better); the run report ranks predictions by it.
    - ``stream_head_rows``: the first rows of a streamed split that ``prepare_stream`` looks at before training.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    default_metrics: ClassVar[tuple[str, ...]] = ()
    primary_metric: ClassVar[Optional[str]] = None
    supports_label_smoothing: ClassVar[bool] = False
    auto_model_class: ClassVar[str] = "AutoModel"
    processor_class: ClassVar[str] = "AutoTokenizer"
    sample_dir: ClassVar[Optional[Path]] = None
    preset_file: ClassVar[Optional[Path]] = None
    length_column: ClassVar[str] = "input_ids"
    pipeline_tag: ClassVar[Optional[str]] = None
    example_score_name: ClassVar[Optional[str]] = None
    example_score_higher_is_better: ClassVar[bool] = True
    # How many first rows of a streamed split prepare_stream may read before training (settings, checks).
    stream_head_rows: ClassVar[int] = 1000

    def __init__(self, cfg: RunConfig) -> None:
        # The run's settings as this recipe uses them: the resolved config (read-only once preflight is done),
        # replaced by a new one whenever the recipe decides a setting at run time (decide).
        self.cfg = cfg
        self.options = cfg.task
        self.model: Optional[PreTrainedModel] = None
        self.processor: Optional[Processor] = None
        # The run's decisions (begin_run); until then the defaults: no padding multiple, references present.
        self.context = RunContext()
        # Every setting decided at run time, dotted key -> value (decide): what the saved settings hold that the
        # command did not say.
        self.decisions: dict[str, Any] = {}

    # -- what the run decided ---------------------------------------------------------------------------
    def begin_run(self, context: RunContext) -> None:
        """Take the run's decisions; the loop calls it once, after load_data (and has_references) and before
        required_columns, so every data hook and collate see them. The model is not loaded yet: the data is read
        and checked first, so that a bad row is found in seconds, not after minutes of loading a large model.

        A recipe may extend it (calling ``super().begin_run(context)``) to check or derive what depends on the
        run.
        """
        self.context = context

    def adopt_model_settings(self, settings: Mapping[str, Any]) -> None:
        """Eval-only runs: the task options the trained model fixes (``settings_from_model``, only those that
        differ from the settings) become ``task.*`` decisions, so the saved settings say so too."""
        self.decide({f"task.{key}": value for key, value in settings.items()})

    @property
    def with_references(self) -> bool:
        """False only in mode=predict on inputs without references (see RunContext)."""
        return self.context.with_references

    @property
    def pad_to_multiple_of(self) -> Optional[int]:
        """8 under fp16/bf16, None in fp32 (see RunContext): collate pads lengths up to a multiple of it."""
        return self.context.pad_to_multiple_of

    def decide(self, settings: Mapping[str, Any]) -> None:
        """Settings decided at run time (dotted ``task.*`` / ``generation.*`` keys): ``self.cfg`` and
        ``self.options`` become a new config that holds them (the old one is left as it was, read-only).

        Why this way: the resolved config is read-only after preflight, and everything after it reads the
        settings from one place. The loop saves ``self.cfg`` as the run's settings (config.yaml, each
        checkpoint's and the export's accel_tasks_config.yaml), so a decision (a length capped to the model, a
        language found in the data) is written down, and an eval run of the export uses the same values.
        Only values that differ from the current ones are applied and recorded in ``self.decisions``. Call it
        from load_model, begin_run, prepare_raw or prepare_stream: the settings are saved after those hooks.
        """
        from omegaconf import OmegaConf

        changed = {key: value for key, value in settings.items() if OmegaConf.select(self.cfg, key) != value}
        if changed:
            self.cfg = with_settings(self.cfg, changed)
            self.options = self.cfg.task
            self.decisions.update(changed)

    @classmethod
    def preset_path(cls) -> Optional[Path]:
        """The recipe's YAML preset: its own ``preset_file``, else the ``.yaml`` beside its module; None when there
        is none.

        ``preset_file`` is not inherited: a subclass of a built-in recipe (a plugin) has its own preset or none.
        """
        path = cls.__dict__.get("preset_file") or Path(inspect.getfile(cls)).with_suffix(".yaml")
        return path if path.is_file() else None

    # -- checks that run before anything heavy ---------------------------------------------------
    def validate_options(self) -> None:
        """Raise ConfigError for task options that cannot work; runs in preflight, before model or data load."""

    # -- model and data ---------------------------------------------------------------------------
    def model_config_overrides(self) -> dict[str, Any]:
        """Model config values the task decides (e.g. num_labels), applied when a training run loads or builds the
        model.

        Not applied in eval-only runs: a trained model's config is the truth there (see settings_from_model).
        """
        return {}

    def settings_from_model(self, model: PreTrainedModel) -> dict[str, Any]:
        """Task options a trained model already fixes, e.g. ``{"labels": [...]}`` from its id2label.

        Eval-only runs call it after load_model; each value wins over the option of the same name (with a
        notice when they differ), so a label order typed differently cannot silently mis-score the model.
        """
        return {}

    def default_model_dir(self) -> Optional[Path]:
        """The model used when model.name_or_path is unset: the bundled sample's model/ unless a recipe says else.

        The one answer to "which is the offline default model" (preflight, loading and estimate-memory ask here).
        ``model.bundled=decoder_only`` picks the sample's ``model_decoder_only/`` where the recipe bundles one.
        """
        if self.sample_dir is None:
            return None
        if self.cfg.model.bundled == "encoder_decoder":
            return self.sample_dir / "model"
        path = self.sample_dir / f"model_{self.cfg.model.bundled}"
        if not path.is_dir():
            raise ConfigError(
                f"recipe={self.name} bundles no {self.cfg.model.bundled} model; unset model.bundled or pass "
                "model.name_or_path=<a hub id or local directory>"
            )
        return path

    def auto_model_class_for(self, config: PretrainedConfig) -> str:
        """The transformers Auto class that loads a model of this config: ``auto_model_class`` unless the recipe
        serves several model families (text-to-text: encoder-decoder or decoder-only)."""
        return self.auto_model_class

    def load_model(self) -> tuple[PreTrainedModel, Processor]:
        """Load (or build) the model and its processor; sets ``self.model`` and ``self.processor``."""
        from accel_tasks.models.loading import load_model_and_processor, load_model_config

        default_dir = self.default_model_dir() if self.cfg.model.name_or_path is None else None
        self.model, self.processor = load_model_and_processor(
            self.cfg.model,
            self.auto_model_class_for(load_model_config(self.cfg.model, default_dir)),
            self.processor_class,
            default_dir=default_dir,
            config_overrides=self.model_config_overrides() if self.cfg.mode == "train" else None,
        )
        return self.model, self.processor

    def cap_to_positions(self, model: PreTrainedModel, *keys: str) -> bool:
        """Cap each length setting (``task.x`` or ``generation.x``) to the model's position table, with a notice;
        the capped values are decisions (:meth:`decide`), saved with the run's settings.

        Why: a length above the table ends in an IndexError deep in the embedding, after training. Returns
        whether anything was capped; models with relative positions (no table) are left alone.
        """
        from omegaconf import OmegaConf

        limit = positions_limit(model)
        capped = {}
        for dotted in keys:
            value = OmegaConf.select(self.cfg, dotted)
            if limit is not None and value is not None and value > limit:
                log.info(f"{dotted}={value} is more than the model's {limit} positions; capped to {limit}")
                capped[dotted] = limit
        self.decide(capped)
        return bool(capped)

    def peft_modules_to_save(self, model: PreTrainedModel) -> list[str]:
        """Modules trained in full and saved with a PEFT adapter: the task head a pretrained model lacks.

        Called after load_model when peft.* trains an adapter and peft.modules_to_save is unset.
        """
        return []

    def read_data_file(self, path: Path) -> Optional[datasets.Dataset]:
        """A data file in a layout only this task knows (e.g. nested SQuAD json), or None for the common loader."""
        return None

    def load_data(self, splits: tuple[str, ...]) -> datasets.DatasetDict:
        """Raw examples as a DatasetDict holding ``splits`` (names: train / validation / test)."""
        from accel_tasks.data.raw import load_raw_datasets

        return load_raw_datasets(
            self.cfg.data,
            splits,
            sample_dir=self.sample_dir,
            read_file=self.read_data_file,
            required_columns=lambda columns: self.required_columns("train", columns),  # each data.mix source's
        )

    def required_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        """Columns a raw split must have, mapped to the option that names them (for the error hint).

        ``column_names`` are the split's columns, for recipes that pick known columns by name. Without
        references (``self.with_references`` False) only the input columns are required.
        """
        return {}

    def string_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        """The columns of a raw split whose every value must be a string (column -> the option naming it); each is
        checked before the model loads, and a null or a number there is refused with its rows named
        (data/values.py). Default: none; a recipe names the columns it tokenises as text."""
        return {}

    def check_raw(self, dataset: datasets.Dataset, split: str) -> None:
        """The task's own checks of a raw (map-style) split that need no model, run before the model loads: raise
        ConfigError naming the rows. Pure: it decides and sets nothing (``prepare_raw`` does, after the model).
        Default: none."""

    def has_references(self, dataset: datasets.Dataset) -> bool:
        """Whether a raw split carries what predictions are scored against; asked by mode=predict only.

        A recipe that can predict from inputs alone answers False for inputs without references; the
        default (True) means predict runs need the same columns as eval runs.
        """
        return True

    def prepare_raw(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        """Last chance to fix up a raw split (filter, rename, cast) before features are made."""
        return dataset

    def prepare_stream(self, stream: datasets.IterableDataset, split: str) -> datasets.IterableDataset:
        """prepare_raw for a streamed split (data.streaming=true): called instead of it, and must stay lazy.

        Why a hook of its own: a stream is read as training goes and may be larger than memory, so this must
        never read the whole of it. It may look at the first rows (``stream.take(N)``) to resolve settings
        (languages, columns), and drop, rename or fix up rows lazily (``stream.filter``, ``rename_columns``,
        ``map``); a bad row met mid-stream may raise ConfigError, which ends the run in one line.

        Default: a recipe that does not override prepare_raw has nothing to fix up, so the stream is returned
        unchanged. A recipe with a prepare_raw and no prepare_stream cannot stream (preflight says so in one
        line, see ``can_stream``).
        """
        if type(self).prepare_raw is not Recipe.prepare_raw:
            raise ConfigError(f"recipe={self.name} has a prepare_raw but no prepare_stream; set data.streaming=false")
        return stream

    @classmethod
    def can_stream(cls) -> bool:
        """Whether a streamed split can be prepared: prepare_raw untouched, or a prepare_stream written where the
        prepare_raw in use is, or below it (a plugin that overrides prepare_raw alone cannot stream)."""

        def owner(hook: str) -> type:
            return next(klass for klass in cls.__mro__ if hook in vars(klass))

        raw, stream = owner("prepare_raw"), owner("prepare_stream")
        return raw is Recipe or issubclass(stream, raw)

    def preprocess_fingerprint(self) -> str:
        """Part of the feature cache key: changes when the recipe's code changes."""
        return hashlib.sha256(Path(inspect.getfile(type(self))).read_bytes()).hexdigest()[:16]

    @abstractmethod
    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        """Raw examples -> model features; called through ``datasets.map(batched=True)``.

        ``batch`` maps each raw column to a list of values; the result maps feature columns to lists of the
        same length or longer (one example may become several features, e.g. QA windows).
        """

    def pack_train_features(self, features: datasets.Dataset, capacity: Optional[int]) -> datasets.Dataset:
        """train.packing: the training features packed into rows of ``capacity`` tokens (None: the recipe's
        default); only recipes whose models can attend per example within a row (decoder-only text) can."""
        raise ConfigError(f"recipe={self.name} cannot pack training examples; set train.packing=false")

    def collate(self, features: list[dict[str, Any]]) -> Batch:
        """Features (rows of the preprocessed dataset) -> padded tensors (dynamic padding by default)."""
        if self.pad_to_multiple_of:
            return self.processor.pad(features, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of)
        return self.processor.pad(features, return_tensors="pt")

    # -- training and evaluation ------------------------------------------------------------------
    def training_loss(self, model: PreTrainedModel, batch: Batch) -> torch.Tensor:
        """The scalar loss of one batch; the model's own loss by default."""
        return model(**batch).loss

    @abstractmethod
    def predict(self, model: PreTrainedModel, batch: Batch, *, synced_gpus: bool = False) -> dict[str, torch.Tensor]:
        """What evaluation needs from the model for one batch, as tensors with the batch first.

        The loop pads these across processes and batches (``PAD_INT`` for integer tensors, ``PAD_FLOAT`` for
        float tensors) and restores input order before postprocess() sees them. ``synced_gpus`` must be passed
        to ``generate`` (ZeRO-3 on several processes: every rank runs the same number of forward passes).
        """

    @abstractmethod
    def postprocess(
        self, outputs: dict[str, np.ndarray], examples: datasets.Dataset, features: datasets.Dataset
    ) -> EvalOutput:
        """Outputs of predict() for every eval feature -> metric inputs and records.

        ``outputs[key]`` has one row per feature of ``features`` (the preprocessed eval split, in its order);
        ``examples`` is the raw eval split after prepare_raw, one row per example. Recipes whose preprocess
        makes one feature per example read both row by row; QA maps feature windows back to examples.
        """

    def metric_probe(self) -> Optional[EvalOutput]:
        """A tiny prediction/reference pair shaped like this recipe's postprocess output, or None.

        Preflight scores it with every configured metric before anything loads, so a metric that cannot read
        this task's outputs fails in a second, not after training.
        """
        return None

    @classmethod
    def example_scores(cls, records: list[dict]) -> Optional[list[Optional[float]]]:
        """One score per predictions.jsonl record (``example_score_name``), None where a record has no reference.

        Why a hook: only the recipe knows its record keys and which per-example score matches its metric; the
        run report (``accel-tasks report``) shows the best and worst predictions by it. A class method, so the
        report needs no model or data. The default, None, means the recipe offers no per-example score.
        """
        return None

    def export_pipeline_tag(self) -> Optional[str]:
        """The hub pipeline of the exported model (model card ``pipeline_tag``): ``pipeline_tag`` unless the model
        loaded decides otherwise (a decoder-only summarizer is a ``text-generation`` model)."""
        return self.pipeline_tag

    def metrics(self) -> list[str]:
        """The metrics this run scores with: eval.metrics, else the recipe's default."""
        return list(self.cfg.eval.metrics or self.default_metrics)

    def metric_kwargs(self, metric: str) -> dict[str, Any]:
        """Keyword arguments for ``metric.compute``; ``eval.metric_args.<metric>`` wins over the recipe's."""
        user = self.cfg.eval.metric_args.get(metric) or self.cfg.eval.metric_args.get(Path(metric).name) or {}
        return {**self.default_metric_kwargs(metric), **dict(user)}

    def default_metric_kwargs(self, metric: str) -> dict[str, Any]:
        """The recipe's own ``compute`` arguments for a metric (e.g. ROUGE's stemmer)."""
        return {}

    def count_tokens(self, batch: Batch) -> int:
        """Tokens in a batch for the tokens/s log; padding is not counted."""
        if "attention_mask" in batch:
            return int(batch["attention_mask"].sum())
        labels = batch.get("labels")
        return int((labels != PAD_INT).sum()) if labels is not None else 0
