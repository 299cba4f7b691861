"""The text-to-text layer: (source, target) texts → features → loss → generate → texts, for two backends.

``EncoderDecoder`` serves ``AutoModelForSeq2SeqLM`` models (the source to the encoder, the target as labels);
``DecoderOnly`` serves ``AutoModelForCausalLM`` models (a prompt from a chat or plain template, completion-only
labels, left-padded generation). ``Seq2SeqRecipe`` (recipe.py) picks the backend from the model's config, so a
generative recipe, built-in or plugin, says only which texts go in and come out.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from accel_tasks import log
from accel_tasks.generation import positions_limit
from accel_tasks.text2text.decoder_only import DecoderOnly, DecoderOnlyLimits, ensure_pad_token
from accel_tasks.text2text.encoder_decoder import EncoderDecoder
from accel_tasks.text2text.prompts import PromptSpec, check_template, prompt_pieces, values_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Backend = Union[EncoderDecoder, DecoderOnly]

__all__ = [
    "Backend",
    "DecoderOnly",
    "EncoderDecoder",
    "PromptSpec",
    "check_template",
    "code_fingerprint",
    "make_backend",
    "prepare_decoder_only",
    "uses_chat",
    "values_of",
]


def uses_chat(tokenizer: PreTrainedTokenizerBase, wanted: bool) -> bool:
    """Whether prompts go through the tokenizer's chat template: it has one and task.chat_template allows it."""
    return bool(wanted and getattr(tokenizer, "chat_template", None))


def make_backend(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, options: Any, spec: PromptSpec, max_new_tokens: int
) -> Backend:
    """The backend for ``model``'s family; a decoder-only one checked to leave room for a source in the context."""
    if model.config.is_encoder_decoder:
        return EncoderDecoder(tokenizer, options.max_source_length, options.max_target_length)
    pieces = prompt_pieces(spec, tokenizer, uses_chat(tokenizer, options.chat_template))
    limits = DecoderOnlyLimits(
        max_source_length=options.max_source_length,
        max_new_tokens=max_new_tokens,
        context=positions_limit(model),
        train_on_prompt=bool(options.train_on_prompt),
    )
    backend = DecoderOnly(tokenizer, pieces, limits, model)
    backend.check_fits()
    return backend


def prepare_decoder_only(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, chat_template: bool) -> None:
    """Make a freshly loaded causal LM and its tokenizer ready for batched training and generation.

    A pad token where there is none, left padding (what the export's tokenizer then says too), and the end
    token(s) of the prompt format as the generation config's eos, so an export stops where training taught it to.
    One notice each for a missing pad token and a missing chat template.
    """
    notice = ensure_pad_token(tokenizer, model)
    if notice:
        log.info(notice)
    tokenizer.padding_side = "left"
    # save_pretrained writes the init kwargs (not the attribute): so the export's tokenizer pads left too.
    tokenizer.init_kwargs["padding_side"] = "left"
    chat = uses_chat(tokenizer, chat_template)
    if chat_template and not chat:
        log.info("the tokenizer has no chat template; prompts are task.prompt_template as plain text")
    pieces = prompt_pieces(PromptSpec(template="{source}", system_prompt="", source_field="source"), tokenizer, chat)
    stop_ids = DecoderOnly(tokenizer, pieces, DecoderOnlyLimits(1, 1, None)).stop_ids
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_config.eos_token_id = stop_ids if len(stop_ids) > 1 else stop_ids[0]
        generation_config.pad_token_id = tokenizer.pad_token_id


def code_fingerprint() -> str:
    """A hash of this layer's code: part of the feature cache key of every text-to-text recipe."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
