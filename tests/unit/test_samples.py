"""The bundled offline samples: data files, tokenizers and tiny model configs.

The default summarization/translation runs and the end-to-end tests depend on these
files, so they are checked as a user would load them (datasets + Auto classes).
"""

from __future__ import annotations

import filecmp
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "accel_tasks" / "samples"
BUILD_SCRIPT = SAMPLES.parents[1] / "scripts" / "build_samples.py"
RECIPES = ("summarization", "translation")


def _records(recipe: str, split: str) -> list[dict]:
    with open(SAMPLES / recipe / f"{split}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _texts(recipe: str, split: str) -> list[str]:
    if recipe == "summarization":
        return [t for r in _records(recipe, split) for t in (r["document"], r["summary"])]
    return [t for r in _records(recipe, split) for t in r["translation"].values()]


@pytest.fixture(scope="module", params=RECIPES)
def recipe(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def tokenizer(recipe):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(SAMPLES / recipe / "model")


@pytest.fixture(scope="module")
def config(recipe):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(SAMPLES / recipe / "model")


def test_samples_load_with_datasets(recipe):
    import datasets

    files = {s: str(SAMPLES / recipe / f"{s}.jsonl") for s in ("train", "validation")}
    ds = datasets.load_dataset("json", data_files=files)
    expected = {"summarization": ["id", "document", "summary"], "translation": ["id", "translation"]}
    assert ds["train"].column_names == expected[recipe]
    assert ds["validation"].num_rows == 100
    assert ds["train"].num_rows >= 1000
    assert len(set(ds["train"]["id"]) | set(ds["validation"]["id"])) == (
        ds["train"].num_rows + ds["validation"].num_rows
    )
    if recipe == "translation":
        assert ds["train"][0]["translation"].keys() == {"en", "de"}


def test_summary_is_first_sentence_of_a_short_document():
    for split in ("train", "validation"):
        for r in _records("summarization", split):
            assert r["document"].startswith(r["summary"] + " "), r["id"]
            assert len(re.findall(r"[.!?](?: |$)", r["document"])) in (3, 4), r["id"]
            assert len(r["document"].split()) <= 60, r["id"]
            assert ">>>" not in r["document"] and "{" not in r["document"], r["id"]


def test_summarization_validation_is_unseen_in_train():
    train_docs = " ".join(r["document"] for r in _records("summarization", "train"))
    for r in _records("summarization", "validation"):
        assert r["summary"] not in train_docs, r["id"]


def test_translation_is_word_for_word_over_one_lexicon():
    mapping: dict[str, str] = {}
    train = _records("translation", "train")
    for r in train + _records("translation", "validation"):
        en, de = r["translation"]["en"].split(), r["translation"]["de"].split()
        assert 3 <= len(en) == len(de) <= 8, r["id"]
        for e, d in zip(en, de):
            assert mapping.setdefault(e, d) == d, f"{e!r} maps to {mapping[e]!r} and {d!r}"
    assert len(set(mapping.values())) == len(mapping)  # one-to-one
    assert 250 <= len(mapping) <= 400
    train_en = {r["translation"]["en"] for r in train}
    assert not train_en & {r["translation"]["en"] for r in _records("translation", "validation")}


def test_config_matches_tokenizer(config, tokenizer):
    assert config.model_type == "marian"
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (128, 2, 2)
    assert config.vocab_size == len(tokenizer)
    assert config.max_position_embeddings == 256 == tokenizer.model_max_length
    assert config.pad_token_id == tokenizer.pad_token_id == config.decoder_start_token_id
    assert config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.unk_token is not None


def test_tokenizer_config_names_the_portable_class(recipe):
    data = json.loads((SAMPLES / recipe / "model" / "tokenizer_config.json").read_text())
    assert data["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert not list((SAMPLES / recipe / "model").glob("*.safetensors"))  # no weights bundled


def test_generation_config_loads(recipe, config):
    from transformers import GenerationConfig

    gen = GenerationConfig.from_pretrained(SAMPLES / recipe / "model")
    assert gen.decoder_start_token_id == config.decoder_start_token_id
    assert gen.eos_token_id == config.eos_token_id
    assert gen.pad_token_id == config.pad_token_id
    assert gen.num_beams == 1
    # max_length beside the recipes' max_new_tokens makes transformers warn on every generate call.
    saved = json.loads((SAMPLES / recipe / "model" / "generation_config.json").read_text())
    assert "max_length" not in saved and saved["max_new_tokens"] > 0


def test_tokenizer_round_trips_and_appends_eos(recipe, tokenizer):
    texts = _texts(recipe, "validation")
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert ids[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 1
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    target = tokenizer(text_target=texts[:2])["input_ids"]
    assert all(ids[-1] == tokenizer.eos_token_id for ids in target)


def test_summarization_documents_fit_a_128_token_source():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SAMPLES / "summarization" / "model")
    docs = [r["document"] for s in ("train", "validation") for r in _records("summarization", s)]
    assert max(len(ids) for ids in tok(docs)["input_ids"]) <= 128


def test_every_lexicon_word_is_one_token():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SAMPLES / "translation" / "model")
    words = {w for t in _texts("translation", "train") for w in t.split()}
    assert all(len(tok(w, add_special_tokens=False)["input_ids"]) == 1 for w in words)


def test_model_builds_from_config_and_trains_one_step(recipe, config, tokenizer):
    """One real AdamW step on a validation batch: finite loss, the weights that got a gradient move (and only those:
    no weight decay, so nothing moves without one), and the same batch's loss goes down."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    texts = _texts(recipe, "validation")[:4]
    batch = tokenizer(texts[0::2], text_target=texts[1::2], padding=True, return_tensors="pt")
    batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100
    model.train()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    graded = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert graded, "the loss reached no weight"
    optimizer.step()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert moved == graded
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with torch.no_grad():
        after = model(**batch).loss
    assert torch.isfinite(after) and after < loss
    model.eval()
    out = model.generate(input_ids=batch["input_ids"][:1], max_new_tokens=3)
    assert out[0, 0].item() == config.decoder_start_token_id


def _load_build_script():
    """Import scripts/build_samples.py by path (scripts/ is not a package)."""
    name = "_accel_tasks_build_samples"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BUILD_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while executing it
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_translation_build_is_reproducible(tmp_path):
    build = _load_build_script()
    build.build_translation(tmp_path)
    for name in (
        "train.jsonl",
        "validation.jsonl",
        "model/config.json",
        "model/tokenizer.json",
        "model/tokenizer_config.json",
        "model/generation_config.json",
    ):
        assert filecmp.cmp(tmp_path / "translation" / name, SAMPLES / "translation" / name, shallow=False), name


def test_lexicon_rejects_a_word_mapped_twice(monkeypatch):
    build = _load_build_script()
    monkeypatch.setattr(build, "LEXICON_TEXT", "dog Hund|cat Hund|tree Baum")
    with pytest.raises(ValueError, match="distinct German word"):
        build.lexicon()


@pytest.mark.slow  # walks the whole stdlib: ~10 s of CPU
@pytest.mark.skipif(
    sys.version_info[:3] != (3, 11, 7),
    reason="the committed summarization text comes from the CPython 3.11.7 stdlib",
)
def test_summarization_build_is_reproducible(tmp_path):
    build = _load_build_script()
    build.build_summarization(tmp_path)
    for name in ("train.jsonl", "validation.jsonl", "model/config.json", "model/tokenizer.json", "LICENSE-PSF.txt"):
        assert filecmp.cmp(tmp_path / "summarization" / name, SAMPLES / "summarization" / name, shallow=False), name
