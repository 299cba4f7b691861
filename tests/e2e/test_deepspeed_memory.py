"""`accel-tasks estimate-memory`: ZeRO model-state formulas, DeepSpeed's estimators, and the CLI."""

from __future__ import annotations

import pytest

from accel_tasks.errors import ConfigError
from accel_tasks.reporting.memory_estimate import (
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
    psi = 7.5e9  # 64 GPUs: 8 nodes x 8
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


# Hand-worked cases: the expected numbers below are written out from the ZeRO paper's formulas (and, for the
# parameter count, from the architecture), never taken from the code under test or from DeepSpeed.
# Psi = 1,000,000 parameters, N = 4 GPUs x 1 node, mixed-precision Adam (2 + 2 + 12 = 16 bytes per parameter):
#   ZeRO-0  16 Psi             = 16,000,000 B
#   ZeRO-1  4 Psi + 12 Psi / N = 4,000,000 + 3,000,000 = 7,000,000 B
#   ZeRO-2  2 Psi + 14 Psi / N = 2,000,000 + 3,500,000 = 5,500,000 B
#   ZeRO-3  16 Psi / N         = 4,000,000 B
# Optimizer offload (fp32 master weights, momentum, variance and fp32 gradients = 16 Psi go to CPU RAM,
# spread over the nodes: 16,000,000 / 1 node); the GPU keeps the 16-bit weights (and gradients, ZeRO-1):
#   ZeRO-1  GPU 4 Psi = 4,000,000 B      ZeRO-2  GPU 2 Psi = 2,000,000 B     ZeRO-3  GPU 2 Psi / N = 500,000 B
# Parameter offload too (ZeRO-3 only): GPU 0 B, CPU 16 Psi + 2 Psi = 18,000,000 B per node.
HAND_PSI = 1_000_000
HAND_4_GPUS_1_NODE = {
    (0, "none"): (16_000_000, 0),
    (1, "none"): (7_000_000, 0),
    (2, "none"): (5_500_000, 0),
    (3, "none"): (4_000_000, 0),
    (1, "optimizer"): (4_000_000, 16_000_000),
    (2, "optimizer"): (2_000_000, 16_000_000),
    (3, "optimizer"): (500_000, 16_000_000),
    (3, "optimizer+params"): (0, 18_000_000),
}


@pytest.mark.parametrize("setting", list(HAND_4_GPUS_1_NODE), ids=lambda s: f"zero{s[0]}-{s[1]}")
def test_zero_formula_matches_the_hand_worked_bytes(setting):
    stage, offload = setting
    assert zero_formula(HAND_PSI, stage, offload, gpus_per_node=4, nodes=1) == HAND_4_GPUS_1_NODE[setting]


def test_estimate_rows_carry_the_hand_worked_bytes():
    rows = estimate_all(ModelSize("hand", HAND_PSI, 1000), gpus_per_node=4, nodes=1, use_deepspeed=False)
    assert {(e.stage, e.offload): (e.gpu_formula, e.cpu_formula) for e in rows} == HAND_4_GPUS_1_NODE
    # The same model on 2 nodes x 2 GPUs: N is still 4 on the GPU side, CPU RAM is split over 2 nodes.
    assert zero_formula(HAND_PSI, 3, "optimizer", gpus_per_node=2, nodes=2) == (500_000, 8_000_000)
    assert zero_formula(HAND_PSI, 3, "optimizer+params", gpus_per_node=2, nodes=2) == (0, 9_000_000)


def test_format_bytes_of_the_hand_worked_figures():
    # 16,000,000 / 1024**2 = 15.2587... MiB; 5,500,000 / 1024**2 = 5.2452... MiB; 500,000 / 1024 = 488.28125 KiB;
    # 18,000,000 / 1024**2 = 17.1661... MiB; 7.5e9 x 16 / 64 = 1.875e9 B = 1.7462... GiB.
    assert format_bytes(16_000_000) == "15.26 MiB"
    assert format_bytes(5_500_000) == "5.25 MiB"
    assert format_bytes(500_000) == "488.28 KiB"
    assert format_bytes(18_000_000) == "17.17 MiB"
    assert format_bytes(1.875e9) == "1.75 GiB"
    assert format_bytes(1023) == "1,023 B"
    assert format_bytes(1024) == "1.00 KiB"
    assert format_bytes(0) == "0 B"


def test_parameter_count_of_a_tiny_bert_worked_by_hand(tmp_path):
    from transformers import BertConfig

    BertConfig(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        type_vocab_size=2,
    ).save_pretrained(tmp_path)
    h, i = 16, 32
    # embeddings: words 100 x 16 = 1,600 + positions 64 x 16 = 1,024 + token types 2 x 16 = 32 + LayerNorm 2 x 16 = 32
    embeddings = 1_600 + 1_024 + 32 + 32  # 2,688
    # one layer: query, key, value 3 x (16 x 16 + 16) = 816; attention output 16 x 16 + 16 = 272; LayerNorm 32;
    # intermediate 16 x 32 + 32 = 544; output 32 x 16 + 16 = 528; LayerNorm 32 -> 2,224
    layer = 3 * (h * h + h) + (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    assert layer == 2_224
    pooler = h * h + h  # 272
    size = model_size_from_config(str(tmp_path), "AutoModel")
    assert size.params == embeddings + 2 * layer + pooler == 7_408
    # The largest single module is the word embedding table: 1,600 > positions 1,024 > intermediate 544.
    assert size.largest_layer == 1_600


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
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
        psi, size.largest_layer, 8, 2, cpu_offload=True, cpu_offload_params=True
    )
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
        [
            "estimate-memory",
            "recipe=summarization",
            f"model.name_or_path={tiny_model_dir}",
            "--gpus-per-node",
            "8",
            "--nodes",
            "1",
            "--gpu-memory",
            "24",
        ]
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
