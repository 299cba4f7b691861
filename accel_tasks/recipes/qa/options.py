"""The ``task.*`` options of ``recipe=extractive_qa``, for both answer styles.

Why one dataclass for both: the settings are resolved (presets, ``--help``, saved run configs) from the one class
``recipe=extractive_qa`` names, before ``task.answer_style`` picks the span recipe or the generative one. The
generative fields come from the text-to-text layer's options (inherited, so a field the layer adds reaches this
recipe too); the span recipe refuses the generative ones a user changed, so a prompt set without
``task.answer_style=generate`` is not silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Union

from accel_tasks.recipe import Seq2SeqOptions

SPAN = "span"
GENERATE = "generate"
ANSWER_STYLES = (SPAN, GENERATE)
# task.null_score_diff_threshold=auto: apply the threshold tuned on the validation split (qa/null_threshold.py).
AUTO = "auto"
DEFAULT_PROMPT = "Answer the question from the context.\nContext: {context}\nQuestion: {question}\nAnswer:"
# The template fields of task.prompt_template: {context} is the source (the part cut to fit), {question} the other.
CONTEXT_FIELD = "context"
QUESTION_FIELD = "question"


@dataclass
class ExtractiveQAOptions(Seq2SeqOptions):
    answer_style: str = SPAN
    """span: a question-answering head picks the answer in the context (encoders, and decoder-only models with a QA
    head class: Llama, Qwen2, GPT-2, Mistral ...); generate: a decoder-only or encoder-decoder model writes the answer
    from a prompt (task.prompt_template), scored with the same squad / squad_v2 metrics."""
    question_column: str = "question"
    """Column holding the question."""
    context_column: str = "context"
    """Column holding the passage the answer is taken from."""
    answer_column: str = "answers"
    """Column holding {text: [...], answer_start: [...]} (SQuAD layout)."""
    id_column: str = "id"
    """Column naming each question in predictions.jsonl and errors."""
    version_2_with_negative: bool = False
    """SQuAD v2: questions may be unanswerable (empty answers), scored with squad_v2."""
    max_seq_length: int = 384
    """span: tokens per window (question + context + special tokens); longer contexts become several windows."""
    doc_stride: int = 128
    """span: tokens shared by consecutive windows of one context."""
    n_best_size: int = 20
    """span: start and end candidates per window crossed into answer spans."""
    max_answer_length: int = 30
    """span: longest answer in tokens."""
    null_score_diff_threshold: Union[float, int, str] = 0.0
    """span, v2: predict "" when null score - best span score exceeds this (as a no-answer probability, sigmoid of
    it). auto: the threshold of the best F1 on the validation split, tuned by the training run's last eval and saved
    with its export (task.tuned_null_score_diff_threshold); in training, each eval's own."""
    tuned_null_score_diff_threshold: Optional[float] = None
    """span, v2: written by training: the null_score_diff_threshold of the final eval's best_f1 (its sigmoid is
    best_f1_thresh); what null_score_diff_threshold=auto applies in eval and predict runs."""
    pad_to_max_length: bool = False
    """span: pad every window to max_seq_length (fixed shapes, e.g. for TPUs); otherwise pad per batch."""
    no_answer_reply: str = "unanswerable"
    """generate, v2: the reply learned for an unanswerable question; a generated reply equal to it (case, spaces and
    end punctuation aside) is the empty prediction squad_v2 scores as "no answer"."""
    # Redefined with QA defaults (a redefined field keeps the layer's place in --help).
    prompt_template: str = DEFAULT_PROMPT
    """generate, decoder-only models: the instruction with {context} and {question}; the context is the part cut to
    fit task.max_source_length and the model's context. Encoder-decoder models read the same text as their source."""
    max_source_length: int = 512
    """generate: tokens of the whole instruction (template, question and context); the context is cut to fit."""
    max_target_length: int = 32
    """generate: answer tokens kept for training (encoder-decoder); also the default generation.max_new_tokens."""


# The options only the generative recipe reads: the span recipe refuses them when they differ from the defaults.
GENERATIVE_ONLY = ("no_answer_reply", *(f.name for f in fields(Seq2SeqOptions)))


def changed_generative_options(options: object) -> list[str]:
    """The generative-only options set to something other than their default (a span run does not read them)."""
    defaults = ExtractiveQAOptions()
    return [name for name in GENERATIVE_ONLY if getattr(options, name, None) != getattr(defaults, name)]
