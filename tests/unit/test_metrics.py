"""Shipped evaluate metric modules: hand-computed cases, parity with the libraries they wrap, and bad input.

Everything goes through `evaluate.load` of the shipped module directories (via load_metric/metric_path).
Modules are loaded once per session with keep_in_memory=True so no arrow cache files are written.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from accel_tasks.metrics import SHIPPED_METRICS, MetricLoadError, load_metric, metric_path

evaluate = pytest.importorskip("evaluate")
sacrebleu = pytest.importorskip("sacrebleu")
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")


@pytest.fixture(scope="session")
def metrics() -> dict:
    """One loaded module per shipped metric (loading is the slow part)."""
    return {name: load_metric(name, keep_in_memory=True) for name in SHIPPED_METRICS}


# ---------------------------------------------------------------- package helpers


def test_shipped_metric_dirs_hold_a_module_with_one_import_per_line():
    for name in SHIPPED_METRICS:
        script = Path(metric_path(name)) / f"{name}.py"
        assert script.is_file(), script
        for line in script.read_text().splitlines():
            # evaluate's loader parses import lines; "import a, b" makes loading fail.
            assert not re.match(r"^import\s+[^#]*,", line), f"{script}: {line}"


def test_metric_path_resolution(tmp_path):
    assert metric_path("rouge") == str(Path(metric_path("rouge")).resolve())
    assert Path(metric_path("squad_v2")).name == "squad_v2"
    local = tmp_path / "mymetric"
    local.mkdir()
    assert metric_path(str(local)) == str(local)
    assert metric_path(local) == str(local)
    assert metric_path("someone/metric") == "someone/metric"
    assert metric_path("./rouge") == "./rouge"
    with pytest.raises(TypeError, match="metric name must be a string"):
        metric_path(3)


def test_load_metric_unknown_names_say_what_works_offline(tmp_path):
    with pytest.raises(MetricLoadError, match="Shipped metrics.*sacrebleu.*need network access"):
        load_metric(str(tmp_path / "nothere"))


def test_importing_the_package_does_not_import_evaluate():
    code = "import sys, accel_tasks.metrics; sys.exit(1 if 'evaluate' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_unknown_load_option_is_rejected():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['tokenise'\]"):
        load_metric("sacrebleu", tokenise="zh")


# ---------------------------------------------------------------- squad v1.1


SQUAD_REFS = [
    {"id": "q1", "answers": {"text": ["The Eiffel Tower", "Eiffel Tower in Paris"], "answer_start": [0, 4]}},
    {"id": "q2", "answers": {"text": ["Denver Broncos", "the Broncos"], "answer_start": [10, 20]}},
    {"id": "q3", "answers": {"text": ["1976"], "answer_start": [5]}},
    {"id": "q4", "answers": {"text": ["an apple a day"], "answer_start": [0]}},
]


def test_squad_hand_computed(metrics):
    predictions = [
        {"id": "q1", "prediction_text": "eiffel tower!"},  # "eiffel tower" == gold 1 after normalising: EM 1, F1 1
        {"id": "q2", "prediction_text": "Broncos of Denver"},  # vs "denver broncos": P 2/3, R 1 -> F1 0.8; EM 0
        {"id": "q3", "prediction_text": "in 1977"},  # nothing shared: 0, 0
        {"id": "q4", "prediction_text": "Apple, day."},  # "apple day" both sides: EM 1, F1 1
    ]
    result = metrics["squad"].compute(predictions=predictions, references=SQUAD_REFS)
    assert set(result) == {"exact_match", "f1"}
    assert result["exact_match"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * (1 + 0.8 + 0 + 1) / 4)


def test_squad_max_over_gold_answers_and_missing_prediction(metrics):
    # vs "the Broncos" -> "broncos": F1 1 and EM 1; vs "denver broncos": F1 2/3. Max wins.
    # evaluate needs as many predictions as references, so the 3 missing ids come with 3 stray ones (ignored).
    predictions = [{"id": "q2", "prediction_text": "Broncos"}]
    predictions += [{"id": f"x{i}", "prediction_text": "1976"} for i in range(3)]
    with pytest.warns(UserWarning, match="3 question"):
        result = metrics["squad"].compute(predictions=predictions, references=SQUAD_REFS)
    assert result == {"exact_match": pytest.approx(25.0), "f1": pytest.approx(25.0)}  # 3 missing score 0


def test_squad_bad_input(metrics):
    preds = [{"id": "q1", "prediction_text": "x"}, {"id": "q1", "prediction_text": "y"}]
    with pytest.raises(ValueError, match="prediction id 'q1' appears more than once"):
        metrics["squad"].compute(predictions=preds, references=SQUAD_REFS[:2])
    refs = [{"id": "q1", "answers": {"text": [], "answer_start": []}}]
    with pytest.raises(ValueError, match="no gold answer.*squad_v2"):
        metrics["squad"].compute(predictions=preds[:1], references=refs)


# ---------------------------------------------------------------- squad v2.0


def _v2_inputs() -> tuple[list, list]:
    references = [
        {"id": "a", "answers": {"text": ["Paris"], "answer_start": [0]}},
        {"id": "b", "answers": {"text": ["the blue whale"], "answer_start": [3]}},
        {"id": "c", "answers": {"text": [], "answer_start": []}},
        {"id": "d", "answers": {"text": [], "answer_start": []}},
        {"id": "e", "answers": {"text": ["42"], "answer_start": [7]}},
    ]
    predictions = [
        {"id": "a", "prediction_text": "Paris", "no_answer_probability": 0.1},  # exact 1, f1 1
        {"id": "b", "prediction_text": "blue whale species", "no_answer_probability": 0.6},  # exact 0, f1 0.8
        {"id": "c", "prediction_text": "", "no_answer_probability": 0.9},  # right "no answer": 1, 1
        {"id": "d", "prediction_text": "London", "no_answer_probability": 0.65},  # answered unanswerable: 0, 0
        {"id": "e", "prediction_text": "", "no_answer_probability": 0.8},  # no answer to answerable: 0, 0
    ]
    return predictions, references


def test_squad_v2_default_threshold_hand_computed(metrics):
    predictions, references = _v2_inputs()
    result = metrics["squad_v2"].compute(predictions=predictions, references=references)
    assert list(result) == [
        "exact", "f1", "total",
        "HasAns_exact", "HasAns_f1", "HasAns_total",
        "NoAns_exact", "NoAns_f1", "NoAns_total",
        "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
    ]  # fmt: skip
    expected = {
        "exact": 40.0, "f1": 100 * 2.8 / 5, "total": 5,
        "HasAns_exact": 100 / 3, "HasAns_f1": 100 * 1.8 / 3, "HasAns_total": 3,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
        # Sweep by probability, starting at 2 (both unanswerable right when all say "no answer"):
        # a +1 -> 3 (best, 0.1); b +0 exact / +0.8 f1 -> 3 / 3.8 (f1 best, 0.6); d answered unanswerable -1; e, c 0.
        "best_exact": 60.0, "best_exact_thresh": 0.1, "best_f1": 76.0, "best_f1_thresh": 0.6,
    }  # fmt: skip
    assert result == pytest.approx(expected)
    assert result["best_f1_thresh"] == 0.6  # float64 kept: no 0.6000000238 from a float32 round trip


def test_squad_v2_threshold_turns_answers_into_no_answer(metrics):
    predictions, references = _v2_inputs()
    # Above 0.5: b, d, e, c predict "no answer": right only for c and d.
    expected = {
        "exact": 60.0, "f1": 60.0, "total": 5,
        "HasAns_exact": 100 / 3, "HasAns_f1": 100 / 3, "HasAns_total": 3,
        "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 2,
        "best_exact": 60.0, "best_exact_thresh": 0.1, "best_f1": 76.0, "best_f1_thresh": 0.6,
    }  # fmt: skip
    result = metrics["squad_v2"].compute(predictions=predictions, references=references, no_answer_threshold=0.5)
    assert result == pytest.approx(expected)
    at_load = load_metric("squad_v2", keep_in_memory=True, no_answer_threshold=0.5)
    assert at_load.compute(predictions=predictions, references=references) == pytest.approx(expected)


def test_squad_v2_keys_only_for_question_kinds_present(metrics):
    predictions, references = _v2_inputs()
    answerable = metrics["squad_v2"].compute(predictions=predictions[:1], references=references[:1])
    assert "HasAns_total" in answerable and not any(k.startswith("NoAns") for k in answerable)
    unanswerable = metrics["squad_v2"].compute(predictions=predictions[2:4], references=references[2:4])
    assert "NoAns_total" in unanswerable and not any(k.startswith("HasAns") for k in unanswerable)
    # c right, d wrong; threshold sweep: start 2, c (0.9) +0, d (0.65) -1 -> best stays 2 at 0.0.
    assert unanswerable == pytest.approx(
        {"exact": 50.0, "f1": 50.0, "total": 2, "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
         "best_exact": 100.0, "best_exact_thresh": 0.0, "best_f1": 100.0, "best_f1_thresh": 0.0}
    )  # fmt: skip


def test_squad_v2_bad_input(metrics):
    predictions, references = _v2_inputs()
    with pytest.raises(ValueError, match=r"1 question\(s\) have no prediction, e.g. \['e'\]"):
        stray = {"id": "zz", "prediction_text": "42", "no_answer_probability": 0.0}
        metrics["squad_v2"].compute(predictions=predictions[:4] + [stray], references=references)
    with pytest.raises(ValueError, match="reference id 'a' appears more than once"):
        metrics["squad_v2"].compute(predictions=predictions[:2], references=[references[0], references[0]])


# ---------------------------------------------------------------- sacrebleu and chrF parity


HYPS = [
    "The cat sat on the mat.",
    "there is a dog in the Garden",
    "He said: \u201cno way!\u201d",
    "\u6211\u559c\u6b22\u5403\u82f9\u679c\u3002",
]
REFS = [  # two references per hypothesis, given per example as the hub metric expects
    ["The cat is sitting on the mat.", "A cat sat on the mat."],
    ["There is a dog in the garden.", "A dog is in the garden"],
    ["He said: \u201cno way!\u201d", "He answered: no way."],
    ["\u6211\u559c\u6b22\u5403\u9999\u8549\u3002", "\u6211\u7231\u5403\u82f9\u679c\u3002"],
]
STREAMS = [[refs[i] for refs in REFS] for i in range(2)]  # sacrebleu's layout: one stream per reference


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"tokenize": "intl"},
        {"tokenize": "zh"},
        {"tokenize": "char"},
        {"tokenize": "none", "lowercase": True},
        {"smooth_method": "floor", "smooth_value": 0.2},
        {"smooth_method": "add-k"},
        {"smooth_method": "none", "use_effective_order": True, "force": True},
    ],
)
def test_sacrebleu_matches_corpus_bleu(metrics, options):
    direct = sacrebleu.corpus_bleu(HYPS, STREAMS, **options)
    result = metrics["sacrebleu"].compute(predictions=HYPS, references=REFS, **options)
    assert result == {
        "score": direct.score,
        "counts": direct.counts,
        "totals": direct.totals,
        "precisions": direct.precisions,
        "bp": direct.bp,
        "sys_len": direct.sys_len,
        "ref_len": direct.ref_len,
    }


def test_sacrebleu_single_reference_strings_and_load_defaults(metrics):
    direct = sacrebleu.corpus_bleu(HYPS, [STREAMS[0]], tokenize="char")
    single = metrics["sacrebleu"].compute(predictions=HYPS, references=STREAMS[0], tokenize="char")
    assert single["score"] == direct.score and single["counts"] == direct.counts
    at_load = load_metric("sacrebleu", keep_in_memory=True, tokenize="char")
    assert at_load.compute(predictions=HYPS, references=STREAMS[0]) == single


def test_sacrebleu_add_batch_equals_one_compute(metrics):
    module = load_metric("sacrebleu", keep_in_memory=True)
    module.add_batch(predictions=HYPS[:2], references=REFS[:2])
    module.add_batch(predictions=HYPS[2:], references=REFS[2:])
    assert module.compute() == metrics["sacrebleu"].compute(predictions=HYPS, references=REFS)


@pytest.mark.parametrize("name", ["sacrebleu", "chrf"])
def test_ragged_references_are_rejected(metrics, name):
    refs = [REFS[0], REFS[1][:1], REFS[2], REFS[3]]
    with pytest.raises(ValueError, match="example 1 has 1 references but example 0 has 2"):
        metrics[name].compute(predictions=HYPS, references=refs)


def test_sacrebleu_bad_options(metrics):
    with pytest.raises(ValueError, match="unknown tokenize 'moses'"):
        metrics["sacrebleu"].compute(predictions=HYPS, references=REFS, tokenize="moses")
    with pytest.raises(ValueError, match="unknown smooth_method 'laplace'"):
        metrics["sacrebleu"].compute(predictions=HYPS, references=REFS, smooth_method="laplace")


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"word_order": 2},
        {"word_order": 2, "lowercase": True},
        {"char_order": 4, "beta": 1, "whitespace": True},
        {"eps_smoothing": True, "word_order": 2},
    ],
)
def test_chrf_matches_sacrebleu(metrics, options):
    direct = sacrebleu.metrics.CHRF(**options).corpus_score(HYPS, STREAMS)
    result = metrics["chrf"].compute(predictions=HYPS, references=REFS, **options)
    assert result == {
        "score": direct.score,
        "char_order": direct.char_order,
        "word_order": direct.word_order,
        "beta": direct.beta,
    }


def test_chrf_default_equals_corpus_chrf(metrics):
    result = metrics["chrf"].compute(predictions=HYPS, references=REFS)
    assert result["score"] == sacrebleu.corpus_chrf(HYPS, STREAMS).score


def test_combine_sacrebleu_and_chrf():
    combined = evaluate.combine([metric_path("sacrebleu"), metric_path("chrf")])
    result = combined.compute(predictions=HYPS, references=REFS)
    assert result["sacrebleu_score"] == sacrebleu.corpus_bleu(HYPS, STREAMS).score
    assert result["chr_f_score"] == sacrebleu.corpus_chrf(HYPS, STREAMS).score
    assert result["counts"] == sacrebleu.corpus_bleu(HYPS, STREAMS).counts and result["word_order"] == 0


# ---------------------------------------------------------------- hand-worked BLEU and chrF


def test_sacrebleu_hand_worked_corpus_bleu(metrics):
    # Corpus BLEU: clipped n-gram matches and n-gram totals are summed over the corpus (not averaged per
    # sentence), precisions combined by their geometric mean, times the brevity penalty. Default 13a
    # tokenisation splits these on spaces; every order has a match, so 'exp' smoothing changes nothing.
    #
    # 1) hyp "the cat sat on the mat" (6) vs ref "the cat sat on the red mat" (7)
    #    1-grams the,cat,sat,on,the,mat: all 6 in the ref (it has "the" twice)           6/6
    #    2-grams the cat, cat sat, sat on, on the | the mat (ref has "the red", "red mat") 4/5
    #    3-grams the cat sat, cat sat on, sat on the | on the mat                         3/4
    #    4-grams the cat sat on, cat sat on the | sat on the mat                          2/3
    # 2) hyp "a dog barked" (3) vs ref "the dog barked loudly" (4)
    #    1-grams dog, barked | a: 2/3;  2-grams dog barked | a dog: 1/2;  3-gram a dog barked: 0/1;  no 4-gram
    # Corpus: matches 8, 5, 3, 2 of 9, 7, 5, 3; hypothesis length 9, reference length 11.
    p = [Fraction(8, 9), Fraction(5, 7), Fraction(3, 5), Fraction(2, 3)]
    product = p[0] * p[1] * p[2] * p[3]
    assert product == Fraction(16, 63)
    bp = math.exp(1 - 11 / 9)  # hyp shorter than ref: BP = exp(1 - r/c)
    expected = 100 * bp * float(product) ** 0.25  # = 100 * exp(-2/9) * (16/63)^(1/4) = 56.8...
    assert 56.8 < expected < 56.9
    result = metrics["sacrebleu"].compute(
        predictions=["the cat sat on the mat", "a dog barked"],
        references=[["the cat sat on the red mat"], ["the dog barked loudly"]],
    )
    assert result["counts"] == [8, 5, 3, 2]
    assert result["totals"] == [9, 7, 5, 3]
    assert result["precisions"] == pytest.approx([100 * float(x) for x in p])
    assert result["bp"] == pytest.approx(bp)
    assert (result["sys_len"], result["ref_len"]) == (9, 11)
    assert result["score"] == pytest.approx(expected)
    # Sentence 1 alone would score 100 * exp(1 - 7/6) * (2/5)^(1/4) = 67.3: the corpus sums, it does not average.


def test_chrf_hand_worked(metrics):
    # chrF (char_order 6, word_order 0, beta 2): spaces are dropped, so "the cat" -> "thecat" and
    # "the cart" -> "thecart". Per order n: precision = matched n-grams / hyp n-grams, recall = / ref n-grams.
    #   n=1  t,h,e,c,a,t vs t,h,e,c,a,r,t: 6 match of 6 | 7
    #   n=2  th he ec ca at vs th he ec ca ar rt: 4 of 5 | 6
    #   n=3  the hec eca cat vs the hec eca car art: 3 of 4 | 5
    #   n=4  thec heca ecat vs thec heca ecar cart: 2 of 3 | 4
    #   n=5  theca hecat vs theca hecar ecart: 1 of 2 | 3
    #   n=6  thecat vs thecar hecart: 0 of 1 | 2
    # sacrebleu averages precision and recall over the orders (all 6 have n-grams on both sides), then
    # F_beta = (1 + beta^2) P R / (beta^2 P + R).
    precision = (Fraction(6, 6) + Fraction(4, 5) + Fraction(3, 4) + Fraction(2, 3) + Fraction(1, 2) + 0) / 6
    recall = (Fraction(6, 7) + Fraction(4, 6) + Fraction(3, 5) + Fraction(2, 4) + Fraction(1, 3) + 0) / 6
    assert (precision, recall) == (Fraction(223, 360), Fraction(69, 140))
    f_beta = 5 * precision * recall / (4 * precision + recall)
    assert f_beta == Fraction(15387, 29944)  # 0.5139...
    result = metrics["chrf"].compute(predictions=["the cat"], references=[["the cart"]])
    assert result == {"score": pytest.approx(100 * float(f_beta)), "char_order": 6, "word_order": 0, "beta": 2}
    # beta=1 weighs precision and recall equally: 2PR / (P + R), another value.
    f_1 = 2 * precision * recall / (precision + recall)
    beta_1 = metrics["chrf"].compute(predictions=["the cat"], references=[["the cart"]], beta=1)
    assert beta_1["score"] == pytest.approx(100 * float(f_1)) and abs(f_1 - f_beta) > 0.01


# ---------------------------------------------------------------- rouge


SUMMARIES = ["the cat sat on the mat\nit was happy", "police killed the gunman", "running dogs bark loudly"]
SUMMARY_REFS = ["the cat was on the mat\nit looked happy", "the gunman was shot by police", "the dog runs and barks"]


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_matches_rouge_score(metrics, use_stemmer):
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
    scores = [scorer.score(ref, pred) for ref, pred in zip(SUMMARY_REFS, SUMMARIES)]
    per_example = metrics["rouge"].compute(
        predictions=SUMMARIES, references=SUMMARY_REFS, use_stemmer=use_stemmer, use_aggregator=False
    )
    assert per_example == {t: [s[t].fmeasure for s in scores] for t in types}
    mean = metrics["rouge"].compute(predictions=SUMMARIES, references=SUMMARY_REFS, use_stemmer=use_stemmer)
    assert mean == pytest.approx({t: sum(s[t].fmeasure for s in scores) / len(scores) for t in types}, abs=1e-12)
    assert all(type(v) is float for v in mean.values())


def test_rouge_hand_worked(metrics):
    # Default tokenizer: lowercase, alphanumeric tokens ("The" -> "the", "." dropped); no stemming.
    # F = 2 P R / (P + R).
    # 1) pred "police killed the gunman" (4) vs ref "the gunman was shot by police" (6)
    #    rouge1: police, the, gunman shared -> P 3/4, R 3/6 -> F 3/5
    #    rouge2: only "the gunman" shared (pred has 3 bigrams, ref 5) -> P 1/3, R 1/5 -> F 1/4
    #    rougeL: longest common subsequence "the gunman" (police comes first in one, last in the other) = 2
    #            -> P 2/4, R 2/6 -> F 2/5
    # 2) pred "The quick fox jumps." (4) vs ref "the brown fox quickly jumps" (5)
    #    rouge1: the, fox, jumps -> P 3/4, R 3/5 -> F 2/3;  rouge2: no shared bigram -> 0
    #    rougeL: LCS "the fox jumps", not contiguous in the ref = 3 -> P 3/4, R 3/5 -> F 2/3
    # 3) pred "The end" vs ref "the end": 1 for all three
    def f(p: Fraction, r: Fraction) -> Fraction:
        return 2 * p * r / (p + r)

    expected = {
        "rouge1": [f(Fraction(3, 4), Fraction(3, 6)), f(Fraction(3, 4), Fraction(3, 5)), Fraction(1)],
        "rouge2": [f(Fraction(1, 3), Fraction(1, 5)), Fraction(0), Fraction(1)],
        "rougeL": [f(Fraction(2, 4), Fraction(2, 6)), f(Fraction(3, 4), Fraction(3, 5)), Fraction(1)],
    }
    assert expected == {"rouge1": [Fraction(3, 5), Fraction(2, 3), 1], "rouge2": [Fraction(1, 4), 0, 1],
                        "rougeL": [Fraction(2, 5), Fraction(2, 3), 1]}  # fmt: skip
    predictions = ["police killed the gunman", "The quick fox jumps.", "The end"]
    references = ["the gunman was shot by police", "the brown fox quickly jumps", "the end"]
    types = ["rouge1", "rouge2", "rougeL"]
    per_example = metrics["rouge"].compute(
        predictions=predictions, references=references, rouge_types=types, use_aggregator=False
    )
    assert per_example == {t: pytest.approx([float(v) for v in expected[t]]) for t in types}
    mean = metrics["rouge"].compute(predictions=predictions, references=references, rouge_types=types)
    # The aggregate is the plain mean of the F-measures, e.g. rougeL (2/5 + 2/3 + 1) / 3 = 31/45 (the median, 2/3,
    # would differ): rouge1 (3/5 + 2/3 + 1) / 3 = 34/45, rouge2 (1/4 + 0 + 1) / 3 = 5/12.
    assert mean == pytest.approx({"rouge1": 34 / 45, "rouge2": 5 / 12, "rougeL": 31 / 45})


def test_rouge_lsum_splits_on_newlines_without_nltk_data(metrics, monkeypatch):
    import nltk

    def no_data(*args, **kwargs):
        raise LookupError("nltk data must not be needed")

    monkeypatch.setattr(nltk.data, "find", no_data)
    monkeypatch.setattr(nltk.data, "load", no_data)
    monkeypatch.setattr(nltk, "sent_tokenize", no_data)
    # Same two sentences in the other order: sentence-level LCS matches all 6 tokens, the flat LCS only 3.
    result = metrics["rouge"].compute(
        predictions=["the cat sat\nthe dog ran"],
        references=["the dog ran\nthe cat sat"],
        rouge_types=["rougeL", "rougeLsum"],
        use_stemmer=True,
    )
    assert result == pytest.approx({"rougeL": 0.5, "rougeLsum": 1.0})
    stemmed = metrics["rouge"].compute(
        predictions=["running dogs"], references=["run dog"], rouge_types=["rouge1"], use_stemmer=True
    )
    assert stemmed == {"rouge1": 1.0}


def test_rouge_multi_reference_takes_the_best(metrics):
    refs = [["something else entirely", "police killed the gunman"], ["the dog runs and barks", "dogs bark"]]
    preds = ["police killed the gunman", "running dogs bark loudly"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"])
    expected = [scorer.score_multi(r, p) for r, p in zip(refs, preds)]
    result = metrics["rouge"].compute(
        predictions=preds, references=refs, rouge_types=["rouge1", "rougeL"], use_aggregator=False
    )
    assert result == {t: [e[t].fmeasure for e in expected] for t in ["rouge1", "rougeL"]}
    assert result["rouge1"][0] == 1.0


def test_rouge_custom_tokenizer_and_load_defaults():
    # str.split keeps case, so "Hello" != "hello": 1 of 2 unigrams match. The default tokenizer lowercases.
    module = load_metric("rouge", keep_in_memory=True, rouge_types="rouge1", tokenizer=str.split)
    assert module.compute(predictions=["Hello there"], references=["hello there"]) == {"rouge1": 0.5}
    assert module.compute(predictions=["Hello there"], references=["hello there"], tokenizer=None) == {"rouge1": 0.5}
    default = load_metric("rouge", keep_in_memory=True, rouge_types="rouge1")
    assert default.compute(predictions=["Hello there"], references=["hello there"]) == {"rouge1": 1.0}


def test_rouge_bad_input(metrics):
    with pytest.raises(ValueError, match="unknown rouge type 'rougeX'"):
        metrics["rouge"].compute(predictions=["a"], references=["a"], rouge_types=["rouge1", "rougeX"])
    with pytest.raises(ValueError, match="example 1 has an empty list of references"):
        metrics["rouge"].compute(predictions=["a", "b"], references=[["a"], []])


# ---------------------------------------------------------------- wer / cer


def test_wer_hand_computed(metrics):
    predictions = ["the cat sat on mat", "hello world", "a b c", "good evening"]
    references = ["the cat sat on the mat", "hello there world", "a b", "good morning"]
    # hits 5+2+2+1, one deletion in each of the first two, one insertion, one substitution: 4 errors / 13 words
    result = metrics["wer"].compute(predictions=predictions, references=references)
    assert result == {"wer": pytest.approx(4 / 13), "substitutions": 1, "deletions": 2, "insertions": 1, "hits": 10}


def test_cer_hand_computed(metrics):
    predictions = ["abxd", "helo", "abc", "ab"]
    references = ["abcd", "hello", "ab", "a b"]  # the space in "a b" is a character to delete
    result = metrics["cer"].compute(predictions=predictions, references=references)
    assert result == {"cer": pytest.approx(4 / 14), "substitutions": 1, "deletions": 2, "insertions": 1, "hits": 11}


def test_wer_hand_worked_alignment(metrics):
    # WER = (S + D + I) / N, N = reference words, summed over the corpus before dividing.
    # 1) ref "the cat sat on the mat" vs pred "so the bat sat on mat":
    #    "so" extra (I), the, cat->bat (S), sat, on, "the" missing (D), mat: S1 D1 I1, hits 4, N 6
    #    (the only alignment with 3 edits: substituting word for word would take 5)
    # 2) ref "hello" vs pred "hello world": hit 1, "world" extra (I1), N 1 (alone: WER 1.0)
    # Corpus: (S1 + D1 + I2) / (6 + 1) = 4/7; the mean of sentence WERs would be (3/6 + 1) / 2 = 3/4.
    result = metrics["wer"].compute(
        predictions=["so the bat sat on mat", "hello world"], references=["the cat sat on the mat", "hello"]
    )
    assert result == {"wer": pytest.approx((1 + 1 + 2) / (6 + 1)), "substitutions": 1, "deletions": 1,
                      "insertions": 2, "hits": 5}  # fmt: skip


def test_cer_hand_worked_alignment(metrics):
    # CER = (S + D + I) / N over characters, spaces included.
    # 1) ref "kitten" vs pred "sitting": k->s (S), i, t, t, e->i (S), n, "g" extra (I): S2 I1, hits 4, N 6
    # 2) ref "a b c" vs pred "abc": both spaces are deleted (D2), hits 3, N 5
    # (each pair has only one alignment with that few edits, so the counts are fixed, not just the rate)
    # Corpus: (S2 + D2 + I1) / (6 + 5) = 5/11 (dividing by the prediction lengths instead would give 5/10).
    result = metrics["cer"].compute(predictions=["sitting", "abc"], references=["kitten", "a b c"])
    assert result == {"cer": pytest.approx(5 / 11), "substitutions": 2, "deletions": 2, "insertions": 1, "hits": 7}


def test_cer_concatenate_texts_aligns_across_pairs(metrics):
    # Pair by pair: "ab"->"a" (1 deletion), "c"->"bc" (1 insertion); joined, "abc" == "abc".
    assert metrics["cer"].compute(predictions=["a", "bc"], references=["ab", "c"])["cer"] == pytest.approx(2 / 3)
    joined = metrics["cer"].compute(predictions=["a", "bc"], references=["ab", "c"], concatenate_texts=True)
    assert joined == {"cer": 0.0, "substitutions": 0, "deletions": 0, "insertions": 0, "hits": 3}


@pytest.mark.parametrize("name", ["wer", "cer"])
@pytest.mark.parametrize("empty", ["", "   "])
def test_empty_reference_names_its_index(metrics, name, empty):
    with pytest.raises(ValueError, match=f"{name}: reference 1 is empty"):
        metrics[name].compute(predictions=["a b", "c"], references=["a b", empty])
