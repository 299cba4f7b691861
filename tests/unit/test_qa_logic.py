"""Extractive QA task logic: SQuAD flattening, windowed features and labels, validation, postprocessing."""

from __future__ import annotations

import json
import math
import runpy
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from accel_tasks.recipes.qa import (
    QADataError,
    SpanRules,
    check_fast_tokenizer,
    flatten_squad,
    is_nested_squad,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    squad_references,
    validate_examples,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "accel_tasks" / "samples" / "extractive_qa"

# 20 context words w0..w19 (one token each) and a few question words.
WORDS = [f"w{i}" for i in range(20)] + ["where", "is", "it", "what", "?", "."]
CONTEXT = " ".join(f"w{i}" for i in range(20))  # word i occupies chars [3i, 3i+2) for i < 10


def word_char(i: int) -> int:
    """Character start of word i in CONTEXT."""
    return CONTEXT.index(f"w{i}", 0 if i < 10 else 30)


def make_tokenizer(padding_side: str = "right") -> PreTrainedTokenizerFast:
    """Word-level BERT-style fast tokenizer built in memory: one token per word or punctuation mark."""
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_max_length=512,
    )
    tokenizer.padding_side = padding_side
    return tokenizer


def example(qid: str, first_word: int | None, last_word: int | None, question: str = "where is it ?") -> dict:
    if first_word is None:
        answers = {"text": [], "answer_start": []}
    else:
        start = word_char(first_word)
        end = word_char(last_word) + len(f"w{last_word}")
        answers = {"text": [CONTEXT[start:end]], "answer_start": [start]}
    return {"id": qid, "title": "t", "context": CONTEXT, "question": question, "answers": answers}


def columns(rows: list[dict]) -> dict[str, list]:
    return {key: [row[key] for row in rows] for key in rows[0]}


# ---------------------------------------------------------------------------------------------- format


NESTED = {
    "version": "v2.0",
    "data": [
        {
            "title": "Cats",
            "paragraphs": [
                {
                    "context": "Cats sleep a lot.",
                    "qas": [
                        {
                            "id": "a1",
                            "question": "What do cats do?",
                            "answers": [
                                {"text": "sleep", "answer_start": 5},
                                {"text": "sleep a lot", "answer_start": 5},
                            ],
                        },
                        {
                            "id": "a2",
                            "question": "Do cats fly?",
                            "answers": [],
                            "is_impossible": True,
                            "plausible_answers": [{"text": "sleep", "answer_start": 5}],
                        },
                    ],
                }
            ],
        },
        {
            "title": "Dogs",
            "paragraphs": [
                {
                    "context": "Dogs bark.",
                    "qas": [
                        {"id": 7, "question": "What do dogs do?", "answers": [{"text": "bark", "answer_start": 5}]}
                    ],
                }
            ],
        },
    ],
}


def test_flatten_squad_rows():
    assert flatten_squad(NESTED) == [
        {
            "id": "a1",
            "title": "Cats",
            "context": "Cats sleep a lot.",
            "question": "What do cats do?",
            "answers": {"text": ["sleep", "sleep a lot"], "answer_start": [5, 5]},
        },
        {
            "id": "a2",
            "title": "Cats",
            "context": "Cats sleep a lot.",
            "question": "Do cats fly?",
            "answers": {"text": [], "answer_start": []},
        },
        {
            "id": "7",
            "title": "Dogs",
            "context": "Dogs bark.",
            "question": "What do dogs do?",
            "answers": {"text": ["bark"], "answer_start": [5]},
        },
    ]


def test_flatten_squad_names_the_broken_place():
    broken = {"data": [{"title": "x", "paragraphs": [{"context": "c", "qas": [{"id": "q", "answers": []}]}]}]}
    with pytest.raises(QADataError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\] has no 'question'"):
        flatten_squad(broken)
    with pytest.raises(QADataError, match="has no 'data'"):
        flatten_squad({"rows": []})


def test_is_nested_squad(tmp_path):
    nested = tmp_path / "dev.json"
    nested.write_text(json.dumps(NESTED))
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps(flatten_squad(NESTED)))
    lines = tmp_path / "rows.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in flatten_squad(NESTED)))
    assert is_nested_squad(nested)
    assert not is_nested_squad(flat)
    assert not is_nested_squad(lines)
    assert not is_nested_squad(tmp_path / "missing.json")


# -------------------------------------------------------------------------------------------- features


# max_seq_length 15 = [CLS] + 4 question tokens + [SEP] + 8 context + [SEP]; stride 3 -> windows over
# context words [0, 8), [5, 13), [10, 18), [15, 20); a window's first context token sits at position 6.
MAX_LEN, STRIDE, CTX0 = 15, 3, 6


def test_long_context_windows_and_labels():
    tok = make_tokenizer()
    rows = [example("in-two", 6, 7), example("crosses", 7, 8), example("none", None, None)]
    feats = prepare_train_features(columns(rows), tok, MAX_LEN, STRIDE)
    assert len(feats["input_ids"]) == 12  # 4 windows per example
    assert all(len(ids) <= MAX_LEN for ids in feats["input_ids"])
    starts, ends = feats["start_positions"], feats["end_positions"]
    # "w6 w7": windows 0 and 1 hold it whole; windows 2 and 3 do not -> CLS (0).
    assert (starts[:4], ends[:4]) == ([CTX0 + 6, CTX0 + 1, 0, 0], [CTX0 + 7, CTX0 + 2, 0, 0])
    # "w7 w8": window 0 ends at w7 (answer cut) -> CLS; window 1 holds it.
    assert (starts[4:8], ends[4:8]) == ([0, CTX0 + 2, 0, 0], [0, CTX0 + 3, 0, 0])
    # unanswerable -> CLS everywhere.
    assert starts[8:] == [0, 0, 0, 0] and ends[8:] == [0, 0, 0, 0]
    # windows overlap by exactly `stride` context tokens
    first, second = feats["input_ids"][0], feats["input_ids"][1]
    assert first[CTX0 + 8 - STRIDE : CTX0 + 8] == second[CTX0 : CTX0 + STRIDE]


def test_eval_features_keep_ids_and_context_offsets():
    tok = make_tokenizer()
    rows = [example("a", 6, 7), example("b", 1, 1)]
    feats = prepare_eval_features(columns(rows), tok, MAX_LEN, STRIDE)
    assert feats["example_id"] == ["a"] * 4 + ["b"] * 4
    assert feats["cls_index"] == [0] * 8
    for ids, offsets in zip(feats["input_ids"], feats["offset_mapping"]):
        assert offsets[:CTX0] == [None] * CTX0 and offsets[-1] is None  # [CLS] question [SEP] ... [SEP]
        spans = [CONTEXT[o[0] : o[1]] for o in offsets[CTX0:-1]]
        assert all(s.startswith("w") for s in spans)
        assert [tok.convert_ids_to_tokens(i) for i in ids[CTX0:-1]] == spans
    assert "start_positions" not in feats


def test_left_padding_tokenizer_puts_context_first():
    tok = make_tokenizer("left")
    feats = prepare_train_features(columns([example("x", 6, 7)]), tok, MAX_LEN, STRIDE)
    # [CLS] context(8) [SEP] question(4) [SEP]: context starts at position 1.
    assert feats["start_positions"] == [1 + 6, 1 + 1, 0, 0]
    assert feats["end_positions"] == [1 + 7, 1 + 2, 0, 0]
    evals = prepare_eval_features(columns([example("x", 6, 7)]), tok, MAX_LEN, STRIDE)
    offsets = evals["offset_mapping"][0]
    assert offsets[0] is None and offsets[1] == [0, 2] and offsets[9:] == [None] * 6
    # padded to max length on the left, the last window ([CLS] w15..w19 [SEP] q [SEP], 12 tokens) starts at 3
    padded = prepare_eval_features(columns([example("x", 6, 7)]), tok, MAX_LEN, STRIDE, pad_to_max=True)
    assert padded["cls_index"] == [0, 0, 0, 3]
    assert padded["offset_mapping"][3][:5] == [None] * 4 + [[50, 53]]  # w15 starts at 30 + 5 * 4


def test_padding_to_max_length_keeps_labels():
    tok = make_tokenizer()
    feats = prepare_train_features(columns([example("x", 18, 19)]), tok, MAX_LEN, STRIDE, pad_to_max=True)
    assert {len(ids) for ids in feats["input_ids"]} == {MAX_LEN}
    # last window holds w15..w19 (5 tokens) then [SEP] and padding
    assert feats["start_positions"][-1] == CTX0 + 3 and feats["end_positions"][-1] == CTX0 + 4
    assert feats["input_ids"][-1][-1] == tok.pad_token_id


def test_leading_question_whitespace_is_stripped():
    tok = make_tokenizer()
    plain = prepare_eval_features(columns([example("x", 1, 1)]), tok, MAX_LEN, STRIDE)
    spaced = prepare_eval_features(columns([example("x", 1, 1, question="   where is it ?")]), tok, MAX_LEN, STRIDE)
    assert plain["input_ids"] == spaced["input_ids"]


def test_question_too_long_names_the_example():
    tok = make_tokenizer()
    rows = [example("ok", 1, 1), example("long-q", 1, 1, question="where is it ? " * 3)]
    with pytest.raises(QADataError, match=r"example 'long-q'.*12 tokens.*max_seq_length to at least 19"):
        prepare_train_features(columns(rows), tok, MAX_LEN, STRIDE)
    with pytest.raises(QADataError, match="doc_stride=8"):
        prepare_eval_features(columns([example("x", 1, 1)]), tok, MAX_LEN, 8)
    with pytest.raises(QADataError, match="model_max_length=512"):
        prepare_eval_features(columns([example("x", 1, 1)]), tok, 1024, STRIDE)


def slow_tokenizer(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    try:  # transformers 5 keeps the Python WordPiece tokenizer under this name
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as Slow
    except ImportError:  # transformers 4: BertTokenizer is the slow one
        from transformers import BertTokenizer as Slow
    return Slow(str(vocab))


def test_slow_tokenizer_is_a_clear_error(tmp_path):
    slow = slow_tokenizer(tmp_path)
    assert not slow.is_fast
    with pytest.raises(QADataError, match="fast tokenizer"):
        check_fast_tokenizer(slow)
    with pytest.raises(QADataError, match="fast tokenizer"):
        prepare_train_features(columns([example("x", 1, 1)]), slow, MAX_LEN, STRIDE)
    check_fast_tokenizer(make_tokenizer())


def test_validate_examples_names_each_bad_row():
    good = example("good", 2, 3)
    shifted = example("shifted", 2, 3)
    shifted["answers"]["answer_start"] = [1]
    empty_context = dict(example("no-context", 2, 2), context="   ")
    empty_question = dict(example("no-question", 2, 2), question="")
    dup = example("good", 4, 4)
    unanswerable = example("no-answer", None, None)
    rows = [good, shifted, empty_context, empty_question, dup, unanswerable]
    problems = validate_examples(rows)
    assert len(problems) == 4
    assert any("'good'" in p and "2 times" in p for p in problems)
    assert any("'shifted'" in p and "answer_start=1" in p for p in problems)
    assert any("'no-context'" in p and "empty context" in p for p in problems)
    assert any("'no-question'" in p and "empty question" in p for p in problems)
    strict = validate_examples(columns([good, unanswerable]), allow_unanswerable=False)
    assert len(strict) == 1 and "'no-answer'" in strict[0] and "version_2_with_negative" in strict[0]
    assert validate_examples([good]) == []
    with pytest.raises(QADataError, match="missing column.*answers"):
        validate_examples([{"id": "x", "context": "c", "question": "q"}])


# -------------------------------------------------------------------------------------------- postprocess


def hand_features() -> tuple[dict, dict]:
    """One example "the cat sat on the mat" seen through two windows, question tokens at positions 0-2."""
    context = "the cat sat on the mat"
    words = [(0, 3), (4, 7), (8, 11), (12, 14), (15, 18), (19, 22)]
    # window 0: positions 3..6 = words 0..3; window 1: positions 3..5 = words 3..5
    f0 = [None, None, None] + [list(w) for w in words[0:4]] + [None]
    f1 = [None, None, None] + [list(w) for w in words[3:6]] + [None]
    return {"id": ["ex"], "context": [context]}, {"example_id": ["ex", "ex"], "offset_mapping": [f0, f1]}


def logits(width: int = 10, **cells: float) -> np.ndarray:
    row = np.zeros(width, dtype=np.float32)
    for key, value in cells.items():
        row[int(key[1:])] = value
    return row


def test_postprocess_picks_best_span_across_features():
    examples, features = hand_features()
    # window 0: best "cat sat" = 2 + 2; window 1: best "mat" = 3.5 + 3 (position 5 = word 5).
    start = np.stack([logits(p4=2.0), logits(p4=1.0, p5=3.5)])
    end = np.stack([logits(p5=2.0), logits(p5=3.0)])
    pred = postprocess_qa_predictions(examples, features, start, end)
    assert pred.texts == ["mat"] and pred.scores.tolist() == [6.5]
    assert (pred.start_chars.tolist(), pred.end_chars.tolist()) == ([19], [22])
    assert pred.metric_predictions() == [{"id": "ex", "prediction_text": "mat"}]


def test_postprocess_ignores_question_and_padding_positions():
    examples, features = hand_features()
    # Huge logits on question token 1, on the trailing [SEP] (7) and past the feature length (9).
    start = np.stack([logits(p1=50.0, p7=40.0, p9=90.0, p4=1.0), logits()])
    end = np.stack([logits(p1=50.0, p7=40.0, p9=90.0, p5=1.0), logits()])
    pred = postprocess_qa_predictions(examples, features, start, end)
    assert pred.texts == ["cat sat"] and pred.scores.tolist() == [2.0]


def test_postprocess_respects_max_answer_length():
    examples, features = hand_features()
    start = np.stack([logits(p3=5.0, p5=1.0), logits()])
    end = np.stack([logits(p6=5.0, p5=2.0), logits()])
    assert postprocess_qa_predictions(examples, features, start, end).texts == ["the cat sat on"]
    short = postprocess_qa_predictions(examples, features, start, end, SpanRules(max_answer_length=2))
    # (3, 6) = 10 spans 4 tokens; allowed: (3, 3) = 5, (3, 4) = 5, (5, 5) = 3, (5, 6) = 1 + 5 = 6 "sat on".
    assert short.texts == ["sat on"] and short.scores.tolist() == [6.0]


def test_postprocess_v2_null_threshold_both_ways():
    examples, features = hand_features()
    # best span: "cat" = 2 + 2 = 4; null: CLS of window 0 = 3 + 3 = 6, window 1 = 5 + 5 = 10 -> min 6.
    start = np.stack([logits(p0=3.0, p4=2.0), logits(p0=5.0)])
    end = np.stack([logits(p0=3.0, p4=2.0), logits(p0=5.0)])
    null = postprocess_qa_predictions(examples, features, start, end, SpanRules(version_2_with_negative=True))
    assert null.texts == [""] and null.null_odds.tolist() == [2.0] and null.scores.tolist() == [6.0]
    # The metric gets the best span and its no-answer probability sigmoid(2) either way; the threshold goes to the
    # metric as sigmoid(threshold), so its scores are those of the answer chosen here.
    probability = 1.0 / (1.0 + math.exp(-2.0))
    assert null.metric_predictions() == [{"id": "ex", "prediction_text": "cat", "no_answer_probability": probability}]
    assert null.no_answer_threshold == 0.5
    kept = postprocess_qa_predictions(
        examples, features, start, end, SpanRules(version_2_with_negative=True, null_score_diff_threshold=2.5)
    )
    assert kept.texts == ["cat"] and kept.scores.tolist() == [4.0]
    assert kept.metric_predictions() == null.metric_predictions()
    assert kept.no_answer_threshold == pytest.approx(1.0 / (1.0 + math.exp(-2.5)))
    assert kept.records() == [
        {"id": "ex", "prediction_text": "cat", "score": 4.0, "null_odds": 2.0, "no_answer_probability": probability}
    ]


def test_postprocess_v2_reads_null_score_at_cls_index():
    examples, features = hand_features()
    features["cls_index"] = [1, 0]
    # position 1 of window 0 holds the CLS score 1 + 1 = 2 (< window 1's 5 + 5); best span "cat" = 4.
    start = np.stack([logits(p0=9.0, p1=1.0, p4=2.0), logits(p0=5.0)])
    end = np.stack([logits(p0=9.0, p1=1.0, p4=2.0), logits(p0=5.0)])
    pred = postprocess_qa_predictions(examples, features, start, end, SpanRules(version_2_with_negative=True))
    assert pred.texts == ["cat"] and pred.null_odds.tolist() == [-2.0]


def test_postprocess_input_errors():
    examples, features = hand_features()
    start = end = np.zeros((2, 10), dtype=np.float32)
    with pytest.raises(QADataError, match="pad logits"):
        postprocess_qa_predictions(examples, features, start[:, :6], end[:, :6])
    with pytest.raises(QADataError, match="1 rows of logits for 2 features"):
        postprocess_qa_predictions(examples, features, start[:1], end[:1])
    with pytest.raises(QADataError, match="not among the examples"):
        postprocess_qa_predictions({"id": ["other"], "context": ["c"]}, features, start, end)
    with pytest.raises(QADataError, match="have no features.*'lonely'"):
        postprocess_qa_predictions(
            {"id": ["ex", "lonely"], "context": ["the cat sat on the mat", "c"]}, features, start, end
        )


def reference(
    examples: dict,
    features: dict,
    start: np.ndarray,
    end: np.ndarray,
    n_best: int,
    max_len: int,
    v2: bool,
    threshold: float,
) -> tuple[list[str], list[float], list[list[tuple[float, str]]]]:
    """Plain loops: n-best context starts x n-best context ends per feature, all features of an example."""
    by_example = defaultdict(list)
    for f, example_id in enumerate(features["example_id"]):
        by_example[example_id].append(f)
    texts, scores, nbests = [], [], []
    for example_id, context in zip(examples["id"], examples["context"]):
        candidates, null = [], min(float(start[f][0]) + float(end[f][0]) for f in by_example[example_id])
        for f in by_example[example_id]:
            offsets = features["offset_mapping"][f]
            ctx = [j for j in range(len(offsets)) if offsets[j] is not None]
            top_s = sorted(ctx, key=lambda j: -start[f][j])[:n_best]
            top_e = sorted(ctx, key=lambda j: -end[f][j])[:n_best]
            for s in top_s:
                for e in top_e:
                    if s <= e < s + max_len:
                        candidates.append(
                            (float(start[f][s]) + float(end[f][e]), context[offsets[s][0] : offsets[e][1]])
                        )
        candidates.sort(key=lambda c: -c[0])
        best_score, best_text = candidates[0]
        if v2 and null - best_score > threshold:
            texts.append("")
            scores.append(null)
        else:
            texts.append(best_text)
            scores.append(best_score)
        nbests.append(candidates[:n_best])
    return texts, scores, nbests


@pytest.mark.parametrize("v2", [False, True])
def test_vectorised_matches_loop_reference_on_random_logits(v2):
    rng = np.random.default_rng(1)
    ids, contexts, feature_ids, offsets = [], [], [], []
    for n in range(40):
        n_tokens = int(rng.integers(5, 60))
        ids.append(f"e{n}")
        contexts.append(" ".join(f"t{j:02d}" for j in range(n_tokens)))
        for first in range(0, n_tokens, 20):  # windows of up to 25 tokens, 5 overlapping
            last = min(first + 25, n_tokens)
            feature_ids.append(f"e{n}")
            offsets.append([None] * 4 + [[4 * j, 4 * j + 3] for j in range(first, last)] + [None])
            if last == n_tokens:
                break
    width = max(len(o) for o in offsets) + 3
    start = rng.normal(size=(len(offsets), width)).astype(np.float32)
    end = rng.normal(size=(len(offsets), width)).astype(np.float32)
    examples = {"id": ids, "context": contexts}
    features = {"example_id": feature_ids, "offset_mapping": offsets}
    pred = postprocess_qa_predictions(
        examples,
        features,
        start,
        end,
        SpanRules(n_best_size=5, max_answer_length=4, version_2_with_negative=v2, null_score_diff_threshold=-0.5),
        return_nbest=True,
    )
    texts, scores, nbests = reference(examples, features, start, end, 5, 4, v2, -0.5)
    assert pred.texts == texts
    assert pred.scores.tolist() == scores
    assert [[(c["score"], c["text"]) for c in nb] for nb in pred.nbest] == nbests
    if v2:
        assert 0 < sum(t == "" for t in texts) < len(texts)  # the threshold cut both ways here

    import datasets

    from_dataset = postprocess_qa_predictions(
        datasets.Dataset.from_list([{"id": i, "context": c} for i, c in zip(ids, contexts)]),
        datasets.Dataset.from_dict(features),
        start,
        end,
        SpanRules(n_best_size=5, max_answer_length=4, version_2_with_negative=v2, null_score_diff_threshold=-0.5),
    )
    assert from_dataset.texts == texts and from_dataset.scores.tolist() == scores


def test_squad_references():
    rows = [example("a", 1, 2), example("b", None, None)]
    assert squad_references(columns(rows)) == [
        {"id": "a", "answers": {"text": ["w1 w2"], "answer_start": [3]}},
        {"id": "b", "answers": {"text": [], "answer_start": []}},
    ]


# ---------------------------------------------------------------------------------------------- samples


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_bundled_sample_is_valid_and_reproducible(tmp_path):
    script = runpy.run_path(str(ROOT / "scripts" / "make_qa_sample.py"))
    rows = {name: read_jsonl(SAMPLE / f"{name}.jsonl") for name in ("train", "validation", "validation_v2")}
    assert validate_examples(rows["train"], allow_unanswerable=False) == []
    assert validate_examples(rows["validation"], allow_unanswerable=False) == []
    assert validate_examples(rows["validation_v2"]) == []
    unanswerable = sum(not r["answers"]["text"] for r in rows["validation_v2"]) / len(rows["validation_v2"])
    assert 0.2 < unanswerable < 0.45
    # unseen people in validation: no full name of a validation context occurs in training contexts
    train_text = " ".join(r["context"] for r in rows["train"])
    val_names = {r["answers"]["text"][0] for r in rows["validation"] if r["question"].startswith("Who")}
    assert val_names and not any(name in train_text for name in val_names)
    regenerated = script["make_splits"]()  # the defaults wrote the bundled files
    assert regenerated["validation"] == rows["validation"]
    assert regenerated["validation_v2"] == rows["validation_v2"]
    assert regenerated["train"] == rows["train"]


def test_offsets_with_gaps_use_the_general_path():
    """A None inside the context run (not what prepare_eval_features makes) is still never chosen."""
    examples, features = hand_features()
    features["offset_mapping"][0][5] = None  # "sat" is not selectable in window 0
    start = np.stack([logits(p4=1.0, p5=9.0), logits()])
    end = np.stack([logits(p5=9.0, p6=2.0), logits()])
    import datasets

    for source in (features, datasets.Dataset.from_dict(features)):
        pred = postprocess_qa_predictions(examples, source, start, end, return_nbest=True)
        assert pred.texts == ["cat sat on"] and pred.scores.tolist() == [3.0]
        assert all("sat" != c["text"] for c in pred.nbest[0])


def test_validate_examples_accepts_a_dataset():
    import datasets

    bad = example("shifted", 2, 3)
    bad["answers"]["answer_start"] = [0]
    problems = validate_examples(datasets.Dataset.from_list([example("ok", 1, 1), bad]))
    assert len(problems) == 1 and "'shifted'" in problems[0]


# ------------------------------------------------------------------------------- generated answers, styles


def test_fit_instructions_cuts_only_the_context_at_a_token_boundary():
    from accel_tasks.recipes.qa.answer_prompts import fit_instructions

    tokenizer = make_tokenizer()
    template = "where is it ? {context} . {question}"
    fixed = len(tokenizer("where is it ? . what ?", add_special_tokens=False)["input_ids"])
    budgets = [fixed + 20, fixed + 5, fixed + 0, fixed - 2]
    texts = fit_instructions(tokenizer, template, [CONTEXT] * 4, ["what ?"] * 4, budgets)
    assert texts[0] == f"where is it ? {CONTEXT} . what ?"  # fits whole: untouched
    assert texts[1] == "where is it ? w0 w1 w2 w3 w4 . what ?"  # five context words, the question kept
    assert texts[2] == texts[3] == "where is it ?  . what ?"  # no room: no context (never the question cut)
    for text, budget in zip(texts[:3], budgets):
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= budget


def test_no_answer_reply_and_targets():
    from accel_tasks.recipes.qa.answer_prompts import answer_target, is_no_answer

    assert all(is_no_answer(reply, "unanswerable") for reply in ("unanswerable", " Unanswerable.", "UNANSWERABLE !"))
    assert not any(is_no_answer(reply, "unanswerable") for reply in ("", "not unanswerable", "Paris"))
    assert answer_target({"text": ["Paris", "paris"], "answer_start": [0, 0]}, "none") == "Paris"
    assert answer_target({"text": [], "answer_start": []}, "none") == "none"


@pytest.mark.parametrize(
    "template, problem",
    [
        ("{context} {question} {title}", "names {title}"),
        ("Q: {question}", "has no {context}"),
        ("{context}", "{question}"),
    ],
)
def test_qa_template_needs_context_and_question(template, problem):
    from accel_tasks.errors import ConfigError
    from accel_tasks.recipes.qa.answer_prompts import check_qa_template

    with pytest.raises(ConfigError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        check_qa_template(template)
    check_qa_template("Context: {context}\nQuestion: {question}\nAnswer:")


def test_answer_style_makes_the_span_or_the_generative_recipe_and_refuses_what_it_does_not_read():
    import pickle

    from accel_tasks.errors import ConfigError
    from accel_tasks.preflight import resolve_config
    from accel_tasks.recipes.extractive_qa import ExtractiveQARecipe
    from accel_tasks.recipes.qa.generative import GenerativeQARecipe

    def make(*overrides: str):
        cfg, cls = resolve_config(["recipe=extractive_qa", "model.name_or_path=unused", *overrides], None)
        assert cls is ExtractiveQARecipe
        return cls(cfg)

    span = make()
    assert type(span) is ExtractiveQARecipe and type(pickle.loads(pickle.dumps(span))) is ExtractiveQARecipe
    generative = make("task.answer_style=generate")
    assert type(generative) is GenerativeQARecipe and generative.name == "extractive_qa"
    generative.validate_options()
    assert generative.metrics() == ["squad"] and make(
        "task.answer_style=generate", "task.version_2_with_negative=true"
    ).metrics() == ["squad_v2"]
    with pytest.raises(ConfigError, match="task.answer_style='spans' is not one of span, generate"):
        make("task.answer_style=spans")
    with pytest.raises(ConfigError, match="task.no_answer_reply applies to generated answers"):
        make("task.no_answer_reply=none").validate_options()

    class SpanPlugin(ExtractiveQARecipe):
        name = "span_plugin"

    cfg, _ = resolve_config(["recipe=extractive_qa", "model.name_or_path=unused", "task.answer_style=generate"], None)
    with pytest.raises(ConfigError, match="subclass accel_tasks.recipes.qa.generative.GenerativeQARecipe"):
        SpanPlugin(cfg)
