"""Pieces of the loop that can be checked without a run: optimizer groups, threads, padding, order, scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from accel_tasks.engines.accelerator import configure_threads
from accel_tasks.errors import ConfigError
from accel_tasks.evaluation.eval_pass import concat_padded, length_order, restore_order, score
from accel_tasks.recipe import PAD_FLOAT, PAD_INT, EvalOutput
from accel_tasks.training.session import parameter_groups


def test_weight_decay_skips_biases_and_norm_weights():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2, bias=False))
    decay, plain = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in plain["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}


def test_frozen_parameters_are_left_out_of_the_optimizer():
    model = torch.nn.Linear(3, 3)
    model.bias.requires_grad_(False)
    decay, plain = parameter_groups(model, 0.0)
    assert len(decay["params"]) == 1 and plain["params"] == []


@pytest.mark.parametrize("local_processes", ["1", "2"])
def test_threads_are_split_between_local_processes(monkeypatch, local_processes):
    import os

    monkeypatch.setenv("LOCAL_WORLD_SIZE", local_processes)
    monkeypatch.delenv("ACCEL_TASKS_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        assert configure_threads(None) == max(1, cores // int(local_processes))
        assert torch.get_num_threads() == max(1, cores // int(local_processes))
        assert configure_threads(3) == 3
    finally:
        torch.set_num_threads(before)


def test_thread_count_from_the_environment_sits_between_the_config_and_the_core_split(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("ACCEL_TASKS_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        assert configure_threads(None) == 1 == torch.get_num_threads()
        assert configure_threads(2) == 2
        monkeypatch.setenv("ACCEL_TASKS_NUM_THREADS", "two")
        with pytest.raises(ConfigError, match="ACCEL_TASKS_NUM_THREADS='two' must be a whole number"):
            configure_threads(None)
    finally:
        torch.set_num_threads(before)


def test_batches_of_different_widths_concatenate_with_the_pad_convention():
    ints = concat_padded([np.array([[1, 2, 3]]), np.array([[4], [5]])])
    assert ints.tolist() == [[1, 2, 3], [4, PAD_INT, PAD_INT], [5, PAD_INT, PAD_INT]]
    floats = concat_padded([np.zeros((1, 1), dtype=np.float32), np.ones((1, 2), dtype=np.float32)])
    assert floats.tolist() == [[0.0, PAD_FLOAT], [1.0, 1.0]]
    assert concat_padded([np.array([1]), np.array([2, 3])]).tolist() == [1, 2, 3]


def test_length_grouping_order_is_undone_exactly():
    import datasets

    features = datasets.Dataset.from_dict({"input_ids": [[1], [1, 2, 3], [1, 2], [1, 2, 3, 4]]})
    order = length_order(features, "input_ids")
    assert order.tolist() == [3, 1, 2, 0]
    sorted_outputs = np.array([len(features[int(i)]["input_ids"]) for i in order])
    assert restore_order(sorted_outputs, order).tolist() == [1, 3, 2, 4]


def test_scores_are_flattened_and_generic_keys_named_after_their_metric():
    class Fixed:
        def __init__(self, result):
            self.result = result

        def compute(self, predictions, references, **kwargs):
            return self.result

    class Recipe:
        def metric_kwargs(self, metric):
            return {}

    result = EvalOutput(predictions=["a"], references=[["a"]], records=[])
    merged = score(
        Recipe(), {"sacrebleu": Fixed({"score": 50.0, "bp": 1.0}), "chrf": Fixed({"score": 60.0, "beta": 2})}, result
    )
    assert merged == {"sacrebleu": 50.0, "bp": 1.0, "chrf": 60.0, "beta": 2}
    clash = score(Recipe(), {"a": Fixed({"f1": 1.0}), "b": Fixed({"f1": 0.5})}, result)
    assert clash == {"f1": 1.0, "b_f1": 0.5}
    bare = score(Recipe(), {"wer": Fixed(0.25)}, result)
    assert bare == {"wer": 0.25}
