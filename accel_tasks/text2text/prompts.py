"""Prompts of decoder-only models: the task instruction with the source in it, as chat messages or plain text.

A decoder-only model reads one sequence: the prompt (an optional system prompt, the instruction with the source)
and then the completion (the target and the end token). Where the tokenizer has a chat template, the prompt is the
template's rendering of the messages (``apply_chat_template``) and the completion the assistant turn; otherwise the
prompt is ``task.prompt_template`` as plain text.

Why a template is rendered once per run, not once per example: the messages differ only in the source and the
target, so the template is rendered with two markers in their place and split around them into fixed pieces. Each
example is then its own tokens between the pieces' tokens, which is what makes truncating the source alone (never
the instruction or the completion) exact, and keeps a chat template's rendering cost off the preprocessing.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from accel_tasks.errors import ConfigError, first_line

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Stand-ins for the source and the target while a template is rendered; no tokenizer or template produces them.
SOURCE_MARK = "\x00ACCEL_TASKS_SOURCE\x00"
TARGET_MARK = "\x00ACCEL_TASKS_TARGET\x00"


@dataclass(frozen=True)
class PromptSpec:
    """What decides the prompt of a run: the task's template and system prompt, the template's fields other than
    the source (constants of the run, e.g. translation's language names) and the name of the source field."""

    template: str
    system_prompt: str
    source_field: str
    values: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PromptPieces:
    """The fixed texts around an example: ``before`` + source + ``after`` is the prompt, ``lead`` + target + ``end``
    the completion. ``chat`` says whether they come from the tokenizer's chat template."""

    before: str
    after: str
    lead: str
    end: str
    chat: bool


def template_fields(template: str, what: str = "task.prompt_template") -> list[str]:
    """The named fields of a ``str.format`` template; ConfigError for a template ``format`` cannot read."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{what} cannot be read as a template ({exc}); write fields as {{name}} and braces as {{{{")
    fields = [name for _, name, _, _ in parsed if name is not None]
    if any(not name or not name.isidentifier() for name in fields):
        raise ConfigError(
            f"{what} {template!r} has a field that is not a plain name ({{}} or {{0}} or {{a.b}}); "
            "name every field, e.g. {document}"
        )
    return fields


def check_template(spec: PromptSpec, available: tuple[str, ...]) -> None:
    """A template must hold the source field and name only fields the recipe gives; one line otherwise."""
    fields = template_fields(spec.template)
    unknown = [name for name in fields if name not in available]
    if unknown:
        raise ConfigError(
            f"task.prompt_template names {', '.join('{' + n + '}' for n in unknown)}, which this recipe does not "
            f"give; its fields are {', '.join('{' + n + '}' for n in available)}"
        )
    if spec.source_field not in fields:
        raise ConfigError(
            f"task.prompt_template {spec.template!r} has no {{{spec.source_field}}} field: the model would never see "
            "the input; put it where the input goes"
        )


def render_instruction(spec: PromptSpec) -> str:
    """The user turn with the source marker in place of the source field."""
    values = dict(spec.values)
    values[spec.source_field] = SOURCE_MARK
    return spec.template.format(**values)


def prompt_pieces(spec: PromptSpec, tokenizer: PreTrainedTokenizerBase, chat: bool) -> PromptPieces:
    """The prompt and completion texts around the source and the target, from the chat template or plain text."""
    instruction = render_instruction(spec)
    if not chat:
        system = f"{spec.system_prompt}\n\n" if spec.system_prompt else ""
        before, _, after = (system + instruction).partition(SOURCE_MARK)
        # The plain completion follows the prompt after a space (``Summary: text``); its end token is added as an id.
        return PromptPieces(before=before, after=after, lead=" ", end="", chat=False)
    messages = [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
    messages.append({"role": "user", "content": instruction})
    prompt = _render(tokenizer, messages, add_generation_prompt=True)
    full = _render(tokenizer, [*messages, {"role": "assistant", "content": TARGET_MARK}], add_generation_prompt=False)
    if not full.startswith(prompt) or prompt.count(SOURCE_MARK) != 1 or full.count(TARGET_MARK) != 1:
        raise ConfigError(
            "the tokenizer's chat template does not render the prompt as the start of the whole conversation "
            "(it changes earlier turns when the answer is added); set task.chat_template=false to use "
            "task.prompt_template as plain text"
        )
    before, _, after = prompt.partition(SOURCE_MARK)
    lead, _, end = full[len(prompt) :].partition(TARGET_MARK)
    return PromptPieces(before=before, after=after, lead=lead, end=end.rstrip(), chat=True)


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # jinja's TemplateError and the template's own raise_exception
        roles = "/".join(message["role"] for message in messages)
        hint = "unset task.system_prompt" if messages[0]["role"] == "system" else "set task.chat_template=false"
        raise ConfigError(
            f"the tokenizer's chat template cannot render a {roles} conversation: {first_line(exc)}; {hint}"
        ) from None


def shown(text: str, limit: int = 160) -> str:
    """A text on one line (newlines as \\n), its middle left out past ``limit`` characters."""
    flat = text.replace("\n", "\\n")
    if len(flat) <= limit:
        return flat
    half = limit // 2
    return f"{flat[:half]}…{flat[-half:]}"


def values_of(mapping: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """A mapping of template values as the hashable tuple a PromptSpec holds."""
    return tuple(sorted((str(key), str(value)) for key, value in mapping.items()))
