"""Translation: text in one language in, text in another out, scored with sacreBLEU and chrF.

Generation, decoding, gathering and export are Seq2SeqRecipe's. This module only knows where the two
texts are (a WMT/OPUS-style ``translation: {"en": ..., "ro": ...}`` column or flat columns), what the
model expects around them (a T5 task prefix, or mBART / NLLB / M2M100 language codes), and which rows
cannot be used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from accel_tasks import log
from accel_tasks.config import RunConfig
from accel_tasks.errors import ConfigError, list_rows
from accel_tasks.recipe import EvalOutput, Seq2SeqOptions, Seq2SeqRecipe, preview
from accel_tasks.recipes import PRESETS_DIR, SAMPLES_DIR
from accel_tasks.recipes.languages import (
    T5_MODEL_TYPES,
    default_prefix,
    language_code_id,
    language_codes,
    language_name,
    pick_language_code,
)
from accel_tasks.recipes.translation_cells import metric_references, source_token_counts, text_list, text_of

if TYPE_CHECKING:
    import datasets

TOKENIZE_CHUNK = 1000


@dataclass
class TranslationOptions(Seq2SeqOptions):
    source_prefix: Optional[str] = None
    """None: "translate English to Romanian: " style for T5 models when both languages are known by name, else ""."""
    max_source_length: int = 128
    max_target_length: int = 128
    source_lang: Optional[str] = None
    """Keys of the translation column (e.g. en, ro); with one of them unset, the other key of a two-language column."""
    target_lang: Optional[str] = None
    """Target language key of the translation column (e.g. ro)."""
    translation_column: str = "translation"
    """The WMT/OPUS-style column holding {language: text} per row."""
    source_column: Optional[str] = None
    """Flat columns instead of the translation column; a target cell may hold a list of references."""
    target_column: Optional[str] = None
    """Flat target column (a cell may hold a list of references)."""
    references_column: Optional[str] = None
    """A column with a list of reference translations per row (scored against all of them)."""
    source_lang_code: Optional[str] = None
    """Language-code tokenizers (mBART, NLLB, M2M100); None: derived from source_lang / target_lang
    (en -> en_XX, eng_Latn, en)."""
    target_lang_code: Optional[str] = None
    """Target language code of a language-code tokenizer; None: derived from target_lang."""
    prompt_template: str = "Translate this {source_lang} text to {target_lang}:\n{source}\n{target_lang}:"
    """Decoder-only models: the instruction with the source ({source}) and the languages' names ({source_lang},
    {target_lang}); the user turn of the tokenizer's chat template, or plain text followed by the translation."""


def _report(message: str) -> None:
    """A line the user should see once (languages resolved, rows dropped, sources truncated), on the run's console."""
    log.info(f"translation: {message}")


def _rows(indices: Sequence[int]) -> str:
    return f"row{'s' if len(indices) > 1 else ''} {list_rows(indices, quote=False)}"


class TranslationRecipe(Seq2SeqRecipe):
    """Seq2seq preprocessing for language pairs; everything after tokenisation is shared."""

    name = "translation"
    Options = TranslationOptions
    default_metrics = ("sacrebleu", "chrf")
    primary_metric = "sacrebleu"
    sample_dir = SAMPLES_DIR / "translation"
    preset_file = PRESETS_DIR / "translation.yaml"
    pipeline_tag = "translation"
    example_score_name = "chrF"
    prompt_value_names = ("source_lang", "target_lang")

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.extra_generation: dict[str, Any] = {}
        self._model_inputs_ready = False

    def prompt_values(self) -> dict[str, str]:
        """The languages' English names for the prompt (en -> English), else their keys, else the column names."""
        opts = self.options
        flat = (opts.source_column, opts.target_column or opts.references_column)
        values = {}
        for field, lang, column in zip(self.prompt_value_names, (opts.source_lang, opts.target_lang), flat):
            values[field] = language_name(lang) or lang or column or field.replace("_lang", " language")
        return values

    # -- options -----------------------------------------------------------------------------------
    def validate_options(self) -> None:
        super().validate_options()
        opts = self.options
        if opts.target_column and not opts.source_column:
            raise ConfigError("task.target_column is set but task.source_column is not; set both for flat columns")
        if opts.source_column and not (opts.target_column or opts.references_column):
            raise ConfigError(
                "task.source_column is set but task.target_column is not; set task.target_column=<column>"
            )
        if opts.source_lang is not None and opts.source_lang == opts.target_lang:
            raise ConfigError(
                f"task.source_lang and task.target_lang are both {opts.source_lang!r}; set two different languages"
            )

    # -- where the texts are -----------------------------------------------------------------------
    def flat_columns(self, column_names: Sequence[str]) -> Optional[tuple[str, Optional[str]]]:
        """(source, target) flat columns: task.source_column/target_column, or columns named after the languages."""
        opts = self.options
        if opts.source_column:
            return opts.source_column, opts.target_column
        if opts.translation_column in column_names:
            return None
        if opts.source_lang in column_names and opts.target_lang in column_names:
            return opts.source_lang, opts.target_lang
        if opts.source_lang in column_names and not self.with_references:
            return opts.source_lang, None
        return None

    def has_references(self, dataset: datasets.Dataset) -> bool:
        """Targets or references in the data: a target column, the target language in the translation column."""
        opts = self.options
        names = dataset.column_names
        if opts.references_column:
            return opts.references_column in names
        if opts.source_column:
            return opts.target_column in names
        if opts.translation_column not in names:
            return opts.source_lang not in names or opts.target_lang in names
        rows = dataset.select(range(min(len(dataset), 100)))[opts.translation_column]
        keys = {key for row in rows if isinstance(row, dict) for key, text in row.items() if text is not None}
        return opts.target_lang in keys if opts.target_lang else len(keys) > 1

    def required_columns(self, split: str, column_names: list[str]) -> dict[str, str]:
        opts = self.options
        required: dict[str, str] = {}
        flat = self.flat_columns(column_names)
        if flat is not None:
            required[flat[0]] = "task.source_column"
            if flat[1] is not None and self.with_references and (split == "train" or not opts.references_column):
                required[flat[1]] = "task.target_column"
        elif opts.translation_column in column_names:
            required[opts.translation_column] = "task.translation_column"
        else:
            raise ConfigError(
                f"the {split} data has no {opts.translation_column!r} column (columns: {', '.join(column_names)}); "
                "set task.source_column=<col> task.target_column=<col> for flat columns, "
                "or task.translation_column=<col>"
            )
        if opts.references_column and split != "train" and self.with_references:
            required[opts.references_column] = "task.references_column"
        return required

    def source_values(self, batch: dict[str, list]) -> list[Optional[str]]:
        """Source cells of a raw batch; None where the row has none."""
        flat = self.flat_columns(list(batch))
        if flat is not None:
            return [text_of(v) for v in batch[flat[0]]]
        lang = self.options.source_lang
        return [
            text_of(row.get(lang)) if isinstance(row, dict) else None for row in batch[self.options.translation_column]
        ]

    def target_values(self, batch: dict[str, list]) -> list[Optional[list[str]]]:
        """Target cells of a raw batch as lists of strings (several when a cell holds references); None where
        missing."""
        flat = self.flat_columns(list(batch))
        if flat is not None:
            if flat[1] is None or flat[1] not in batch:
                return [None] * len(batch[flat[0]])
            return [text_list(v) for v in batch[flat[1]]]
        lang = self.options.target_lang
        return [
            text_list(row.get(lang)) if isinstance(row, dict) else None
            for row in batch[self.options.translation_column]
        ]

    def reference_values(self, batch: dict[str, list]) -> list[Optional[list[str]]]:
        """What predictions are scored against: task.references_column when set, else the target cells."""
        column = self.options.references_column
        if column and column in batch:
            return [text_list(v) for v in batch[column]]
        return self.target_values(batch)

    def source_texts(self, batch: dict[str, list]) -> list[str]:
        return [text or "" for text in self.source_values(batch)]

    def target_texts(self, batch: dict[str, list]) -> list[str]:
        """The first non-empty target (or reference) of each row is what the model learns."""
        targets = self.target_values(batch)
        if all(t is None for t in targets):
            targets = self.reference_values(batch)
        return [next((t for t in (cell or []) if t.strip()), "") for cell in targets]

    def reference_lists(self, batch: dict[str, list]) -> list[list[str]]:
        return [[r for r in (cell or []) if r.strip()] for cell in self.reference_values(batch)]

    def reference_texts(self, examples: datasets.Dataset) -> list:
        return metric_references(self.reference_lists(examples[:]))

    # -- fixing up raw data ------------------------------------------------------------------------
    def prepare_raw(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        """Resolve languages and model inputs once, drop rows that cannot be used, count sources that will be cut."""
        batch = self.text_columns(dataset)
        if self.flat_columns(dataset.column_names) is None:
            self.decide(self.resolve_languages(batch[self.options.translation_column], split))
        self.configure_model_inputs()
        keep = self.usable_rows(batch, split, dataset.column_names)
        if len(keep) < len(dataset):
            dataset = dataset.select(keep)
        truncated = self.count_truncated(dataset)
        if truncated:
            _report(
                f"{split}: {truncated} of {len(dataset)} sources are longer than task.max_source_length="
                f"{self.options.max_source_length} tokens and are truncated"
            )
        return super().prepare_raw(dataset, split)

    def check_raw(self, dataset: datasets.Dataset, split: str) -> None:
        """The languages checked against the translation column's rows before the model loads (prepare_raw
        decides them, after the model: the language codes need its tokenizer)."""
        if self.flat_columns(dataset.column_names) is None:
            self.resolve_languages(dataset[self.options.translation_column], split)

    def text_columns(self, dataset: datasets.Dataset) -> dict[str, list]:
        """Only the columns holding texts, as lists (other columns may be large)."""
        opts = self.options
        wanted = [opts.translation_column, opts.references_column, *(self.flat_columns(dataset.column_names) or ())]
        columns = [c for c in dict.fromkeys(wanted) if c and c in dataset.column_names]
        return dataset.select_columns(columns)[:]

    def resolve_languages(self, rows: list, split: str) -> dict[str, str]:
        """Check task.source_lang / target_lang against the translation column's rows; fill in the other of two
        languages. The two as settings to decide (``task.source_lang`` / ``task.target_lang``); nothing is set."""
        opts = self.options
        column = opts.translation_column
        if any(row is not None and not isinstance(row, dict) for row in rows[:100]):
            raise ConfigError(
                f'column {column!r} must hold {{language: text}} mappings such as {{"en": "...", "ro": "..."}}; '
                "for plain text columns set task.source_column=<col> task.target_column=<col>"
            )
        keys = sorted({key for row in rows if isinstance(row, dict) for key in row})
        have = ", ".join(keys) or "none"
        source, target = opts.source_lang, opts.target_lang
        if not self.with_references:
            # Sources only (mode=predict): the target language cannot come from the data.
            if target is None:
                raise ConfigError(
                    f"the {split} data has no targets, so the target language is unknown; set task.target_lang=<code>"
                )
            if source is None and len(keys) == 1:
                source = keys[0]
        if source is None or target is None:
            given = source if source is not None else target
            others = [key for key in keys if key != given]
            if given is None or len(others) != 1 or given not in keys:
                raise ConfigError(
                    f"set task.source_lang and task.target_lang to keys of the {column!r} column (it has: {have})"
                )
            source, target = (given, others[0]) if target is None else (others[0], given)
            _report(f"task.source_lang={source} task.target_lang={target} (the two languages of the {column!r} column)")
        read = f"its {len(rows)} rows" + (f" ({self._limit_setting(split)})" if self._limit_setting(split) else "")
        for side, lang in (("source", source), ("target", target)):
            if lang not in keys and (side == "source" or self.with_references):
                raise ConfigError(
                    f"task.{side}_lang={lang!r} is not a language of the {split} {column!r} column: {read} have {have}"
                )
        return {"task.source_lang": source, "task.target_lang": target}

    def _limit_setting(self, split: str) -> str:
        """'data.max_train_samples=2' where that setting cut this split (a message then says so), else ''."""
        key = "max_train_samples" if split == "train" else "max_eval_samples"
        limit = getattr(self.cfg.data, key)
        return f"data.{key}={limit}" if limit is not None else ""

    def configure_model_inputs(self) -> None:
        """Language codes for mBART / NLLB / M2M100 tokenizers and the T5 prefix; once, after the languages are
        known. The codes and the prefix chosen are decisions (saved with the run's settings); the tokenizer's
        src_lang / tgt_lang and the generation settings are the recipe's own."""
        if self._model_inputs_ready:
            return
        opts = self.options
        decided: dict[str, Any] = {}
        tokenizer = self.processor
        codes = language_codes(tokenizer)
        tokenizer_name = type(tokenizer).__name__
        if codes is not None:
            source_code = pick_language_code(codes, opts.source_lang_code, opts.source_lang, "source", tokenizer_name)
            target_code = pick_language_code(codes, opts.target_lang_code, opts.target_lang, "target", tokenizer_name)
            tokenizer.src_lang = source_code
            tokenizer.tgt_lang = target_code
            decided.update({"task.source_lang_code": source_code, "task.target_lang_code": target_code})
            self.extra_generation = self.language_generation_settings(target_code)
        elif opts.source_lang_code or opts.target_lang_code:
            raise ConfigError(
                f"task.source_lang_code / task.target_lang_code are set but the {tokenizer_name} tokenizer "
                "has no language codes; unset them"
            )
        if opts.source_prefix is None:
            model_type = getattr(getattr(self.model, "config", None), "model_type", None)
            prefix = default_prefix(model_type, opts.source_lang, opts.target_lang)
            if prefix is None and model_type in T5_MODEL_TYPES:
                _report(
                    "T5 model without a task prefix (a language has no known name); "
                    'set task.source_prefix="translate X to Y: "'
                )
            decided["task.source_prefix"] = prefix or ""
        self.decide(decided)
        self._model_inputs_ready = True

    def language_generation_settings(self, target_code: str) -> dict[str, Any]:
        """Where the target language code goes at generation time.

        Tokenizers that start targets with the code (mBART-50, NLLB, M2M100) need it forced as the first generated
        token; mBART-cc25 style ones end targets with it and start decoding from it instead.
        """
        tokenizer = self.processor
        target_id = language_code_id(tokenizer, target_code)
        labels = tokenizer(text_target="a")["input_ids"]
        if labels and labels[0] == target_id:
            return {"forced_bos_token_id": target_id}
        config = getattr(self.model, "config", None)
        if config is not None and getattr(config, "decoder_start_token_id", None) is None:
            return {"decoder_start_token_id": target_id}
        return {}

    def usable_rows(self, batch: dict[str, list], split: str, column_names: Sequence[str]) -> list[int]:
        """Indices of rows with a source and a target; the others are named in a warning, and none left is an error."""
        problems: dict[str, list[int]] = {}
        keep: list[int] = []
        for index, reason in enumerate(self.row_problems(batch, split, column_names)):
            if reason is None:
                keep.append(index)
            else:
                problems.setdefault(reason, []).append(index)
        if not problems:
            return keep
        details = "; ".join(f"{len(rows)} with {reason} ({_rows(rows)})" for reason, rows in problems.items())
        if not keep:
            raise ConfigError(
                f"the {split} data has no usable rows: {details}; check task.source_lang/task.target_lang "
                "or task.source_column/task.target_column"
            )
        total = len(keep) + sum(len(rows) for rows in problems.values())
        _report(f"{split}: dropped {total - len(keep)} of {total} rows that cannot be used: {details}")
        return keep

    def row_problems(self, batch: dict[str, list], split: str, column_names: Sequence[str]) -> list[Optional[str]]:
        """Why each row of a raw batch cannot be used (no or an empty source or target), None for a usable row.

        The one rule for both paths: usable_rows applies it to a whole map-style split, prepare_stream to each
        batch of a stream as it is read. (Whether targets come from task.references_column when a train batch
        has no target cells at all is decided per batch: the whole split on the map-style path.)
        """
        sources = self.source_values(batch)
        targets = self.target_values(batch)
        if split != "train" or all(t is None for t in targets):
            targets = self.reference_values(batch)
        source_name, target_name = self.side_names(column_names, split)
        reasons: list[Optional[str]] = []
        for source, target in zip(sources, targets):
            reason = None
            if source is None:
                reason = f"no {source_name}"
            elif not source.strip():
                reason = f"an empty {source_name}"
            elif not self.with_references:
                pass  # sources only (mode=predict)
            elif target is None:
                reason = f"no {target_name}"
            elif not any(t.strip() for t in target):
                reason = f"an empty {target_name}"
            reasons.append(reason)
        return reasons

    def usable_mask(self, batch: dict[str, list], split: str, column_names: Sequence[str]) -> list[bool]:
        """row_problems as a keep-mask, for ``IterableDataset.filter(batched=True)``."""
        return [reason is None for reason in self.row_problems(batch, split, column_names)]

    # -- streamed train data -------------------------------------------------------------------------
    def prepare_stream(self, stream: datasets.IterableDataset, split: str) -> datasets.IterableDataset:
        """prepare_raw for a stream: languages and model inputs from the first ``stream_head_rows`` rows, unusable
        rows dropped lazily by the same rule (row_problems), truncated sources counted over those first rows only."""
        columns = list(stream.column_names)
        head_rows = list(stream.take(self.stream_head_rows))
        head = {column: [row.get(column) for row in head_rows] for column in columns}
        if self.flat_columns(columns) is None:
            self.decide(self.resolve_languages(head[self.options.translation_column], split))
        self.configure_model_inputs()
        reasons = self.row_problems(head, split, columns)
        kept = [index for index, reason in enumerate(reasons) if reason is None]
        dropped = len(reasons) - len(kept)
        if not kept:
            raise ConfigError(
                f"the {split} stream has no usable rows among its first {len(reasons)}: "
                f"{sorted({r for r in reasons if r})}; "
                "check task.source_lang/task.target_lang or task.source_column/task.target_column"
            )
        flat = self.flat_columns(columns)
        column, lang = (flat[0], None) if flat else (self.options.translation_column, self.options.source_lang)
        kept_head = {key: [values[i] for i in kept] for key, values in head.items()}
        counts = source_token_counts(kept_head, self.processor, column, lang, self.options.source_prefix or "")[
            "source_tokens"
        ]
        truncated = sum(n > self.options.max_source_length for n in counts)
        _report(
            f"{split}: streamed; rows without a source or target are dropped as they are read "
            f"({dropped} of the first {len(reasons)}); {truncated} of the first {len(kept)} usable sources "
            "are longer than "
            f"task.max_source_length={self.options.max_source_length} tokens and are truncated"
        )
        usable = stream.filter(self.usable_mask, batched=True, fn_kwargs={"split": split, "column_names": columns})
        return super().prepare_stream(usable, split)

    def side_names(self, column_names: Sequence[str], split: str) -> tuple[str, str]:
        """How messages name the source and target cells."""
        flat = self.flat_columns(column_names)
        source = f"{flat[0]!r} text" if flat else f"{self.options.source_lang!r} text"
        target = f"{flat[1]!r} text" if flat and flat[1] else f"{self.options.target_lang!r} text"
        if self.options.references_column and (split != "train" or (flat and not flat[1])):
            target = f"reference in {self.options.references_column!r}"
        return source, target

    def count_truncated(self, dataset: datasets.Dataset) -> int:
        """Sources (with prefix and special tokens) longer than task.max_source_length tokens.

        Token counts go through a cached ``datasets.map``, so only a first run pays for the extra tokenisation.
        """
        flat = self.flat_columns(dataset.column_names)
        column, lang = (flat[0], None) if flat else (self.options.translation_column, self.options.source_lang)
        counts = dataset.map(
            source_token_counts,
            batched=True,
            batch_size=TOKENIZE_CHUNK,
            remove_columns=dataset.column_names,
            fn_kwargs={
                "tokenizer": self.processor,
                "column": column,
                "lang": lang,
                "prefix": self.options.source_prefix or "",
            },
            load_from_cache_file=not self.cfg.data.overwrite_cache,
            desc="counting source tokens",
        )
        return int(sum(n > self.options.max_source_length for n in counts["source_tokens"]))

    # -- generation and outputs --------------------------------------------------------------------
    def generation_kwargs(self) -> dict[str, Any]:
        kwargs = super().generation_kwargs()
        for key, value in self.extra_generation.items():
            kwargs.setdefault(key, value)
        return kwargs

    def postprocess(
        self, outputs: dict[str, np.ndarray], examples: datasets.Dataset, features: datasets.Dataset
    ) -> EvalOutput:
        predictions = self.decode(outputs["generated_tokens"])
        batch = examples[:]
        sources = self.source_texts(batch)
        ids = batch["id"] if "id" in batch else list(range(len(examples)))
        records = [
            {"id": example_id, "input": preview(source), "prediction": prediction}
            for example_id, source, prediction in zip(ids, sources, predictions)
        ]
        if not self.with_references:
            return EvalOutput(predictions=predictions, references=None, records=records)
        references = self.reference_lists(batch)
        for record, refs in zip(records, references):
            record["references"] = refs
        return EvalOutput(predictions=predictions, references=metric_references(references), records=records)

    @classmethod
    def example_scores(cls, records: list[dict]) -> Optional[list[Optional[float]]]:
        """Sentence chrF (sacreBLEU's defaults, 0-100) of each translation against all of its references."""
        from sacrebleu.metrics import CHRF

        chrf = CHRF()
        return [
            chrf.sentence_score(record["prediction"], record["references"]).score if record.get("references") else None
            for record in records
        ]
