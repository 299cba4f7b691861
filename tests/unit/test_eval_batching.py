"""eval.max_tokens_per_batch and greedy decoding that drops finished rows: same predictions, every example once.

Unit tests for the batch plan (budget, split across processes, order restored), the decode loop against
plain ``generate`` on a tiny Marian whose outputs end at varied lengths, and the CLI on 1 and 2 processes
against fixed-size batches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from accel_tasks.decoding import compacting_greedy, compaction_applies
from accel_tasks.evaluation.batching import (
    BatchPlan,
    PlannedBatches,
    padded_tokens,
    place_rows,
    token_budget_batches,
)

from helpers import check, one_error_line, read_jsonl, run_cli, save_untrained_default

SAMPLES = Path(__file__).resolve().parents[2] / "accel_tasks" / "samples"


# -- batches under a budget ----------------------------------------------------------------------------


def test_budget_batches_hold_every_row_once_longest_first_under_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=257).tolist()
    batches = token_budget_batches(lengths, 1000)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first, across and within batches
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 1000
    # Many short rows in one batch, few long ones.
    assert len(batches[0]) < len(batches[-1])
    assert padded_tokens(lengths, batches) <= len(batches) * 1000


def test_budget_batches_fill_up_to_the_budget_and_give_an_oversized_row_its_own_batch():
    assert token_budget_batches([10, 10, 10, 10], 40) == [[0, 1, 2, 3]]
    assert token_budget_batches([10, 10, 10, 10], 39) == [[0, 1, 2], [3]]
    assert token_budget_batches([50, 5, 5], 20) == [[0], [1, 2]]  # 50 > 20: alone, still scored
    assert token_budget_batches([], 10) == []
    with pytest.raises(ValueError):
        token_budget_batches([1], 0)


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_plan_gives_every_process_the_same_number_of_steps_and_counts_each_example_once(processes):
    """Uneven batch counts: the processes without a batch at the last step run a filler whose rows are dropped."""
    lengths = [30, 29, 20, 12, 12, 11, 5, 5, 4, 3, 2]
    batches = token_budget_batches(lengths, 40)  # 7 batches: not a multiple of 2 or 3
    plan = BatchPlan(batches, processes)
    local = [PlannedBatches(plan, rank) for rank in range(processes)]
    assert {len(b) for b in local} == {plan.steps}
    parts = []
    for step in range(plan.steps):
        # What gather returns: each process's rows (here: the feature index itself) padded to the widest.
        per_rank = [plan.batch_for(rank, step)[0] for rank in range(processes)]
        padded = max(len(b) for b in per_rank)
        gathered = np.full((processes * padded, 2), -100)
        for rank, batch in enumerate(per_rank):
            gathered[rank * padded : rank * padded + len(batch), 0] = batch
            gathered[rank * padded : rank * padded + len(batch), 1] = 7
        positions, indices = plan.gathered_rows(step, padded)
        parts.append((indices, gathered[positions]))
    out = place_rows(parts, len(lengths), -100)
    assert out[:, 0].tolist() == list(range(len(lengths)))  # input order restored, no filler row kept


def test_place_rows_pads_to_the_widest_piece_and_refuses_missing_or_repeated_rows():
    parts = [(np.array([2, 0]), np.array([[5, 6, 7], [1, 2, 3]])), (np.array([1]), np.array([[9]]))]
    assert place_rows(parts, 3, -1).tolist() == [[1, 2, 3], [9, -1, -1], [5, 6, 7]]
    assert place_rows([(np.array([1, 0]), np.array([0.5, 0.25]))], 2, 0).tolist() == [0.25, 0.5]
    with pytest.raises(RuntimeError, match="1 features missing"):
        place_rows(parts[:1], 3, -1)
    with pytest.raises(RuntimeError, match="counted more than once"):
        place_rows(parts + parts[1:], 3, -1)


# -- greedy decoding that drops finished rows ---------------------------------------------------------


@pytest.fixture(scope="module")
def marian():
    """The bundled tiny summarization Marian, random weights, EOS made likely: outputs end at 1..max steps."""
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    source = SAMPLES / "summarization" / "model"
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(source)).eval()
    with torch.no_grad():
        model.final_logits_bias[0, model.config.eos_token_id] = 2.5
    tokenizer = AutoTokenizer.from_pretrained(source)
    documents = [
        json.loads(line)["document"]
        for line in (SAMPLES / "summarization" / "validation.jsonl").read_text().splitlines()
    ]
    batch = tokenizer(documents[:24], max_length=64, truncation=True, padding=True, return_tensors="pt")
    return model, batch


@pytest.mark.parametrize(
    "settings",
    [
        {"max_new_tokens": 40},
        {"max_new_tokens": 40, "no_repeat_ngram_size": 2, "repetition_penalty": 1.3},
        {"max_new_tokens": 40, "min_new_tokens": 6},
        {"max_new_tokens": 3},
    ],
    ids=["greedy", "ngram+penalty", "min-length", "max-length-first"],
)
def test_compacting_greedy_returns_exactly_what_plain_generate_returns(marian, settings):
    import torch

    model, batch = marian
    kwargs = {"num_beams": 1, "do_sample": False, **settings}
    assert compaction_applies(model, kwargs, synced_gpus=False)
    rows_seen = []
    hook = model.get_decoder().register_forward_pre_hook(
        lambda module, args, kw: rows_seen.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    with torch.no_grad():
        plain = model.generate(**batch, **kwargs)
        plain_rows = list(rows_seen)
        rows_seen.clear()
        compacted = model.generate(**batch, **kwargs, custom_generate=compacting_greedy)
    hook.remove()
    assert torch.equal(plain, compacted)
    lengths = (plain != model.config.pad_token_id).sum(dim=1)
    if settings["max_new_tokens"] > 3:
        assert lengths.min() < lengths.max()  # the test data really has rows finishing early
        assert min(rows_seen) < len(batch["input_ids"])  # and rows were dropped on the way
        assert sum(rows_seen) < sum(plain_rows)
    assert len(rows_seen) == len(plain_rows)  # the same number of decoder steps


def test_compaction_serves_greedy_encoder_decoder_generation_only(marian):
    model, _ = marian
    assert not compaction_applies(model, {"num_beams": 4}, synced_gpus=False)
    assert not compaction_applies(model, {"do_sample": True}, synced_gpus=False)
    assert not compaction_applies(model, {}, synced_gpus=True)  # ZeRO-3: every rank runs every step
    assert compaction_applies(model, {"num_beams": None}, synced_gpus=False)  # None: the model's config (greedy)

    class NotSeq2Seq:
        config = type("C", (), {"is_encoder_decoder": False})()

    assert not compaction_applies(NotSeq2Seq(), {}, synced_gpus=False)


# -- through the CLI ---------------------------------------------------------------------------------


def test_a_budget_below_one_token_is_one_error_line(tmp_path):
    result = run_cli(
        ["recipe=summarization", "eval.max_tokens_per_batch=0", f"output_dir={tmp_path / 'out'}"],
        cwd=tmp_path,
    )
    assert "eval.max_tokens_per_batch=0 must be at least 1 token" in one_error_line(result)


@pytest.mark.slow
def test_budget_batches_on_two_processes_predict_what_fixed_batches_predict_on_one(tmp_path):
    """Every example once, in input order, the same predictions: 2 processes with uneven batch counts."""
    model = save_untrained_default(tmp_path / "model", "summarization")
    rows = read_jsonl(SAMPLES / "summarization" / "validation.jsonl")[:23]
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = [
        "recipe=summarization",
        "mode=eval",
        f"model.name_or_path={model}",
        f"data.validation_file={data}",
        "generation.max_new_tokens=6",
    ]
    check(run_cli([*common, "eval.batch_size=4", f"output_dir={tmp_path / 'fixed'}"], cwd=tmp_path))
    budget = check(
        run_cli(
            [*common, "eval.max_tokens_per_batch=300", f"output_dir={tmp_path / 'budget'}"],
            cwd=tmp_path,
            num_processes=2,
        )
    )
    assert "23 features in" in budget.stdout + budget.stderr
    fixed = read_jsonl(tmp_path / "fixed" / "predictions.jsonl")
    planned = read_jsonl(tmp_path / "budget" / "predictions.jsonl")
    assert [r["id"] for r in planned] == [row["id"] for row in rows]
    assert [r["prediction"] for r in planned] == [r["prediction"] for r in fixed]
    metrics = json.loads((tmp_path / "budget" / "metrics.json").read_text())
    assert metrics["eval_samples"] == 23
