"""Which speech model family a checkpoint belongs to, and the processor pieces each family needs.

Why: one recipe serves CTC models (wav2vec2, HuBERT, WavLM, Wav2Vec2-BERT: a character vocabulary
and a frame classifier) and encoder-decoder models (Whisper, Speech2Text: a text decoder with its own
tokenizer and, for Whisper, language and task tokens). The family decides the Auto class, the
collator, the prediction step and the decoding.
"""

from __future__ import annotations

from typing import Any

from accel_tasks.errors import ConfigError

CTC = "ctc"
SEQ2SEQ = "seq2seq"
MODEL_TYPES = (CTC, SEQ2SEQ)
AUTO_CLASSES = {CTC: "AutoModelForCTC", SEQ2SEQ: "AutoModelForSpeechSeq2Seq"}
WHISPER_TASKS = ("transcribe", "translate")


def choose_model_type(config: Any, override: str | None = None) -> str:
    """``ctc`` or ``seq2seq`` from the model config (its model type, architectures, is_encoder_decoder)."""
    if override:
        if override not in MODEL_TYPES:
            raise ConfigError(f"task.model_type={override!r} is not one of {', '.join(MODEL_TYPES)}")
        return override
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CTC_MAPPING_NAMES,
        MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    if model_type in MODEL_FOR_CTC_MAPPING_NAMES:
        return CTC
    if model_type in MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES:
        return SEQ2SEQ
    architectures = getattr(config, "architectures", None) or []
    if any(name.endswith("ForCTC") for name in architectures):
        return CTC
    if getattr(config, "is_encoder_decoder", False):
        return SEQ2SEQ
    raise ConfigError(
        f"cannot tell whether model type {model_type!r} is a CTC or an encoder-decoder speech model; "
        "set task.model_type=ctc or task.model_type=seq2seq"
    )


def split_processor(processor: Any) -> tuple[Any, Any]:
    """(feature extractor, tokenizer) of a processor; either may be None when the model lacks it."""
    feature_extractor = getattr(processor, "feature_extractor", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if feature_extractor is None and hasattr(processor, "sampling_rate") and hasattr(processor, "model_input_names"):
        feature_extractor = processor  # AutoProcessor falls back to a bare feature extractor
    if tokenizer is None and hasattr(processor, "convert_tokens_to_ids"):
        tokenizer = processor
    return feature_extractor, tokenizer


def ctc_processor(model_type: str, feature_extractor: Any, tokenizer: Any) -> Any:
    """The model family's processor class (Wav2Vec2Processor, Wav2Vec2BertProcessor, ...) around both parts.

    Saved with the exported model, so ``AutoProcessor.from_pretrained(export)`` finds the new vocabulary.
    """
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(model_type) or "Wav2Vec2Processor"
    cls = getattr(transformers, name, None) or transformers.Wav2Vec2Processor
    return cls(feature_extractor=feature_extractor, tokenizer=tokenizer)


def set_language_and_task(model: Any, tokenizer: Any, language: str | None, task: str | None) -> None:
    """Whisper-style language and task tokens: in the labels (tokenizer prefix) and in generation.

    Stored on the tokenizer and the generation config, so the exported model keeps them.
    """
    if language is None and task is None:
        return
    if not hasattr(tokenizer, "set_prefix_tokens"):
        raise ConfigError(
            f"task.language / task.task set Whisper's language and task tokens, but the tokenizer "
            f"{type(tokenizer).__name__} has none; leave them unset for this model"
        )
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and getattr(generation_config, "is_multilingual", True) is False:
        raise ConfigError(
            "this Whisper model is English-only and takes no language or task tokens; "
            "leave task.language and task.task unset (or use a multilingual checkpoint)"
        )
    try:
        tokenizer.set_prefix_tokens(language=language, task=task)
        tokenizer.prefix_tokens  # validates the language and task names
    except ValueError as exc:
        raise ConfigError(f"task.language={language!r} / task.task={task!r}: {exc}") from None
    if generation_config is not None:
        if language is not None:
            generation_config.language = language
        if task is not None:
            generation_config.task = task
        # Old checkpoints force the prompt through forced_decoder_ids, which would override language/task.
        if getattr(generation_config, "forced_decoder_ids", None) is not None:
            generation_config.forced_decoder_ids = None
    if getattr(model.config, "forced_decoder_ids", None) is not None:
        model.config.forced_decoder_ids = None


def prompt_language_and_task(
    model: Any, tokenizer: Any, language: str | None, task: str | None, training: bool
) -> tuple[str | None, str | None]:
    """The language and task of both the labels and generation: the options, else what the model already says.

    Why: the labels carry the tokenizer's prefix (``tokenizer.language`` / ``.task``) and ``generate`` prompts
    with the generation config's; when they disagree, the fine-tuned model is prompted at inference with tokens it
    was not trained on, and an export whose generation config lacks the language detects one instead
    (transformers#28814). An unset option is taken from whichever of the two names one; when both name different
    ones, training is refused (the labels would contradict the export) and evaluation follows the generation
    config (labels are not used). Returns the pair to hand to :func:`set_language_and_task`.
    """
    generation_config = getattr(model, "generation_config", None)
    if not hasattr(tokenizer, "set_prefix_tokens") or getattr(generation_config, "is_multilingual", None) is False:
        return language, task  # no prefix tokens to agree on (English-only Whisper takes none)
    chosen = []
    for option, value, canonical in (("language", language, language_code), ("task", task, str)):
        in_labels, in_generation = getattr(tokenizer, option, None), getattr(generation_config, option, None)
        in_generation = in_generation if isinstance(in_generation, str) else None  # a per-row list names no one
        if value is None and in_labels is not None and in_generation is not None:
            if canonical(in_labels) != canonical(in_generation) and training:
                raise ConfigError(
                    f"the tokenizer's {option} {in_labels!r} (in the labels) and the generation config's "
                    f"{in_generation!r} differ; set task.{option}=<{option}> to train and generate with one"
                )
        chosen.append(value if value is not None else (in_generation if in_generation is not None else in_labels))
    return chosen[0], chosen[1]


def language_code(name: str) -> str:
    """Whisper's code of a language given as ``english``, ``en`` or ``<|en|>`` (unknown names as they are)."""
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    name = name.lower().removeprefix("<|").removesuffix("|>")
    return TO_LANGUAGE_CODE.get(name, name)


def freeze_unused_spec_augment(model: Any) -> list[str]:
    """Freeze the SpecAugment mask embedding when the config never applies time masking.

    Why: wav2vec2-family models create ``masked_spec_embed`` whenever a mask probability is set, but
    use it only with ``apply_spec_augment`` and ``mask_time_prob > 0``; a trainable parameter that
    never gets a gradient stops multi-process (DDP) training at the second step.
    """
    config = model.config
    if getattr(config, "apply_spec_augment", False) and getattr(config, "mask_time_prob", 0.0) > 0:
        return []
    frozen = []
    for name, parameter in model.named_parameters():
        if name.rsplit(".", 1)[-1] == "masked_spec_embed" and parameter.requires_grad:
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen
