"""`accel-tasks estimate-memory`: ZeRO model-state formulas, DeepSpeed's estimators, and the CLI."""

from __future__ import annotations

import pytest

from accel_tasks.errors import ConfigError
from accel_tasks.memory import (
    ModelSize,
    estimate_all,
    format_bytes,
    model_size,
    model_size_from_config,
    recommend,
    zero_formula,
)
from accel_tasks.run import main
from ds_fixtures import build_model_dir, make_examples


def test_formulas_reproduce_the_zero_paper_example():
    # ZeRO paper, Figure 1: 7.5B parameters on 64 GPUs -> 120 GB, 31.4 GB, 16.6 GB, 1.9 GB.
    psi, gpus = 7.5e9, 64
    expected_gb = {0: 120.0, 1: 31.40625, 2: 16.640625, 3: 1.875}
    for stage, gigabytes in expected_gb.items():
        gpu, cpu = zero_formula(int(psi), stage, "none", gpus_per_node=8, nodes=8)
        assert gpu / 1e9 == pytest.approx(gigabytes)
        assert cpu == 0


def test_offload_moves_optimizer_states_and_then_weights_to_cpu():
    psi = 1_000_000
    # 8 GPUs on 2 nodes: 16 bytes/param of optimizer state + fp32 grads spread over 2 nodes' RAM.
    assert zero_formula(psi, 2, "optimizer", 4, 2) == (2 * psi, 8 * psi)
    assert zero_formula(psi, 1, "optimizer", 4, 2) == (4 * psi, 8 * psi)
    assert zero_formula(psi, 3, "optimizer", 4, 2) == (psi / 4, 8 * psi)
    assert zero_formula(psi, 3, "optimizer+params", 4, 2) == (0, 9 * psi)
    with pytest.raises(ValueError, match="stage 1 or higher"):
        zero_formula(psi, 0, "optimizer", 8, 1)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    texts = [row["text"] for row in make_examples(10, seed=3, sentences=(1, 2))]
    return build_model_dir(tmp_path_factory.mktemp("mem") / "model", texts, d_model=64)


def test_sizes_from_config_match_the_instantiated_model(tiny_model_dir):
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)
    unique = {p.data_ptr(): p.numel() for p in model.parameters()}
    size = model_size_from_config(str(tiny_model_dir), "AutoModelForSeq2SeqLM")
    assert size.params == sum(unique.values())  # tied embeddings / lm_head counted once
    assert size == model_size(model)
    # The largest single module is an embedding table: the vocabulary, or BART's positions (+2 offset rows).
    assert size.largest_layer == max(model.config.vocab_size, model.config.max_position_embeddings + 2) * 64


def test_estimates_follow_the_formulas_and_deepspeed(tiny_model_dir):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    size = model_size_from_config(str(tiny_model_dir), "AutoModelForSeq2SeqLM")
    psi, n = size.params, 16
    rows = {(e.stage, e.offload): e for e in estimate_all(size, gpus_per_node=8, nodes=2)}
    assert rows[(0, "none")].gpu_formula == 16 * psi
    assert rows[(1, "none")].gpu_formula == pytest.approx(4 * psi + 12 * psi / n)
    assert rows[(2, "none")].gpu_formula == pytest.approx(2 * psi + 14 * psi / n)
    assert rows[(3, "none")].gpu_formula == pytest.approx(16 * psi / n)
    assert rows[(0, "none")].gpu_deepspeed is None and rows[(1, "none")].gpu_deepspeed is None
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(psi, size.largest_layer, 8, 2, cpu_offload=True, cpu_offload_params=True)
    assert (rows[(3, "optimizer+params")].gpu_deepspeed, rows[(3, "optimizer+params")].cpu_deepspeed) == (gpu, cpu)
    assert len(rows) == 8


def test_recommendation_is_the_fastest_setting_that_fits():
    size = ModelSize("m", params=7_000_000_000, largest_layer=250_000_000)
    estimates = estimate_all(size, gpus_per_node=8, nodes=1)
    # 7B: DDP needs 104 GiB, ZeRO-1 33 GiB (formula) per GPU.
    assert recommend(estimates, 80).label == "ZeRO-1"
    assert recommend(estimates, 16).label == "ZeRO-3"
    assert recommend(estimates, 0.001) is None


def test_format_bytes_picks_a_readable_unit():
    assert format_bytes(None) == "-"
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 1024**2) == "3.00 MiB"
    assert format_bytes(1.5 * 1024**3) == "1.50 GiB"


def test_cli_prints_every_setting_and_a_choice(tiny_model_dir, capsys):
    code = main(
        ["estimate-memory", "recipe=summarization", f"model.name_or_path={tiny_model_dir}", "--gpus-per-node", "8", "--nodes", "1", "--gpu-memory", "24"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    size = model_size_from_config(str(tiny_model_dir), "AutoModelForSeq2SeqLM")
    assert f"{size.params:,} parameters" in out and "8 GPUs" in out
    zero3_line = next(line for line in out.splitlines() if line.startswith("ZeRO-3 "))
    assert format_bytes(16 * size.params / 8) in zero3_line
    for label in ("ZeRO-0", "ZeRO-1", "ZeRO-2", "ZeRO-3 + offload optimizer+params"):
        assert any(line.startswith(label) for line in out.splitlines()), label
    assert "pick ZeRO-0" in out


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["estimate-memory", "recipe=summarization", f"model.name_or_path={tmp_path}/missing/x/y"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="at least 1"):
        estimate_all(ModelSize("m", 10, 1), gpus_per_node=0, nodes=1)
