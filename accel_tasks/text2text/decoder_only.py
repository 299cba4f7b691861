"""The decoder-only backend of the text-to-text layer (``AutoModelForCausalLM``: Llama, Qwen, Mistral, Gemma, GPT-2).

One sequence per example: prompt tokens, then completion tokens ending with the end token. Labels are the
completion only (the prompt is -100) unless ``task.train_on_prompt``; the end token is a label even where the pad
token is the same token (labels are built here, never derived from the padded ids, so pad == eos cannot mask it:
TRL#1623). Sources are the only part ever cut: the instruction, the chat markup and the completion are kept whole,
and an example whose completion does not fit the model's context with an empty source is dropped (``fits``).
Training batches are padded on the right; generation batches on the left, so every row's new tokens start at the
same column and the prompt is cut off by position (transformers#31672).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from accel_tasks.errors import ConfigError
from accel_tasks.generation import decode_generated
from accel_tasks.recipe_types import PAD_INT
from accel_tasks.text2text.packing import block_causal_mask, pack_rows, packed_batch
from accel_tasks.text2text.prompts import PromptPieces, shown

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DecoderOnlyLimits:
    """Lengths a run allows: source tokens kept, tokens generated, the model's positions (None: no table) and whether
    the prompt carries labels too."""

    max_source_length: int
    max_new_tokens: int
    context: Optional[int]
    train_on_prompt: bool = False


class DecoderOnly:
    """Features, batches, loss and generation of a causal LM for (source, target) texts, with fixed prompt pieces."""

    is_encoder_decoder = False

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        pieces: PromptPieces,
        limits: DecoderOnlyLimits,
        model: Optional[PreTrainedModel] = None,
    ) -> None:
        self.tokenizer = tokenizer
        # What the model's forward offers: logits at chosen positions only, and flash-attention's variable-length
        # path (packed rows need no mask there).
        forward = inspect.signature(type(model).forward).parameters if model is not None else {}
        self.keeps_logits = "logits_to_keep" in forward
        attention = str(getattr(getattr(model, "config", None), "_attn_implementation", "") or "")
        self.varlen_attention = attention.startswith("flash")
        self.pieces = pieces
        self.limits = limits
        encode = self._encode
        bos = [tokenizer.bos_token_id] if not pieces.chat and adds_bos(tokenizer) else []
        self.before_ids = bos + encode(pieces.before)
        self.after_ids = encode(pieces.after)
        self.end_ids = end_ids(tokenizer, encode(pieces.end) if pieces.end else [])
        self.stop_ids = list(dict.fromkeys(i for i in (tokenizer.eos_token_id, self.end_ids[-1]) if i is not None))
        self.pad_id = tokenizer.pad_token_id
        self.fixed = len(self.before_ids) + len(self.after_ids)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _encode_all(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    # -- lengths ---------------------------------------------------------------------------------------
    def check_fits(self) -> None:
        """The prompt markup and the generated tokens must leave room for a source in the model's context."""
        context = self.limits.context
        if context is not None and self.fixed + self.limits.max_new_tokens >= context:
            raise ConfigError(
                f"the prompt without its source is {self.fixed} tokens and generation adds up to "
                f"{self.limits.max_new_tokens} (generation.max_new_tokens / task.max_target_length): more than the "
                f"model's {context} positions; shorten task.prompt_template / task.system_prompt or lower "
                "generation.max_new_tokens"
            )

    def completion_ids(self, targets: list[str]) -> list[list[int]]:
        return [ids + self.end_ids for ids in self._encode_all([self.pieces.lead + t for t in targets])]

    def source_budget(self, completion_length: int) -> int:
        """Source tokens that fit beside the prompt pieces and a completion (or the generated tokens)."""
        budget = self.limits.max_source_length
        if self.limits.context is not None:
            budget = min(budget, self.limits.context - self.fixed - completion_length)
        return budget

    def fits(self, targets: list[str]) -> list[bool]:
        """Which examples keep a learnable token: their completion fits the context with the prompt pieces."""
        return [self.source_budget(len(ids)) >= 0 for ids in self.completion_ids(targets)]

    # -- features --------------------------------------------------------------------------------------
    def features(self, sources: list[str], targets: Optional[list[str]]) -> dict[str, list]:
        """Training features (``targets`` given: prompt + completion, labels) or generation inputs (prompt only).

        An example whose completion cannot fit is left out (``fits`` drops and counts them before this runs).
        """
        source_ids = self._encode_all(sources)
        if targets is None:
            budget = self.source_budget(self.limits.max_new_tokens)
            prompts = [self._prompt(ids, budget) for ids in source_ids]
            return {"input_ids": prompts, "attention_mask": [[1] * len(ids) for ids in prompts]}
        features: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        for ids, completion in zip(source_ids, self.completion_ids(targets)):
            budget = self.source_budget(len(completion))
            if budget < 0:
                continue
            prompt = self._prompt(ids, budget)
            masked = prompt if self.limits.train_on_prompt else [PAD_INT] * len(prompt)
            features["input_ids"].append(prompt + completion)
            features["attention_mask"].append([1] * (len(prompt) + len(completion)))
            features["labels"].append(masked + completion)
        return features

    def describe(self, source: str, target: Optional[str]) -> str:
        """One line: an example as the model reads it, with its prompt and completion token counts."""
        decode = self.tokenizer.decode
        if target is None:
            prompt = self._prompt(self._encode(source), self.source_budget(self.limits.max_new_tokens))
            return f'{len(prompt)} prompt tokens: "{shown(decode(prompt))}"'
        completion = self.completion_ids([target])[0]
        budget = self.source_budget(len(completion))
        if budget < 0:
            return f"{len(completion)} completion tokens, more than the context holds beside the prompt"
        prompt = self._prompt(self._encode(source), budget)
        loss_on = "prompt and completion" if self.limits.train_on_prompt else "the completion only"
        return (
            f"{len(prompt)} prompt + {len(completion)} completion tokens, loss on {loss_on}: "
            f'"{shown(decode(prompt))}" + "{shown(decode(completion), 80)}"'
        )

    def _prompt(self, source_ids: list[int], budget: int) -> list[int]:
        return self.before_ids + source_ids[: max(budget, 0)] + self.after_ids

    # -- batches, loss, generation --------------------------------------------------------------------
    def collate(self, features: list[dict[str, Any]], pad_to_multiple_of: Optional[int]) -> Batch:
        """Right padding for training rows (they carry labels), left padding for generation rows."""
        import torch

        if "position_ids" in features[0]:
            return packed_batch(features, self.pad_id, pad_to_multiple_of)
        training = "labels" in features[0]
        length = max(len(f["input_ids"]) for f in features)
        if pad_to_multiple_of:
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of

        def padded(row: list[int], value: int) -> list[int]:
            fill = [value] * (length - len(row))
            return row + fill if training else fill + row

        batch = {
            "input_ids": torch.tensor([padded(list(f["input_ids"]), self.pad_id) for f in features]),
            "attention_mask": torch.tensor([padded(list(f["attention_mask"]), 0) for f in features]),
        }
        if training:
            batch["labels"] = torch.tensor([padded(list(f["labels"]), PAD_INT) for f in features])
        return batch

    def loss(self, model: PreTrainedModel, batch: Batch, label_smoothing: float) -> torch.Tensor:
        """Cross-entropy of the next token where there is a label, the output layer computed only there.

        Why not the model's own loss: it computes the logits of every position, while only completion positions
        carry a label; with a large vocabulary the output layer is a large share of the FLOPs. ``logits_to_keep``
        (the positions whose next token is a label in some row) goes through the model's own forward, so DDP,
        DeepSpeed and PEFT wrappers see an ordinary call. The mean over labelled tokens equals the model's loss;
        label smoothing (train.label_smoothing) applies to the same positions. Packed rows get their block-diagonal
        mask here. A batch with no label to learn is an error, not a silent zero loss.
        """
        import torch.nn.functional as F

        labels = batch["labels"]
        targets = labels[:, 1:]
        labelled = (targets != PAD_INT).any(dim=0)
        if not bool(labelled.any()):
            raise ConfigError(
                "a training batch has no completion token to learn (every label is masked); check "
                "task.prompt_template and the target column, or set task.train_on_prompt=true"
            )
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        if "position_ids" in inputs:  # packed rows
            if self.varlen_attention:
                inputs.pop("attention_mask")  # flash kernels find the examples from the restarting positions
            else:
                inputs["attention_mask"] = block_causal_mask(inputs["position_ids"], inputs["attention_mask"])
        if self.keeps_logits:
            positions = labelled.nonzero().squeeze(1)
            logits = model(**inputs, logits_to_keep=positions).logits
            targets = targets[:, positions]
        else:
            logits = model(**inputs).logits[:, :-1]
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            targets.to(logits.device).reshape(-1),
            ignore_index=PAD_INT,
            label_smoothing=label_smoothing,
        )

    def pack(self, features: dict[str, list], capacity: int) -> tuple[dict[str, list], float]:
        """Training features packed into rows of ``capacity`` tokens (packing.py) and the packing efficiency."""
        if self.limits.context is not None and capacity > self.limits.context:
            raise ConfigError(
                f"train.packing_length={capacity} is more than the model's {self.limits.context} positions; "
                f"lower it to {self.limits.context} or less"
            )
        return pack_rows(features, capacity)

    def generate(self, model: PreTrainedModel, batch: Batch, kwargs: dict[str, Any], synced_gpus: bool) -> torch.Tensor:
        """New tokens only: generation stops at the end token(s) of the prompt format; the prompt is cut off."""
        from accel_tasks.decoding import compacting_greedy, compaction_applies

        kwargs = {"eos_token_id": self.stop_ids, "pad_token_id": self.pad_id, **kwargs}
        if compaction_applies(model, kwargs, synced_gpus):
            kwargs["custom_generate"] = compacting_greedy
        input_ids = batch["input_ids"]
        generated = model.generate(
            input_ids=input_ids, attention_mask=batch["attention_mask"], synced_gpus=synced_gpus, **kwargs
        )
        return generated[:, input_ids.shape[1] :]

    def decode(self, token_ids: np.ndarray) -> list[str]:
        return decode_generated(token_ids, self.tokenizer)


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer starts an encoded text with its bos token (Llama does, GPT-2 and Qwen do not)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def end_ids(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """The tokens after the target: the chat format's end of turn, then the eos token unless the turn ends with it."""
    if not ids or ids[-1] not in set(tokenizer.all_special_ids):
        if tokenizer.eos_token_id is None:
            raise ConfigError(
                "the tokenizer has no eos token, so a completion's end cannot be learned; "
                "use a tokenizer with an eos token (model.tokenizer_name=...)"
            )
        ids = [*ids, tokenizer.eos_token_id]
    return ids


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> Optional[str]:
    """A pad token for batching (the eos token, else unk) where the tokenizer has none; the notice, or None.

    The model's config and generation config get the same id, so ``generate`` pads finished rows with it and an
    export carries it.
    """
    notice = None
    if tokenizer.pad_token is None:
        token = tokenizer.eos_token or tokenizer.unk_token
        if token is None:
            raise ConfigError(
                "the tokenizer has no pad, eos or unk token to pad batches with; "
                "use a tokenizer that has one (model.tokenizer_name=...)"
            )
        tokenizer.pad_token = token
        notice = (
            f"the tokenizer has no pad token; padding with {token!r} (left padding for generation; the end token is "
            "still learned)"
        )
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id
    return notice
