"""The decoder-only backend of the text-to-text layer, on real transformers classes with local tokenizers.

What is checked by hand: which token ids carry labels (prompt masked, completion + end token learned, even when
pad == eos), sources truncated and never the instruction or the completion, left-padded generation equal to each
row generated alone and to plain ``generate``, label smoothing over shifted positions, and the one-line errors.
"""

from __future__ import annotations

import pytest
import torch
from llm_fixtures import build_config, build_tokenizer

from accel_tasks.errors import ConfigError
from accel_tasks.models.loading import generative_model_class
from accel_tasks.recipe_types import PAD_INT
from accel_tasks.text2text.backends import PromptSpec, make_backend, prepare_decoder_only
from accel_tasks.text2text.prompts import check_template, prompt_pieces

SPEC = PromptSpec(template="Summarize this document:\n{document}\nSummary:", system_prompt="", source_field="document")


class Options:
    """The task options the backend reads (a plain object: the backend takes any object with these fields)."""

    def __init__(self, **kwargs):
        self.max_source_length = kwargs.get("max_source_length", 512)
        self.max_target_length = kwargs.get("max_target_length", 32)
        self.chat_template = kwargs.get("chat_template", True)
        self.train_on_prompt = kwargs.get("train_on_prompt", False)


@pytest.fixture(scope="module")
def world():
    """(tokenizer, model) per family; built once for the module."""
    from transformers import AutoModelForCausalLM

    models = {}
    for family, style in (("qwen2", "chatml"), ("gpt2", "gpt2"), ("llama", "llama"), ("gemma", "gemma")):
        tokenizer = build_tokenizer(style)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(build_config(family, tokenizer, positions=128)).eval()
        prepare_decoder_only(tokenizer, model, chat_template=True)
        models[family] = (tokenizer, model)
    return models


def backend_of(world, family, spec=SPEC, max_new_tokens=16, **options):
    tokenizer, model = world[family]
    return make_backend(model, tokenizer, Options(**options), spec, max_new_tokens)


def test_the_labels_are_the_completion_and_its_end_token_checked_by_hand(world):
    tokenizer, _ = world["qwen2"]
    backend = backend_of(world, "qwen2")
    row = backend.features(["The cat sat."], ["A cat."])
    ids, labels = row["input_ids"][0], row["labels"][0]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Summarize this document:\nThe cat sat.\nSummary:"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer("A cat.", add_special_tokens=False)["input_ids"] + [
        tokenizer.convert_tokens_to_ids("<|im_end|>")
    ]
    assert ids == prompt_ids + completion_ids
    assert labels == [PAD_INT] * len(prompt_ids) + completion_ids
    # The end of turn is the stop token of generation too (ChatML: <|im_end|> is also the eos token here).
    assert backend.stop_ids == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    # train_on_prompt: every token is a label.
    assert backend_of(world, "qwen2", train_on_prompt=True).features(["The cat sat."], ["A cat."])["labels"][0] == ids


def test_pad_equal_to_eos_still_learns_the_eos_token(world):
    tokenizer, model = world["gpt2"]
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # set from eos: GPT-2 has no pad token
    assert model.generation_config.pad_token_id == tokenizer.eos_token_id
    backend = backend_of(world, "gpt2")
    assert not backend.pieces.chat  # no chat template: the plain template
    features = backend.features(["The cat sat.", "A much longer document about the dog."], ["A cat.", "Dog."])
    batch = backend.collate([dict(zip(features, row)) for row in zip(*features.values())], pad_to_multiple_of=8)
    eos = tokenizer.eos_token_id
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        last = int(mask.sum()) - 1  # right padding in training
        assert ids[last] == eos and labels[last] == eos  # the real end token is learned
        assert (labels[last + 1 :] == PAD_INT).all() and (ids[last + 1 :] == eos).all()  # pads (also eos) are not
    assert batch["input_ids"].shape[1] % 8 == 0
    # The plain prompt: the instruction, then the answer after a space.
    text = tokenizer.decode(features["input_ids"][0])
    assert text == "Summarize this document:\nThe cat sat.\nSummary: A cat.<|endoftext|>"


def test_sources_are_cut_never_the_instruction_or_the_completion(world):
    tokenizer, _ = world["llama"]
    backend = backend_of(world, "llama")  # context 128 positions
    long_source = " ".join(["word"] * 400)
    target = "Short summary here."
    row = backend.features([long_source], [target])
    ids, labels = row["input_ids"][0], row["labels"][0]
    assert len(ids) == 128  # filled to the context
    text = tokenizer.decode(ids)
    # One bos (the chat template's; the tokenizer's own is not added again), the whole instruction, the source cut.
    assert text.startswith("<s>[INST] Summarize this document:\nword word")
    assert text.endswith("\nSummary: [/INST] Short summary here. </s>")
    learned = [i for i in labels if i != PAD_INT]
    assert tokenizer.decode(learned) == " Short summary here. </s>"
    # max_source_length cuts the source first.
    cut = backend_of(world, "llama", max_source_length=5)
    short = cut.features([long_source], [target])["input_ids"][0]
    first_five = tokenizer.decode(tokenizer(long_source, add_special_tokens=False)["input_ids"][:5])
    assert tokenizer.decode(short).startswith(f"<s>[INST] Summarize this document:\n{first_five}\nSummary: [/INST]")
    assert len(short) == cut.fixed + 5 + len(learned)


def test_an_example_whose_completion_cannot_fit_is_dropped_and_a_prompt_that_cannot_fit_is_one_line(world):
    backend = backend_of(world, "qwen2")
    huge = " ".join(["word"] * 300)
    assert backend.fits(["fine", huge]) == [True, False]
    assert len(backend.features(["doc", "doc"], ["fine", huge])["input_ids"]) == 1
    long_template = PromptSpec(template="{document}" + " please" * 200, system_prompt="", source_field="document")
    with pytest.raises(ConfigError, match="more than the model's 128 positions"):
        backend_of(world, "qwen2", spec=long_template)


def test_template_fields_are_checked_before_anything_loads():
    with pytest.raises(
        ConfigError, match=r"names \{title\}, which this recipe does not give; its fields are \{document\}"
    ):
        check_template(PromptSpec("{title}: {document}", "", "document"), ("document",))
    with pytest.raises(ConfigError, match=r"has no \{document\} field"):
        check_template(PromptSpec("Summarize.", "", "document"), ("document",))
    with pytest.raises(ConfigError, match="cannot be read as a template"):
        check_template(PromptSpec("{document", "", "document"), ("document",))


def test_a_chat_template_that_refuses_a_system_turn_is_one_line(world):
    tokenizer, _ = world["gemma"]
    with pytest.raises(ConfigError, match="cannot render a system/user conversation: System role not supported"):
        prompt_pieces(PromptSpec("{document}", "Be brief.", "document"), tokenizer, chat=True)
    pieces = prompt_pieces(SPEC, tokenizer, chat=True)
    assert pieces.before.startswith("<bos><start_of_turn>user\n") and pieces.end == "<end_of_turn>"
    assert backend_of(world, "gemma").stop_ids == [
        tokenizer.eos_token_id,
        tokenizer.convert_tokens_to_ids("<end_of_turn>"),
    ]


@pytest.mark.parametrize("family", ["qwen2", "gpt2", "llama", "gemma"])
def test_left_padded_generation_equals_each_row_alone_and_plain_generate(world, family):
    """Batched generation (left padding, prompt cut off, rows dropped as they finish) = each row alone."""
    _, model = world[family]
    backend = backend_of(world, family, max_new_tokens=12)
    sources = ["The cat sat on the mat.", "A dog.", "Return the value of the named attribute of the object today."]
    features = backend.features(sources, None)
    batch = backend.collate([dict(zip(features, row)) for row in zip(*features.values())], None)
    assert (batch["attention_mask"][:, -1] == 1).all()  # left padding
    kwargs = {"max_new_tokens": 12, "num_beams": 1, "do_sample": False}
    compacted = backend.generate(model, batch, kwargs, synced_gpus=False)
    from accel_tasks.decoding import compaction_applies

    assert compaction_applies(model, kwargs, False)
    plain = model.generate(**batch, eos_token_id=backend.stop_ids, pad_token_id=backend.pad_id, **kwargs)
    plain = plain[:, batch["input_ids"].shape[1] :]
    width = max(compacted.shape[1], plain.shape[1])
    pad = backend.pad_id
    assert torch.equal(
        torch.nn.functional.pad(compacted, (0, width - compacted.shape[1]), value=pad),
        torch.nn.functional.pad(plain, (0, width - plain.shape[1]), value=pad),
    )
    for index, ids in enumerate(features["input_ids"]):
        alone = backend.collate([{"input_ids": ids, "attention_mask": [1] * len(ids)}], None)
        single = backend.generate(model, alone, kwargs, synced_gpus=False)[0].tolist()
        assert backend.decode([single]) == backend.decode([compacted[index].tolist()])


def test_label_smoothing_is_over_shifted_positions_and_an_unlearnable_batch_is_an_error(world):
    _, model = world["qwen2"]
    backend = backend_of(world, "qwen2")
    features = backend.features(["The cat sat.", "Dogs bark loudly."], ["A cat.", "Dogs bark."])
    batch = backend.collate([dict(zip(features, row)) for row in zip(*features.values())], None)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=PAD_INT,
        label_smoothing=0.1,
    )
    assert torch.allclose(backend.loss(model, batch, 0.1), expected, atol=1e-6)
    plain = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=PAD_INT
    )
    assert torch.allclose(backend.loss(model, batch, 0.0), plain, atol=1e-5)  # the model's own loss, shifted inside
    batch["labels"][:] = PAD_INT
    with pytest.raises(ConfigError, match="no completion token to learn"):
        backend.loss(model, batch, 0.0)


def test_only_generative_models_are_accepted():
    from transformers import BertConfig, LlamaConfig, T5Config

    assert generative_model_class(T5Config(), "summarization") == "AutoModelForSeq2SeqLM"
    assert generative_model_class(LlamaConfig(), "summarization") == "AutoModelForCausalLM"
    with pytest.raises(ConfigError, match="model_type 'bert' is neither an encoder-decoder"):
        generative_model_class(BertConfig(), "summarization")
