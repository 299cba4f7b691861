"""What both QA recipes (span head and generated answers) do alike: SQuAD files, columns, row checks, metrics.

Why a mixin: the span recipe is a plain Recipe and the generative one a Seq2SeqRecipe, yet they read the same data
the same way and are scored by the same squad / squad_v2 metrics on the same inputs. Written once here, a fix to
the data path (a new file layout, a row check) reaches both answer styles.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from accel_tasks.errors import ConfigError, list_rows
from accel_tasks.recipe import EvalOutput
from accel_tasks.recipes.qa.errors import QADataError
from accel_tasks.recipes.qa.span_features import validate_examples
from accel_tasks.recipes.qa.squad_format import NESTED, flat_rows_under_data, flatten_squad, squad_json_layout

if TYPE_CHECKING:
    import datasets

# The column names accel_tasks.recipes.qa works on; the recipes rename the user's columns to these.
STANDARD_COLUMNS = ("question", "context", "answers", "id")
# Bad rows quoted in full in the one error message; the rest are counted.
_SHOWN_PROBLEMS = 20
_COLUMN_OPTIONS = {
    "question": "question_column",
    "context": "context_column",
    "answers": "answer_column",
    "id": "id_column",
}


def as_config_error(exc: QADataError) -> ConfigError:
    """QA data errors are user mistakes: the CLI reports them as one line, like every config error."""
    return ConfigError(str(exc))


class SquadData:
    """SQuAD data and scoring for a QA recipe (mixed in before its Recipe base; uses its cfg, options, context)."""

    default_metrics: ClassVar[tuple[str, ...]] = ("squad",)
    primary_metric: ClassVar[Optional[str]] = "f1"
    example_score_name: ClassVar[Optional[str]] = "F1"

    # -- checks -------------------------------------------------------------------------------------------
    def check_squad_options(self) -> None:
        """Four different column names, and a metric that matches task.version_2_with_negative."""
        opts = self.options
        names = [getattr(opts, option) for option in _COLUMN_OPTIONS.values()]
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

    def metrics(self) -> list[str]:
        if self.cfg.eval.metrics:
            return list(self.cfg.eval.metrics)
        return ["squad_v2"] if self.options.version_2_with_negative else list(self.default_metrics)

    def metric_probe(self) -> EvalOutput:
        """One answered question in the shape postprocess gives the squad / squad_v2 metrics."""
        prediction: dict[str, Any] = {"id": "probe", "prediction_text": "Paris"}
        if self.options.version_2_with_negative:
            prediction["no_answer_probability"] = 0.0
        reference = {"id": "probe", "answers": {"text": ["Paris"], "answer_start": [0]}}
        return EvalOutput(predictions=[prediction], references=[reference], records=[])

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

    @staticmethod
    def with_qa_code(fingerprint: str) -> str:
        """A feature-cache key that also changes with the QA task logic's code (windows, labels, prompts)."""
        digest = hashlib.sha256(fingerprint.encode())
        for path in sorted(Path(__file__).parent.glob("*.py")):
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]

    # -- files and columns --------------------------------------------------------------------------------
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

    def _column_options(self) -> dict[str, str]:
        """{standard column: the user's column} from the task options."""
        return {std: getattr(self.options, option) for std, option in _COLUMN_OPTIONS.items()}

    def required_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        columns = self._column_options()
        if not self.with_references:
            columns.pop("answers")
        return {column: f"task.{_COLUMN_OPTIONS[std]}" for std, column in columns.items()}

    def string_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        """Questions and contexts are text in every row (answers and ids have checks of their own: squad_rows)."""
        options = self._column_options()
        return {options[std]: f"task.{_COLUMN_OPTIONS[std]}" for std in ("question", "context")}

    def has_references(self, dataset: datasets.Dataset) -> bool:
        return self.options.answer_column in dataset.column_names

    # -- rows -----------------------------------------------------------------------------------------------
    def check_raw(self, dataset: datasets.Dataset, split: str) -> None:
        """Every row's answers checked (answer_start inside the context, the text there, ids unique) before the
        model loads; prepare_raw checks again on the renamed split it keeps."""
        self.squad_rows(dataset, split)

    def squad_rows(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        """The user's columns renamed to the standard ones, then bad rows refused with one error naming them all."""
        if not self.with_references:
            # Questions alone (mode=predict): no answers, which the shared row checks read as unanswerable.
            dataset = dataset.add_column(self.options.answer_column, [{"text": [], "answer_start": []}] * len(dataset))
        dataset = self._standard_columns(dataset)
        self._check_rows(dataset, f"the {split} data")
        return dataset

    def squad_stream(self, stream: datasets.IterableDataset, split: str) -> datasets.IterableDataset:
        """squad_rows for a stream: the same renames, lazily; the same row checks on the first ``stream_head_rows``
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

    def squad_references(self, examples: datasets.Dataset) -> Optional[list[dict]]:
        """The metric references (``{"id", "answers"}`` per example), None without references (mode=predict)."""
        from accel_tasks.recipes.qa.postprocess import squad_references

        return squad_references(examples) if self.with_references else None
