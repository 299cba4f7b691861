"""The span head on any model family that has one: encoders, and decoder-only models (Llama, Qwen2, GPT-2 ...).

Three things differ for a decoder-only model, each handled here:

- Its pretrained weights are saved by the causal-LM class, whose backbone attribute may differ from the QA class's
  (``LlamaForCausalLM.model`` vs ``LlamaForQuestionAnswering.transformer``, also Qwen2 and Qwen3): loaded as they
  are, the backbone would silently start from random weights (transformers#30381). The checkpoint's keys are renamed
  on load (``from_pretrained(key_mapping=...)``), and the renaming is then forgotten: transformers 5 saves a model
  in the layout it was loaded from, which would give the export the causal LM's key names, and a QA model that
  loads (with transformers, or in our eval-only run) with a random backbone again.
- Its tokenizer may have no pad token (GPT-2, Llama): the eos token pads, as the text-to-text layer does.
- It reads left to right, so the question must come first: a context read before the question could not depend on
  it. The pair order of the span features follows the tokenizer's padding side (context first for left-padding
  tokenizers, as in the HF example for XLNet), so a decoder-only model's tokenizer pads on the right here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from accel_tasks.config import ModelConfig
from accel_tasks.errors import ConfigError
from accel_tasks.models.loading import is_decoder_only
from accel_tasks.text2text.decoder_only import ensure_pad_token

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

QA_AUTO_CLASS = "AutoModelForQuestionAnswering"


def qa_head_class(config: PretrainedConfig) -> str:
    """``AutoModelForQuestionAnswering`` when transformers has a QA head for the model type; one line otherwise."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES

    model_type = getattr(config, "model_type", "")
    if model_type not in MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES:
        raise ConfigError(
            f"model_type {model_type!r} has no question-answering head in transformers "
            f"({QA_AUTO_CLASS}), which task.answer_style=span trains; use task.answer_style=generate to answer "
            "with generated text (a decoder-only or encoder-decoder model), or a model with a QA head"
        )
    return QA_AUTO_CLASS


def backbone_key_mapping(config: PretrainedConfig) -> Optional[dict[str, str]]:
    """``from_pretrained``'s ``key_mapping`` that loads a causal-LM checkpoint's backbone into the QA class, or None
    where both classes name it alike.

    Harmless on a checkpoint of the QA class itself (our export): it holds no key the pattern renames.
    """
    import transformers
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", "")
    if not is_decoder_only(config) or model_type not in MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES:
        return None
    qa_class = getattr(transformers, MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES[model_type], None)
    lm_class = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type], None)
    qa_prefix = getattr(qa_class, "base_model_prefix", "")
    lm_prefix = getattr(lm_class, "base_model_prefix", "")
    if not qa_prefix or not lm_prefix or qa_prefix == lm_prefix:
        return None
    return {rf"^{lm_prefix}\.": f"{qa_prefix}."}


def backbone_renaming(model_cfg: ModelConfig, config: PretrainedConfig) -> Optional[dict[str, str]]:
    """The ``key_mapping`` a run passes to ``from_pretrained`` for ``model.name_or_path`` (an adapter: its base), or
    None: the packaged encoder, a model whose classes agree, and a folder without weight files (a config built with
    random weights, a DeepSpeed checkpoint: nothing is renamed there)."""
    from accel_tasks.models.loading import config_source, has_weights, resolve_model_source

    if model_cfg.name_or_path is None:
        return None
    source = config_source(resolve_model_source(model_cfg, None))
    if Path(source).is_dir() and not has_weights(source):
        return None
    return backbone_key_mapping(config)


def forget_key_mapping(model: PreTrainedModel, mapping: dict[str, str]) -> None:
    """Drop the renaming ``backbone_key_mapping`` made from the conversions transformers 5 reverts on save, so the
    export holds the QA class's own key names (every other conversion of the model is kept)."""
    conversions = getattr(model, "_weight_conversions", None)
    if not conversions:
        return

    def ours(conversion: object) -> bool:
        sources = getattr(conversion, "source_patterns", ())
        return any(pattern in ([sources] if isinstance(sources, str) else list(sources)) for pattern in mapping)

    model._weight_conversions = [conversion for conversion in conversions if not ours(conversion)]


def prepare_span_tokenizer(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> list[str]:
    """A pad token where there is none and, for a decoder-only model, right padding (question first); the notices.

    The export's tokenizer then says the same, so an eval-only run of it builds the same features.
    """
    notices = []
    notice = ensure_pad_token(tokenizer, model)
    if notice:
        # The layer's notice ends with a remark on generation, which a span head does not do.
        notices.append(notice.split(" (left padding")[0])
    if is_decoder_only(model.config) and tokenizer.padding_side != "right":
        tokenizer.padding_side = "right"
        notices.append(
            "decoder-only model: the tokenizer pads on the right, so each window reads the question before the "
            "context (a left-to-right model cannot look ahead to the question)"
        )
    return notices
