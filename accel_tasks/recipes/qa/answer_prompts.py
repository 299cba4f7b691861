"""Generated answers: the QA prompt with its context cut to fit, the answer learned, and the no-answer reply.

Why the recipe fits the context itself: the text-to-text layer cuts the end of its source, and holds every other
template field as a constant of the run (a language name); a question differs per example and must never be cut.
So the whole instruction (``task.prompt_template`` with ``{context}`` and ``{question}``) is the layer's source,
rendered here with as much of the context as the token budget allows: the context alone is cut, at a token
boundary, and the layer finds nothing left to cut.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING, Any, Mapping

from accel_tasks.errors import ConfigError
from accel_tasks.recipes.qa.options import CONTEXT_FIELD, QUESTION_FIELD

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def check_qa_template(template: str) -> None:
    """task.prompt_template must hold {context} and {question} and name no other field; one line otherwise."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(
            f"task.prompt_template cannot be read as a template ({exc}); write fields as {{name}} and braces as {{{{"
        ) from None
    unknown = sorted(set(fields) - {CONTEXT_FIELD, QUESTION_FIELD})
    missing = [name for name in (CONTEXT_FIELD, QUESTION_FIELD) if name not in fields]
    if unknown or missing:
        problem = f"names {{{unknown[0]}}}" if unknown else f"has no {{{missing[0]}}}"
        raise ConfigError(
            f"task.prompt_template {template!r} {problem}; generated answers need a template with {{context}} and "
            "{question} (and no other field), e.g. 'Context: {context}\\nQuestion: {question}\\nAnswer:'"
        )


def instruction_template(prefix: str, template: str) -> str:
    """task.source_prefix (taken literally) before task.prompt_template."""
    return prefix.replace("{", "{{").replace("}", "}}") + template


def fit_instructions(
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    contexts: list[str],
    questions: list[str],
    budgets: list[int],
) -> list[str]:
    """Each instruction with as much of its context as fits ``budgets`` tokens (encoded without special tokens,
    as the layer encodes its source); an instruction that does not fit even without its context keeps none."""
    texts = [template.format(context=c, question=q) for c, q in zip(contexts, questions)]
    lengths = [len(ids) for ids in _encode(tokenizer, texts)] if texts else []
    over = [i for i, (length, budget) in enumerate(zip(lengths, budgets)) if length > budget]
    if not over:
        return texts
    offsets = tokenizer(
        [contexts[i] for i in over], add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    for i, spans in zip(over, offsets["offset_mapping"]):
        texts[i] = _fit_one(tokenizer, template, contexts[i], questions[i], (spans, budgets[i], lengths[i]))
    return texts


def _fit_one(tokenizer: Any, template: str, context: str, question: str, sizes: tuple[list, int, int]) -> str:
    """Cut the context at a token boundary until the instruction fits: each try drops as many context tokens as
    the instruction is over (tokens at the cut may merge differently, hence the check after each cut)."""
    spans, budget, length = sizes
    keep = len(spans)
    while True:
        keep = max(0, keep - (length - budget))
        text = template.format(context=context[: spans[keep - 1][1]] if keep else "", question=question)
        length = len(_encode(tokenizer, [text])[0])
        if length <= budget or keep == 0:
            return text


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids as the layer encodes its source; quiet, as texts longer than the model are measured here to be cut."""
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def answer_target(answers: Mapping[str, Any], no_answer_reply: str) -> str:
    """The text a model learns for one question: its first gold answer, or the no-answer reply (SQuAD v2)."""
    texts = list(answers.get("text") or []) if answers else []
    return texts[0] if texts else no_answer_reply


def _reply_key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip(string.punctuation + " ").lower()


def is_no_answer(generated: str, no_answer_reply: str) -> bool:
    """Whether a generated reply is the agreed no-answer reply (case, spaces and end punctuation aside)."""
    return _reply_key(generated) == _reply_key(no_answer_reply)
