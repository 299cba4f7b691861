"""Translation recipe: data formats, T5 prefixes, language-code tokenizers, bad rows, truncation, references;
end to end through ``accelerate launch`` on the bundled sample; and (slow) that the tiny default model learns.

Unit tests build their own tiny tokenizers and models in temporary folders (word-level tokenizers, so token
counts are hand-countable; mBART / NLLB / M2M100 tokenizers from a vocabulary or a sentencepiece model trained
here), and never touch the network.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from accel_tasks.errors import ConfigError
from accel_tasks.features.cache import make_features
from accel_tasks.preflight import resolve_config
from accel_tasks.recipes.languages import default_prefix, language_codes, pick_language_code
from accel_tasks.recipes.translation import TranslationRecipe, metric_references

from helpers import check, read_json, read_jsonl, run_cli

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

WORDS = [("house", "Haus"), ("dog", "Hund"), ("cat", "Katze"), ("tree", "Baum"), ("car", "Auto"), ("book", "Buch")]
PREFIX_WORDS = ["translate", "English", "to", "German", ":"]
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SAMPLE = Path(__file__).resolve().parents[2] / "accel_tasks" / "samples" / "translation"


# ---------------------------------------------------------------- tiny tokenizers and models


def word_tokenizer() -> "transformers.PreTrainedTokenizerFast":
    """One token per word (plus </s>), so lengths can be counted by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for word in [w for pair in WORDS for w in pair] + PREFIX_WORDS:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def save_model_dir(path: Path, tokenizer, kind: str = "marian") -> Path:
    """A config-only model folder (the recipe builds random weights from it) plus the tokenizer."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    vocab = len(tokenizer) + 300  # room for language codes beyond the base vocabulary (M2M100)
    if kind == "mbart":  # mBART-cc25 style: no decoder start token in the config
        config = transformers.MBartConfig(
            vocab_size=vocab,
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=64,
            **ids,
        )
    elif kind == "t5":
        config = transformers.T5Config(
            vocab_size=vocab,
            d_model=16,
            d_ff=32,
            d_kv=8,
            num_layers=1,
            num_heads=2,
            decoder_start_token_id=ids["pad_token_id"],
            **ids,
        )
    else:
        config = transformers.MarianConfig(
            vocab_size=vocab,
            decoder_vocab_size=vocab,
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=64,
            decoder_start_token_id=ids["eos_token_id"],
            forced_eos_token_id=None,
            **ids,
        )
    config.save_pretrained(path)
    return path


def bpe_vocab() -> tuple[dict, list]:
    """A BPE vocabulary and merges over the lexicon, with fairseq's special-token order."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<s>", PAD, EOS, UNK], show_progress=False)
    tok.train_from_iterator([" ".join(w for pair in WORDS for w in pair)] * 5, trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m) for m in model["merges"]]


def nllb_tokenizer():
    vocab, merges = bpe_vocab()
    return transformers.NllbTokenizer(
        vocab=vocab,
        merges=merges,
        additional_special_tokens=["eng_Latn", "deu_Latn", "ron_Latn", "zho_Hans", "zho_Hant"],
    )


def mbart_vocab() -> list:
    vocab, _ = bpe_vocab()
    return [(token, -float(i)) for i, token in enumerate(sorted(vocab, key=vocab.get))]


def m2m100_tokenizer(folder: Path):
    """M2M100 needs a sentencepiece model and a vocab.json: trained here on the lexicon."""
    sentencepiece = pytest.importorskip("sentencepiece")
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    text = [" ".join(pair) for pair in WORDS] * 10
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buffer, vocab_size=40, hard_vocab_limit=False, minloglevel=2
    )
    (folder / "sentencepiece.bpe.model").write_bytes(buffer.getvalue())
    processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / "sentencepiece.bpe.model"))
    vocab = {"<s>": 0, PAD: 1, EOS: 2, UNK: 3}
    for i in range(processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(i), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    return transformers.M2M100Tokenizer(
        vocab_file=str(folder / "vocab.json"), spm_file=str(folder / "sentencepiece.bpe.model")
    )


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory) -> Path:
    return save_model_dir(tmp_path_factory.mktemp("marian"), word_tokenizer())


def make_recipe(model_dir: Path, *overrides: str) -> TranslationRecipe:
    cfg, cls = resolve_config(["recipe=translation", f"model.name_or_path={model_dir}", *overrides], None)
    recipe = cls(cfg)
    recipe.validate_options()
    recipe.load_model()
    return recipe


def wmt_rows(pairs=((0, 1), (2, 3, 4), (5,))) -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "translation": {"en": " ".join(WORDS[j][0] for j in idx), "de": " ".join(WORDS[j][1] for j in idx)},
        }
        for i, idx in enumerate(pairs)
    ]


def features_of(recipe: TranslationRecipe, rows: list[dict], split: str = "train"):
    raw = recipe.prepare_raw(datasets.Dataset.from_list(rows), split)
    return raw, make_features(recipe, raw, split, recipe.cfg.data)


def ids(tokenizer, text: str, **kwargs) -> list[int]:
    return tokenizer(text, **kwargs)["input_ids"]


# ---------------------------------------------------------------- data formats


def test_wmt_translation_column_gives_sources_and_labels(marian_dir):
    recipe = make_recipe(marian_dir, "task.source_lang=en", "task.target_lang=de")
    tok = recipe.processor
    raw, features = features_of(recipe, wmt_rows())
    assert features[1]["input_ids"] == ids(tok, "cat tree car") == [7, 9, 11, 1]
    assert features[1]["labels"] == ids(tok, "Katze Baum Auto")
    assert recipe.options.source_prefix == ""  # Marian: no T5 prefix


def test_reverse_direction_and_other_language_inferred(marian_dir, capsys):
    recipe = make_recipe(marian_dir, "task.target_lang=en")  # source is the other key: de
    _, features = features_of(recipe, wmt_rows())
    assert recipe.options.source_lang == "de"
    assert features[0]["input_ids"] == ids(recipe.processor, "Haus Hund")
    assert features[0]["labels"] == ids(recipe.processor, "house dog")
    assert "task.source_lang=de task.target_lang=en" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv", "parquet"])
def test_local_files_with_flat_columns(marian_dir, tmp_path, suffix):
    rows = [{"src": r["translation"]["en"], "tgt": r["translation"]["de"]} for r in wmt_rows()]
    path = tmp_path / f"train.{suffix}"
    frame = datasets.Dataset.from_list(rows)
    {
        "json": lambda: path.write_text(json.dumps(rows)),
        "jsonl": lambda: frame.to_json(path),
        "csv": lambda: frame.to_csv(path, index=False),
        "parquet": lambda: frame.to_parquet(path),
    }[suffix]()
    recipe = make_recipe(marian_dir, f"data.train_file={path}", "task.source_column=src", "task.target_column=tgt")
    raw = recipe.load_data(("train",))["train"]
    assert recipe.required_columns("train", raw.column_names) == {
        "src": "task.source_column",
        "tgt": "task.target_column",
    }
    raw = recipe.prepare_raw(raw, "train")
    features = make_features(recipe, raw, "train", recipe.cfg.data)
    assert [f["labels"] for f in features] == [ids(recipe.processor, r["tgt"]) for r in rows]


def test_dataset_folder_with_the_wmt_translation_feature(marian_dir, tmp_path):
    # data.name takes a hub id or a dataset folder; wmt16 rows look like this (a Translation feature).
    features = datasets.Features({"translation": datasets.Translation(languages=["en", "ro"])})
    for split, n in (("train", 3), ("validation", 2)):
        rows = {"translation": [{"en": WORDS[i][0], "ro": WORDS[i][1]} for i in range(n)]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / f"{split}.parquet")
    recipe = make_recipe(marian_dir, f"data.name={tmp_path}", "task.source_lang=en", "task.target_lang=ro")
    raw = recipe.load_data(("train", "validation"))
    assert [len(raw[s]) for s in ("train", "validation")] == [3, 2]
    prepared = recipe.prepare_raw(raw["validation"], "validation")
    features_ = make_features(recipe, prepared, "validation", recipe.cfg.data)
    assert features_[1]["labels"] == ids(recipe.processor, "Hund")


def test_columns_named_after_the_languages(marian_dir):
    rows = [{"en": r["translation"]["en"], "de": r["translation"]["de"]} for r in wmt_rows()]
    recipe = make_recipe(marian_dir, "task.source_lang=en", "task.target_lang=de")
    assert recipe.required_columns("train", ["en", "de"]) == {"en": "task.source_column", "de": "task.target_column"}
    _, features = features_of(recipe, rows)
    assert features[2]["labels"] == ids(recipe.processor, "Buch")


def test_bundled_sample_loads_through_the_default_data_path(marian_dir):
    recipe = make_recipe(marian_dir, "task.source_lang=en", "task.target_lang=de", "data.max_train_samples=5")
    raw = recipe.load_data(("train",))["train"]
    assert len(raw) == 5 and set(raw[0]["translation"]) == {"en", "de"}


def test_missing_columns_and_languages_are_clear_errors(marian_dir):
    recipe = make_recipe(marian_dir, "task.source_lang=en", "task.target_lang=fr")
    with pytest.raises(ConfigError, match=r"task.target_lang='fr' is not a language .*its 3 rows have de, en"):
        features_of(recipe, wmt_rows())
    recipe = make_recipe(marian_dir)
    with pytest.raises(ConfigError, match=r"set task.source_lang and task.target_lang .*it has: de, en"):
        features_of(recipe, wmt_rows())
    with pytest.raises(ConfigError, match=r"no 'translation' column \(columns: text, label\); set task.source_column"):
        recipe.required_columns("train", ["text", "label"])
    with pytest.raises(ConfigError, match="must hold {language: text} mappings"):
        features_of(make_recipe(marian_dir, "task.source_lang=en", "task.target_lang=de"), [{"translation": "house"}])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["task.target_column=tgt"], "task.source_column is not"),
        (["task.source_column=src"], "set task.target_column"),
        (["task.source_lang=en", "task.target_lang=en"], "two different languages"),
        (["task.max_source_length=0"], "task.max_source_length=0 must be at least 1 token"),
    ],
)
def test_option_errors_before_anything_heavy(overrides, message):
    cfg, cls = resolve_config(["recipe=translation", *overrides], None)
    with pytest.raises(ConfigError, match=message):
        cls(cfg).validate_options()


# ---------------------------------------------------------------- T5 prefix


def test_t5_gets_a_translate_prefix_by_default(tmp_path):
    model_dir = save_model_dir(tmp_path / "t5", word_tokenizer(), kind="t5")
    recipe = make_recipe(model_dir, "task.source_lang=en", "task.target_lang=de")
    _, features = features_of(recipe, wmt_rows())
    assert recipe.options.source_prefix == "translate English to German: "
    assert features[2]["input_ids"] == ids(recipe.processor, "translate English to German: book")
    explicit = make_recipe(model_dir, "task.source_lang=en", "task.target_lang=de", "task.source_prefix=")
    features_of(explicit, wmt_rows())
    assert explicit.options.source_prefix == ""


def test_default_prefix_rules():
    assert default_prefix("t5", "en", "ro") == "translate English to Romanian: "
    assert default_prefix("t5", "de", "fr") == "translate German to French: "
    assert default_prefix("marian", "en", "ro") is None
    assert default_prefix("t5", "en", "xx") is None
    assert default_prefix("t5", None, "ro") is None


# ---------------------------------------------------------------- language-code tokenizers


def test_nllb_codes_from_iso_languages_and_forced_bos_in_generation(tmp_path):
    model_dir = save_model_dir(tmp_path / "nllb", nllb_tokenizer())
    recipe = make_recipe(model_dir, "task.source_lang=en", "task.target_lang=de", "generation.max_new_tokens=4")
    tok = recipe.processor
    raw, features = features_of(recipe, wmt_rows(), split="validation")
    eng, deu = tok.convert_tokens_to_ids("eng_Latn"), tok.convert_tokens_to_ids("deu_Latn")
    assert (recipe.options.source_lang_code, recipe.options.target_lang_code) == ("eng_Latn", "deu_Latn")
    assert features[0]["input_ids"][0] == eng and features[0]["input_ids"][-1] == tok.eos_token_id
    assert features[0]["labels"][0] == deu
    assert recipe.generation_kwargs()["forced_bos_token_id"] == deu
    batch = recipe.collate([features[i] for i in range(len(features))])
    generated = recipe.predict(recipe.model.eval(), batch)["generated_tokens"]
    assert generated[:, 0].tolist() == [recipe.model.config.decoder_start_token_id] * 3
    assert generated[:, 1].tolist() == [deu] * 3


def test_mbart50_and_mbart_codes(tmp_path):
    mbart50 = save_model_dir(tmp_path / "mbart50", transformers.MBart50Tokenizer(vocab=mbart_vocab()))
    recipe = make_recipe(mbart50, "task.source_lang=en", "task.target_lang=ro")
    _, features = features_of(recipe, [{"translation": {"en": "house", "ro": "casa"}}])
    ro = recipe.processor.convert_tokens_to_ids("ro_RO")
    assert recipe.options.target_lang_code == "ro_RO" and features[0]["labels"][0] == ro
    assert recipe.generation_kwargs()["forced_bos_token_id"] == ro
    # mBART-cc25 style ends sequences with the code, so nothing is forced at the start.
    mbart = save_model_dir(tmp_path / "mbart", transformers.MBartTokenizer(vocab=mbart_vocab()))
    recipe = make_recipe(mbart, "task.source_lang=en", "task.target_lang=ro")
    _, features = features_of(recipe, [{"translation": {"en": "house", "ro": "casa"}}])
    assert features[0]["labels"][-1] == recipe.processor.convert_tokens_to_ids("ro_RO")
    assert "forced_bos_token_id" not in recipe.generation_kwargs()
    # ... and a model without a decoder start token starts decoding from the target code.
    cc25 = save_model_dir(tmp_path / "cc25", transformers.MBartTokenizer(vocab=mbart_vocab()), kind="mbart")
    recipe = make_recipe(cc25, "task.source_lang=en", "task.target_lang=ro", "generation.max_new_tokens=2")
    _, features = features_of(recipe, [{"translation": {"en": "house", "ro": "casa"}}])
    ro = recipe.processor.convert_tokens_to_ids("ro_RO")
    assert recipe.model.config.decoder_start_token_id is None
    assert recipe.generation_kwargs()["decoder_start_token_id"] == ro
    generated = recipe.predict(recipe.model.eval(), recipe.collate([features[0]]))["generated_tokens"]
    assert generated[0, 0].item() == ro


def test_m2m100_codes_are_the_languages(tmp_path):
    model_dir = save_model_dir(tmp_path / "m2m", m2m100_tokenizer(tmp_path / "spm"))
    recipe = make_recipe(model_dir, "task.source_lang=en", "task.target_lang=de")
    _, features = features_of(recipe, wmt_rows())
    tok = recipe.processor
    assert (recipe.options.source_lang_code, recipe.options.target_lang_code) == ("en", "de")
    assert features[0]["input_ids"][0] == tok.get_lang_id("en")
    assert features[0]["labels"][0] == tok.get_lang_id("de")
    assert recipe.generation_kwargs()["forced_bos_token_id"] == tok.get_lang_id("de")


def test_unknown_or_missing_language_code_lists_the_codes(tmp_path):
    model_dir = save_model_dir(tmp_path / "nllb", nllb_tokenizer())
    rows = [{"translation": {"en": "house", "xx": "Haus"}}]
    with pytest.raises(
        ConfigError, match=r"task.target_lang='xx' .* NllbTokenizer .*set task.target_lang_code to one of: .*deu_Latn"
    ):
        features_of(make_recipe(model_dir, "task.source_lang=en", "task.target_lang=xx"), rows)
    with pytest.raises(
        ConfigError, match=r"task.target_lang_code='de_DE' is not a language code .*it knows: .*eng_Latn"
    ):
        features_of(
            make_recipe(model_dir, "task.source_lang=en", "task.target_lang=xx", "task.target_lang_code=de_DE"), rows
        )
    flat = [{"src": "house", "tgt": "Haus"}]
    with pytest.raises(ConfigError, match=r"needs a source language code: set task.source_lang .*eng_Latn"):
        features_of(make_recipe(model_dir, "task.source_column=src", "task.target_column=tgt"), flat)
    with pytest.raises(ConfigError, match="several codes .*zho_Hans, zho_Hant"):
        pick_language_code(language_codes(nllb_tokenizer()), None, "zh", "target", "NllbTokenizer")


def test_language_code_options_need_a_language_code_tokenizer(marian_dir):
    recipe = make_recipe(marian_dir, "task.source_lang=en", "task.target_lang=de", "task.target_lang_code=deu_Latn")
    with pytest.raises(ConfigError, match="has no language codes; unset them"):
        features_of(recipe, wmt_rows())


def test_language_codes_of_plain_tokenizers_are_none():
    assert language_codes(word_tokenizer()) is None
    assert {"eng_Latn", "deu_Latn"} <= set(language_codes(nllb_tokenizer()))


# ---------------------------------------------------------------- bad rows and truncation


def test_unusable_rows_are_dropped_and_named(marian_dir, capsys):
    rows = wmt_rows() + [
        {"id": "empty-src", "translation": {"en": "  ", "de": "Haus"}},
        {"id": "no-de", "translation": {"en": "house"}},
        {"id": "empty-de", "translation": {"en": "house", "de": ""}},
    ]
    recipe = make_recipe(marian_dir, "task.source_lang=en", "task.target_lang=de")
    raw, features = features_of(recipe, rows)
    assert raw["id"] == ["r0", "r1", "r2"] and len(features) == 3
    out = capsys.readouterr().out  # recipe lines go to the run's console (accel_tasks.log)
    assert "train: dropped 3 of 6 rows that cannot be used" in out
    assert "1 with an empty 'en' text (row 3)" in out
    assert "1 with no 'de' text (row 4)" in out
    assert "1 with an empty 'de' text (row 5)" in out


def test_no_usable_row_is_an_error(marian_dir):
    recipe = make_recipe(marian_dir, "task.source_column=src", "task.target_column=tgt")
    rows = [{"src": "", "tgt": "Haus"}, {"src": "house", "tgt": None}]
    with pytest.raises(
        ConfigError, match=r"no usable rows: 1 with an empty 'src' text \(row 0\); 1 with no 'tgt' text \(row 1\)"
    ):
        features_of(recipe, rows)


def test_long_sources_are_truncated_and_counted(marian_dir, capsys):
    # Token counts: words + </s>. With max 4: "cat tree car" = 4 fits; 5 and 6 words do not.
    pairs = ((0, 1), (2, 3, 4), (0, 1, 2, 3), (0, 1, 2, 3, 4))
    recipe = make_recipe(marian_dir, "task.source_lang=en", "task.target_lang=de", "task.max_source_length=4")
    _, features = features_of(recipe, wmt_rows(pairs))
    out = capsys.readouterr().out
    assert "train: 2 of 4 sources are longer than task.max_source_length=4 tokens and are truncated" in out
    assert [len(f["input_ids"]) for f in features] == [3, 4, 4, 4]


# ---------------------------------------------------------------- references and outputs


def test_metric_references_pad_ragged_lists_with_none():
    assert metric_references([["a"], ["b"]]) == ["a", "b"]
    assert metric_references([["a", "a2"], ["b"]]) == [["a", "a2"], ["b", None]]


def test_references_column_and_list_targets(marian_dir):
    import numpy as np

    rows = [
        {"id": 7, "src": "house dog", "tgt": ["Haus Hund", "Hund Haus"], "refs": ["Haus Hund", "", "Das Haus"]},
        {"id": 8, "src": "cat", "tgt": ["Katze"], "refs": ["Katze"]},
    ]
    recipe = make_recipe(marian_dir, "task.source_column=src", "task.target_column=tgt")
    raw, features = features_of(recipe, rows, split="validation")
    assert features[0]["labels"] == ids(recipe.processor, "Haus Hund")  # the first target is learnt
    assert recipe.reference_texts(raw) == [["Haus Hund", "Hund Haus"], ["Katze", None]]
    with_refs = make_recipe(
        marian_dir, "task.source_column=src", "task.target_column=tgt", "task.references_column=refs"
    )
    raw, features = features_of(with_refs, rows, split="validation")
    generated = np.array([ids(recipe.processor, "Haus Hund"), ids(recipe.processor, "Katze") + [-100]])
    result = with_refs.postprocess({"generated_tokens": generated}, raw, features)
    assert result.predictions == ["Haus Hund", "Katze"]
    assert result.references == [["Haus Hund", "Das Haus"], ["Katze", None]]
    assert result.records == [
        {"id": 7, "input": "house dog", "prediction": "Haus Hund", "references": ["Haus Hund", "Das Haus"]},
        {"id": 8, "input": "cat", "prediction": "Katze", "references": ["Katze"]},
    ]


def test_eval_only_references_without_a_target_column(marian_dir):
    rows = [{"src": "house", "refs": ["Haus", "Das Haus"]}, {"src": "dog", "refs": []}]
    recipe = make_recipe(marian_dir, "mode=eval", "task.source_column=src", "task.references_column=refs")
    assert recipe.required_columns("validation", ["src", "refs"]) == {
        "src": "task.source_column",
        "refs": "task.references_column",
    }
    raw, features = features_of(recipe, rows, split="validation")
    assert len(raw) == 1 and features[0]["labels"] == ids(recipe.processor, "Haus")


# ---------------------------------------------------------------- end to end through accelerate launch

REPO = Path(__file__).resolve().parents[2]
E2E_EVAL_ROWS = 12


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The offline default (bundled sample, tiny model, smoke settings), cut short."""
    out = tmp_path_factory.mktemp("translation-e2e") / "train"
    result = check(
        run_cli(
            [
                "recipe=translation",
                f"output_dir={out}",
                "train.max_steps=20",
                "train.log_every=10",
                "data.max_eval_samples=16",
                "train.threads=1",
            ],
            cwd=REPO,
        )
    )
    return out, result


def test_offline_default_run_trains_exports_and_scores(trained_run):
    out, result = trained_run
    config = (out / "config.yaml").read_text()
    assert "source_lang: en" in config and "target_lang: de" in config  # the bundled model's settings were merged
    metrics = read_json(out / "metrics.json")
    assert {"sacrebleu", "chrf", "eval_samples"} <= set(metrics) and metrics["eval_samples"] == 16
    records = read_jsonl(out / "predictions.jsonl")
    validation = read_jsonl(SAMPLE / "validation.jsonl")[:16]
    assert [r["id"] for r in records] == [v["id"] for v in validation]
    assert [r["input"] for r in records] == [v["translation"]["en"] for v in validation]
    assert [r["references"] for r in records] == [[v["translation"]["de"]] for v in validation]
    # The corpus scores are sacreBLEU's own over exactly what predictions.jsonl holds.
    import sacrebleu

    predictions, references = [r["prediction"] for r in records], [r["references"][0] for r in records]
    assert metrics["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, [references]).score)
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()


def test_eval_only_with_several_references_and_bad_rows(trained_run, tmp_path):
    sacrebleu = pytest.importorskip("sacrebleu")
    model_dir = trained_run[0] / "model"
    rows = read_jsonl(SAMPLE / "validation.jsonl")[:E2E_EVAL_ROWS]
    for i, row in enumerate(rows):  # every third row gets a second reference: the word order reversed
        german = row["translation"]["de"]
        row["refs"] = [german, " ".join(reversed(german.split()))] if i % 3 == 0 else [german]
    bad = [
        {"id": "bad-empty", "translation": {"en": "", "de": "Haus"}, "refs": ["Haus"]},
        {"id": "bad-missing", "translation": {"de": "Hund"}, "refs": ["Hund"]},
    ]
    data = tmp_path / "validation.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:5] + bad + rows[5:]))
    out = tmp_path / "eval"
    result = check(
        run_cli(
            [
                "recipe=translation",
                "mode=eval",
                f"model.name_or_path={model_dir}",
                f"data.validation_file={data}",
                "task.source_lang=en",
                "task.target_lang=de",
                "task.references_column=refs",
                f"output_dir={out}",
                "generation.num_beams=1",
                "generation.max_new_tokens=24",
                "eval.metrics=[sacrebleu,chrf]",
                "train.threads=1",
            ],
            cwd=REPO,
        )
    )
    assert (
        "dropped 2 of 14 rows that cannot be used: 1 with an empty 'en' text (row 5); 1 with no 'en' text (row 6)"
        in result.stdout
    )  # recipe notices go through the run's log
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    assert [r["references"] for r in records] == [r["refs"] for r in rows]
    assert set(records[0]) == {"id", "input", "prediction", "references"}
    predictions = [r["prediction"] for r in records]
    streams = [[r["refs"][0] for r in rows], [r["refs"][1] if len(r["refs"]) > 1 else None for r in rows]]
    metrics = read_json(out / "metrics.json")
    assert metrics["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, streams).score)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, streams).score)
    assert metrics["eval_samples"] == E2E_EVAL_ROWS
