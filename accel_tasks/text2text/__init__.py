"""The text-to-text layer: (source, target) texts → features → loss → generate → texts, for two backends.

``EncoderDecoder`` (encoder_decoder.py) serves ``AutoModelForSeq2SeqLM`` models: the source to the encoder, the
target as labels. ``DecoderOnly`` (decoder_only.py) serves ``AutoModelForCausalLM`` models: a prompt from the
tokenizer's chat template or a plain template (prompts.py), completion-only labels, left-padded generation.
``Seq2SeqRecipe`` (recipe.py) picks the backend from the model's config (backends.py), so a generative recipe,
built-in or plugin, says only which texts go in and come out.
"""

from accel_tasks.text2text.recipe import Seq2SeqOptions, Seq2SeqRecipe

__all__ = ["Seq2SeqOptions", "Seq2SeqRecipe"]
