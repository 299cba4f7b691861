"""Question answering by generation (``recipe=extractive_qa task.answer_style=generate``).

The question and the context go into a prompt (``task.prompt_template``, fields {context} and {question}); a
decoder-only or encoder-decoder model writes the answer through the text-to-text layer (completion-only labels,
left-padded generation). Predictions are scored with the span recipe's squad / squad_v2 metrics on the same inputs,
and read the data the same way (qa/squad_data.py). SQuAD v2: an unanswerable question is trained to answer
``task.no_answer_reply``, and a generated reply equal to it is the empty prediction squad_v2 counts as no answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from accel_tasks import log
from accel_tasks.errors import ConfigError
from accel_tasks.recipe import EvalOutput, Seq2SeqRecipe, preview
from accel_tasks.recipes import PRESETS_DIR, SAMPLES_DIR
from accel_tasks.recipes.qa.answer_prompts import (
    answer_target,
    check_qa_template,
    fit_instructions,
    instruction_template,
    is_no_answer,
)
from accel_tasks.recipes.qa.options import AUTO, ExtractiveQAOptions
from accel_tasks.recipes.qa.squad_data import SquadData
from accel_tasks.text2text.prompts import PromptSpec

if TYPE_CHECKING:
    from pathlib import Path

    import datasets
    import numpy as np
    from transformers import PretrainedConfig

# The text-to-text layer's source: the whole instruction, its context already fitted (qa/answer_prompts.py).
INSTRUCTION = "instruction"


class GenerativeQARecipe(SquadData, Seq2SeqRecipe):
    """Answers written by a generative model, scored like spans; made by ExtractiveQARecipe(cfg) for
    task.answer_style=generate (a plugin for generated answers subclasses this class)."""

    name = "extractive_qa"
    Options = ExtractiveQAOptions
    sample_dir = SAMPLES_DIR / "extractive_qa"
    preset_file = PRESETS_DIR / "extractive_qa.yaml"
    pipeline_tag = "text-generation"
    source_field = INSTRUCTION

    # -- checks and model ---------------------------------------------------------------------------------
    def validate_options(self) -> None:
        if self.cfg.model.name_or_path is None:
            raise ConfigError(
                "task.answer_style=generate needs a generative model and extractive_qa bundles none; set "
                "model.name_or_path=<a decoder-only (Llama, Qwen, Gemma, GPT-2) or encoder-decoder (T5, BART) model>"
            )
        super().validate_options()
        check_qa_template(self.options.prompt_template)
        if self.options.null_score_diff_threshold == AUTO:
            raise ConfigError(
                f"task.null_score_diff_threshold={AUTO} tunes the span head's no-answer threshold, and generated "
                "answers have none (they learn task.no_answer_reply); unset it, or set task.answer_style=span"
            )
        if not isinstance(self.options.no_answer_reply, str):
            raise ConfigError("task.no_answer_reply must be a text, e.g. task.no_answer_reply=unanswerable")
        self.check_squad_options()

    def default_model_dir(self) -> Optional[Path]:
        """None: the sample has data only, and the packaged MiniLM cannot generate (validate_options says so)."""
        return None

    def auto_model_class_for(self, config: PretrainedConfig) -> str:
        """The generative class of the model's family; a model that cannot generate is one line before loading."""
        try:
            return super().auto_model_class_for(config)
        except ConfigError as exc:
            raise ConfigError(
                f"task.answer_style=generate: {exc}; or task.answer_style=span for a model with a question-answering "
                "head"
            ) from None

    def prompt_spec(self) -> PromptSpec:
        """The layer's prompt: the system prompt and the instruction, which this recipe renders per example."""
        return PromptSpec(
            template="{" + INSTRUCTION + "}", system_prompt=self.options.system_prompt or "", source_field=INSTRUCTION
        )

    def preprocess_fingerprint(self) -> str:
        return self.with_qa_code(super().preprocess_fingerprint())

    # -- data --------------------------------------------------------------------------------------------
    def prepare_raw(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        """The SQuAD rows (renamed, checked), then the layer's: one example shown, unlearnable ones dropped."""
        return super().prepare_raw(self.squad_rows(dataset, split), split)

    def prepare_stream(self, stream: datasets.IterableDataset, split: str) -> datasets.IterableDataset:
        return super().prepare_stream(self.squad_stream(stream, split), split)

    def source_texts(self, batch: dict[str, list]) -> list[str]:
        """The instructions as written, context uncut (what ``instructions`` fits to the model)."""
        template = instruction_template(self.options.source_prefix or "", self.options.prompt_template)
        return [template.format(context=c, question=q) for c, q in zip(batch["context"], batch["question"])]

    def target_texts(self, batch: dict[str, list]) -> list[str]:
        return [answer_target(answers, self.options.no_answer_reply) for answers in batch["answers"]]

    def instructions(self, batch: dict[str, list], targets: Optional[list[str]]) -> list[str]:
        """Each example's instruction with its context cut to what fits beside the prompt and the answer (training,
        decoder-only: the example's own completion; generation: generation.max_new_tokens)."""
        backend = self.text_backend()
        count = len(batch["context"])
        if backend.is_encoder_decoder:
            budgets = [self.options.max_source_length - self.processor.num_special_tokens_to_add(pair=False)] * count
        elif targets is None:
            budgets = [backend.source_budget(backend.limits.max_new_tokens)] * count
        else:
            budgets = [backend.source_budget(len(ids)) for ids in backend.completion_ids(targets)]
        template = instruction_template(self.options.source_prefix or "", self.options.prompt_template)
        return fit_instructions(self.processor, template, list(batch["context"]), list(batch["question"]), budgets)

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        backend = self.text_backend()
        wants_targets = self.with_references and (backend.is_encoder_decoder or split == "train")
        targets = self.target_texts(batch) if wants_targets else None
        return backend.features(self.instructions(batch, targets), targets)

    def show_example(self, rows: dict[str, list], split: str) -> None:
        """One example as the model reads it (its context cut as in training), before training or scoring."""
        if (split == "train") != (self.cfg.mode == "train") or not rows or not next(iter(rows.values()), None):
            return
        first = {key: values[:1] for key, values in rows.items()}
        target = self.target_texts(first)[0] if split == "train" else None
        source = self.instructions(first, None if target is None else [target])[0]
        log.info(f"{split} example: {self.text_backend().describe(source, target)}")

    # -- scoring ------------------------------------------------------------------------------------------
    def postprocess(
        self, outputs: dict[str, np.ndarray], examples: datasets.Dataset, features: datasets.Dataset
    ) -> EvalOutput:
        """Generated replies -> squad / squad_v2 metric inputs (the span recipe's) and one record per question."""
        replies = self.decode(outputs["generated_tokens"])
        rows = examples[:]
        v2 = self.options.version_2_with_negative
        predictions: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        for qid, question, context, reply in zip(rows["id"], rows["question"], rows["context"], replies):
            no_answer = v2 and is_no_answer(reply, self.options.no_answer_reply)
            prediction: dict[str, Any] = {"id": str(qid), "prediction_text": "" if no_answer else reply}
            if v2:
                prediction["no_answer_probability"] = 1.0 if no_answer else 0.0
            predictions.append(prediction)
            shown = preview(f"{question} | {context}")
            records.append({"id": str(qid), "input": shown, **prediction, "generated": reply})
        references = self.squad_references(examples)
        for record, reference in zip(records, references or ()):
            record["answers"] = reference["answers"]["text"]
        return EvalOutput(predictions=predictions, references=references, records=records)
