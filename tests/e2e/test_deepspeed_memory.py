"""`accel-tasks estimate-memory`: ZeRO and FSDP2 model-state formulas, DeepSpeed's estimators, and the CLI."""

from __future__ import annotations

import pytest

from accel_tasks.errors import ConfigError
from accel_tasks.reporting.memory_estimate import (
    ModelSize,
    estimate_all,
    format_bytes,
    format_report,
    fsdp_formula,
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
    zero = {(e.stage, e.offload): (e.gpu_formula, e.cpu_formula) for e in rows if e.engine == "ZeRO"}
    assert zero == HAND_4_GPUS_1_NODE
    # The same model on 2 nodes x 2 GPUs: N is still 4 on the GPU side, CPU RAM is split over 2 nodes.
    assert zero_formula(HAND_PSI, 3, "optimizer", gpus_per_node=2, nodes=2) == (500_000, 8_000_000)
    assert zero_formula(HAND_PSI, 3, "optimizer+params", gpus_per_node=2, nodes=2) == (0, 9_000_000)


# FSDP2 with bf16 compute, the same Psi = 1,000,000, largest layer L = 1,000, N = 4 GPUs x 1 node. Sharded on
# each process: fp32 parameters 4 + fp32 gradients 4 + Adam momentum and variance 8 = 16 Psi / N = 4,000,000 B.
#   full shard     16 Psi / N + 2 units x 2 bytes x L = 4,000,000 + 4,000 = 4,004,000 B
#   grad-op shard  2 Psi (bf16, gathered forward to backward) + 16 Psi / N = 2,000,000 + 4,000,000 = 6,000,000 B
# CPU offload: the 4,000,000 B shard of each of the node's 4 processes is in CPU RAM (16,000,000 B per node); the
# GPU keeps the gathered bf16: 4,000 B (full shard) or 2,000,000 B (grad-op shard).
HAND_FSDP_4_GPUS_1_NODE = {
    (3, "none"): (4_004_000, 0),
    (2, "none"): (6_000_000, 0),
    (3, "cpu"): (4_000, 16_000_000),
    (2, "cpu"): (2_000_000, 16_000_000),
}


def test_fsdp_rows_carry_the_hand_worked_bytes():
    size = ModelSize("hand", HAND_PSI, 1000)
    rows = estimate_all(size, gpus_per_node=4, nodes=1, use_deepspeed=False)
    fsdp = {(e.stage, e.offload): (e.gpu_formula, e.cpu_formula) for e in rows if e.engine == "FSDP2"}
    assert fsdp == HAND_FSDP_4_GPUS_1_NODE
    assert all(e.gpu_deepspeed is None and e.cpu_deepspeed is None for e in rows if e.engine == "FSDP2")
    labels = [e.label for e in rows if e.engine == "FSDP2"]
    assert labels == [
        "FSDP2 grad-op shard",
        "FSDP2 full shard",
        "FSDP2 grad-op shard + CPU offload",
        "FSDP2 full shard + CPU offload",
    ]
    # 2 nodes x 2 GPUs: N is still 4 on the GPU side; a node's RAM holds its 2 processes' shards, 2 x 4,000,000.
    assert fsdp_formula(size, True, True, gpus_per_node=2, nodes=2) == (4_000, 8_000_000)
    assert fsdp_formula(size, False, False, gpus_per_node=2, nodes=2) == (6_000_000, 0)


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
    # FSDP2 rows of this model on 2 GPUs x 1 node. Shard: 16 x 7,408 / 2 = 59,264 B per process.
    # full shard 59,264 + 2 x 2 x 1,600 = 65,664 B; grad-op shard 2 x 7,408 + 59,264 = 14,816 + 59,264 = 74,080 B;
    # offload: GPU 6,400 B (full) or 14,816 B (grad-op), CPU 59,264 x 2 processes = 118,528 B on the node.
    rows = estimate_all(size, gpus_per_node=2, nodes=1, use_deepspeed=False)
    assert {(e.label, e.gpu_formula, e.cpu_formula) for e in rows if e.engine == "FSDP2"} == {
        ("FSDP2 full shard", 65_664, 0),
        ("FSDP2 grad-op shard", 74_080, 0),
        ("FSDP2 full shard + CPU offload", 6_400, 118_528),
        ("FSDP2 grad-op shard + CPU offload", 14_816, 118_528),
    }


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
    every = estimate_all(size, gpus_per_node=8, nodes=2)
    rows = {(e.stage, e.offload): e for e in every if e.engine == "ZeRO"}
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
    fsdp = {(e.stage, e.offload): e for e in every if e.engine == "FSDP2"}
    largest = size.largest_layer
    assert fsdp[(3, "none")].gpu_formula == pytest.approx(16 * psi / n + 4 * largest)
    assert fsdp[(2, "none")].gpu_formula == pytest.approx(2 * psi + 16 * psi / n)
    assert fsdp[(3, "cpu")].gpu_formula == 4 * largest and fsdp[(2, "cpu")].gpu_formula == 2 * psi
    # The node's 8 processes each hold a 16 psi / 16 shard in CPU RAM.
    assert fsdp[(3, "cpu")].cpu_formula == pytest.approx(8 * 16 * psi / n) == fsdp[(2, "cpu")].cpu_formula
    assert fsdp[(3, "none")].cpu_formula == 0 and fsdp[(2, "none")].cpu_formula == 0
    assert len(fsdp) == 4 and len(every) == 12


def test_recommendation_is_the_fastest_setting_that_fits():
    size = ModelSize("m", params=7_000_000_000, largest_layer=250_000_000)
    estimates = estimate_all(size, gpus_per_node=8, nodes=1)
    # 7B: DDP needs 104 GiB, ZeRO-1 33 GiB (formula) per GPU.
    assert recommend(estimates, 80).label == "ZeRO-1"
    assert recommend(estimates, 16).label == "ZeRO-3"
    assert recommend(estimates, 0.001) is None


def test_recommendation_places_the_fsdp_rows_by_communication():
    # 7B parameters, L = 250M, 8 GPUs (GiB = 2**30 bytes):
    #   ZeRO-2 formula 2 x 7e9 + 14 x 7e9 / 8 = 26.25e9 (24.45 GiB), DeepSpeed 14e9 + 18 x 7e9 / 8 = 29.75e9 (27.71)
    #   FSDP2 grad-op 2 x 7e9 + 16 x 7e9 / 8 = 28e9 (26.08 GiB)
    #   ZeRO-3 formula 14e9 (13.04 GiB), DeepSpeed 4 x 250e6 + 18 x 7e9 / 8 = 16.75e9 (15.60 GiB)
    #   FSDP2 full shard 14e9 + 4 x 250e6 = 15e9 (13.97 GiB)
    size = ModelSize("m", params=7_000_000_000, largest_layer=250_000_000)
    estimates = estimate_all(size, gpus_per_node=8, nodes=1)
    # 27 GiB: ZeRO-2 fails DeepSpeed's estimate; grad-op and full shard both fit: grad-op gathers once per step.
    assert recommend(estimates, 27).label == "FSDP2 grad-op shard"
    fsdp_only = [e for e in estimates if e.engine == "FSDP2"]
    assert recommend(fsdp_only, 80).label == "FSDP2 grad-op shard"
    assert recommend(fsdp_only, 20).label == "FSDP2 full shard"
    assert recommend(fsdp_only, 5).label == "FSDP2 full shard + CPU offload"
    # 15 GiB: ZeRO-3 fails DeepSpeed's 15.60 GiB, FSDP2 full shard's 13.97 GiB fits.
    assert recommend(estimates, 15).label == "FSDP2 full shard"
    # 16 GiB: ZeRO-3 fits and comes first among the settings that gather twice (the ZeRO pick of before).
    assert recommend(estimates, 16).label == "ZeRO-3"
    # No offload before offload: 13.5 GiB fits only offloaded settings, ZeRO-2's (14e9 = 13.04 GiB) first.
    assert recommend(estimates, 13.5).label == "ZeRO-2 + offload optimizer"
    report = format_report(size, estimates, 8, 1, 27)
    assert "pick FSDP2 grad-op shard" in report
    assert "accelerate_configs/fsdp2.yaml with fsdp_reshard_after_forward: false" in report
    assert "accelerate_configs/fsdp2.yaml)" in format_report(size, estimates, 8, 1, 15)
    assert "fsdp2.yaml with fsdp_offload_params: true" in format_report(size, fsdp_only, 8, 1, 5)


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
    rows = {line[:34].strip(): line[34:].split() for line in out.splitlines() if line.startswith("FSDP2 ")}
    psi, largest = size.params, size.largest_layer
    # Cells: per GPU formula (2 words), per GPU DeepSpeed "-", CPU/node formula (2 words), CPU/node DeepSpeed "-", fits.
    expected = {
        "FSDP2 grad-op shard": (2 * psi + 16 * psi / 8, 0),
        "FSDP2 full shard": (16 * psi / 8 + 4 * largest, 0),
        "FSDP2 grad-op shard + CPU offload": (2 * psi, 16 * psi),
        "FSDP2 full shard + CPU offload": (4 * largest, 16 * psi),
    }
    assert set(rows) == set(expected)
    for label, (gpu, cpu) in expected.items():
        cells = rows[label]
        assert " ".join(cells[0:2]) == format_bytes(gpu) and cells[2] == "-", label
        assert " ".join(cells[3:5]) == format_bytes(cpu) and cells[5] == "-" and cells[6] == "yes", label
    assert "pick ZeRO-0" in out


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["estimate-memory", "recipe=summarization", f"model.name_or_path={tmp_path}/missing/x/y"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="at least 1"):
        estimate_all(ModelSize("m", 10, 1), gpus_per_node=0, nodes=1)
