"""Packing and logits only where there are labels, checked against the plain computation on real model classes.

A packed row's loss and gradients must be its examples' unpacked ones (to 1e-5), an example in a packed row must get
the logits of its separate run (no attention across examples), and the loss computed only at labelled positions must
equal the full computation, for tied and untied output layers, under LoRA and with label smoothing.
"""

from __future__ import annotations

import pytest
import torch
from llm_fixtures import build_config, build_tokenizer

from accel_tasks.errors import ConfigError
from accel_tasks.recipe_types import PAD_INT
from accel_tasks.text2text.backends import PromptSpec, make_backend, prepare_decoder_only
from accel_tasks.text2text.packing import best_fit_rows, block_causal_mask

SPEC = PromptSpec(template="Summarize this document:\n{document}\nSummary:", system_prompt="", source_field="document")
SOURCES = ["The cat sat on the mat all day.", "A dog.", "Return the value of the named attribute.", "Rain fell."]
TARGETS = ["A cat sat.", "Dog.", "Return the value.", "It rained on the town all night long."]


class Options:
    def __init__(self, train_on_prompt=False):
        self.max_source_length, self.max_target_length = 64, 16
        self.chat_template, self.train_on_prompt = True, train_on_prompt


def tiny(family: str, style: str, **config):
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer(style)
    torch.manual_seed(0)
    model_config = build_config(family, tokenizer, positions=256)
    for key, value in config.items():
        setattr(model_config, key, value)
    model = AutoModelForCausalLM.from_config(model_config, attn_implementation="sdpa").eval()
    prepare_decoder_only(tokenizer, model, chat_template=True)
    return tokenizer, model


def rows(features):
    return [dict(zip(features, values)) for values in zip(*features.values())]


def full_loss(model, batch, smoothing=0.0):
    """The plain computation: every position's logits, shifted cross-entropy."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=PAD_INT,
        label_smoothing=smoothing,
    )


def loss_and_grads(model, compute):
    model.zero_grad()
    loss = compute()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_same(first, second, atol=1e-5):
    assert torch.allclose(first[0], second[0], atol=atol), (first[0], second[0])
    assert first[1].keys() == second[1].keys() and first[1]
    for name in first[1]:
        assert torch.allclose(first[1][name], second[1][name], atol=atol), name


def test_best_fit_decreasing_fills_the_tightest_row_and_keeps_every_example_once():
    assert best_fit_rows([5, 3, 4, 2, 6], 8) == [[4, 3], [0, 1], [2]]
    lengths = [7, 1, 9, 3, 3, 8, 2, 5, 5, 6]
    packed = best_fit_rows(lengths, 10)
    assert sorted(i for row in packed for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in packed)
    assert len(packed) == 5  # 49 tokens in 5 rows of 10: as tight as it gets
    with pytest.raises(ConfigError, match="train.packing_length=4 is shorter than 1 training examples"):
        best_fit_rows([3, 5], 4)


@pytest.mark.parametrize("train_on_prompt", [False, True])
def test_a_packed_batch_has_the_loss_and_gradients_of_its_examples_unpacked(train_on_prompt):
    tokenizer, model = tiny("qwen2", "chatml")
    backend = make_backend(model, tokenizer, Options(train_on_prompt), SPEC, 8)
    features = backend.features(SOURCES, TARGETS)
    packed, efficiency = backend.pack(features, capacity=96)
    assert len(packed["input_ids"]) < len(SOURCES) and 0.5 < efficiency <= 1.0
    unpacked_batch = backend.collate(rows(features), None)
    packed_batch = backend.collate(rows(packed), None)
    assert packed_batch["input_ids"].shape[0] == len(packed["input_ids"])
    unpacked = loss_and_grads(model, lambda: full_loss(model, unpacked_batch))
    assert_same(loss_and_grads(model, lambda: backend.loss(model, packed_batch, 0.0)), unpacked)


def test_an_example_in_a_packed_row_sees_only_itself():
    tokenizer, model = tiny("llama", "llama")
    backend = make_backend(model, tokenizer, Options(), SPEC, 8)
    features = backend.features(SOURCES[:2], TARGETS[:2])
    packed, _ = backend.pack(features, capacity=200)
    assert len(packed["input_ids"]) == 1  # both examples in one row
    batch = backend.collate(rows(packed), None)
    mask = block_causal_mask(batch["position_ids"], batch["attention_mask"])
    with torch.no_grad():
        together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask).logits[
            0
        ]
        start = 0
        for ids in packed_order(features, packed):
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            assert torch.allclose(together[start : start + len(ids)], alone, atol=1e-5)
            start += len(ids)


def packed_order(features, packed):
    """The examples of the first packed row, in the order they were packed (matched by their tokens)."""
    row, order, start = packed["input_ids"][0], [], 0
    while start < len(row):
        ids = next(ids for ids in features["input_ids"] if row[start : start + len(ids)] == ids)
        order.append(ids)
        start += len(ids)
    return order


@pytest.mark.parametrize(
    "family, style, tied", [("gpt2", "gpt2", True), ("qwen2", "chatml", False), ("llama", "llama", True)]
)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_logits_only_at_labels_give_the_full_loss_and_gradients(family, style, tied, smoothing):
    tokenizer, model = tiny(family, style, tie_word_embeddings=tied)
    if tied:
        model.tie_weights()
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    backend = make_backend(model, tokenizer, Options(), SPEC, 8)
    assert backend.keeps_logits
    batch = backend.collate(rows(backend.features(SOURCES, TARGETS)), None)
    full = loss_and_grads(model, lambda: full_loss(model, batch, smoothing))
    assert_same(loss_and_grads(model, lambda: backend.loss(model, batch, smoothing)), full)


def test_logits_only_at_labels_under_lora_give_the_full_loss_and_adapter_gradients():
    from peft import LoraConfig, get_peft_model

    tokenizer, model = tiny("llama", "llama")
    backend = make_backend(model, tokenizer, Options(), SPEC, 8)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    batch = backend.collate(rows(backend.features(SOURCES, TARGETS)), None)
    full = loss_and_grads(peft_model, lambda: full_loss(peft_model, batch))
    assert_same(loss_and_grads(peft_model, lambda: backend.loss(peft_model, batch, 0.0)), full)
    assert all("lora" in name for name in full[1])
