"""Tiny decoder-only models of real transformers classes (Llama, Qwen2, GPT-2, Gemma) with local tokenizers.

Nothing comes from the hub: a byte-level BPE is trained with ``tokenizers`` on the bundled summarization sample
(a second or so) and wrapped in ``PreTrainedTokenizerFast``; the model is built from a small config of the real
class and saved WITH weights, so a run starts from a "pretrained" model as a user's would. The tokenizer variants
cover what users meet: a ChatML chat template with a separate pad token (Qwen-like), no chat template and no pad
token (GPT-2), a bos token the tokenizer adds itself (Llama-like), a chat template that rejects system turns
(Gemma-like).
"""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "accel_tasks" / "samples" / "summarization" / "train.jsonl"

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
GEMMA_LIKE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
LLAMA2_LIKE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)


def sample_texts(limit: int = 600) -> list[str]:
    texts = []
    with SAMPLE.open() as handle:
        for line, _ in zip(handle, range(limit)):
            row = json.loads(line)
            texts += [row["document"], row["summary"]]
    return texts


def build_tokenizer(style: str):
    """A fast tokenizer in one of four styles: chatml, gpt2, llama, gemma (see the module docstring)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {
        "chatml": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "gpt2": ["<|endoftext|>"],
        "llama": ["<unk>", "<s>", "</s>"],
        "gemma": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
    }[style]
    tok = Tokenizer(models.BPE(unk_token="<unk>" if "<unk>" in specials else None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(sample_texts() + ["Summarize this document:\nSummary:"], trainer=trainer)
    kwargs: dict = {"tokenizer_object": tok}
    if style == "chatml":
        kwargs.update(eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML)
    elif style == "gpt2":
        kwargs.update(eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    elif style == "llama":
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
        kwargs.update(
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            chat_template=LLAMA2_LIKE,
        )
    else:
        kwargs.update(
            bos_token="<bos>",
            eos_token="<eos>",
            pad_token="<pad>",
            unk_token="<unk>",
            chat_template=GEMMA_LIKE,
            additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        )
    return PreTrainedTokenizerFast(**kwargs)


# Config classes and the tokenizer style each family is tested with.
FAMILIES = {"llama": "llama", "qwen2": "chatml", "gpt2": "gpt2", "gemma": "gemma"}


def build_config(family: str, tokenizer, positions: int = 256):
    import transformers

    common = {
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if family == "gpt2":
        return transformers.GPT2Config(
            n_embd=64, n_layer=2, n_head=4, n_positions=positions, bos_token_id=tokenizer.bos_token_id, **common
        )
    shape = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": positions,
        "bos_token_id": tokenizer.bos_token_id,
    }
    config_class = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "gemma": "GemmaConfig"}[family]
    extra = {"head_dim": 16} if family == "gemma" else {}
    return getattr(transformers, config_class)(**shape, **common, **extra)


def save_tiny_causal_lm(dest: Path, family: str, positions: int = 256, seed: int = 0) -> Path:
    """A tiny causal LM of ``family`` with its tokenizer, saved with weights in ``dest``."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer(FAMILIES[family])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(build_config(family, tokenizer, positions))
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
