"""The GPU path (accel_tasks/performance.py) on a CPU machine: every CUDA choice is called with an explicit
device type, the wiring is checked through the real CLI, and train.compile trains the same losses as eager.

No test here needs a GPU. What a GPU would add (the fused kernel's speed, TF32 on tensor cores) is measured by
bench/gpu_throughput.py where one is lent.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from accel_tasks.config import TrainConfig
from accel_tasks.engines.performance import (
    attention_in_use,
    attention_kwargs,
    build_adamw,
    check_compile_supported,
    compile_for_training,
    compile_settings,
    describe,
    fused_adamw,
    pad_multiple,
    set_tf32,
    tf32_applies,
)
from accel_tasks.errors import ConfigError
from accel_tasks.recipe import RunContext

from helpers import check, read_json, run_cli


# -- fused AdamW -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "device_type,offloaded,fused",
    [("cuda", False, True), ("cpu", False, True), ("mps", False, False), ("cuda", True, False), ("cpu", True, False)],
)
def test_adamw_is_fused_on_cuda_and_cpu_unless_deepspeed_offloads_it(device_type, offloaded, fused):
    assert fused_adamw(device_type, offloaded) is fused


def _groups() -> list[dict]:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    return [
        {"params": [model[0].weight], "weight_decay": 0.1},
        {"params": [model[0].bias, *model[1].parameters()], "weight_decay": 0.0},
    ]


@pytest.mark.parametrize("device_type", ["cuda", "cpu", "mps"])
def test_build_adamw_keeps_the_run_settings(device_type):
    tcfg = TrainConfig(lr=3e-4, adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-6)
    optimizer = build_adamw(_groups(), tcfg, device_type)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert bool(optimizer.defaults.get("fused")) is (device_type in ("cuda", "cpu"))
    assert (
        optimizer.defaults["lr"] == 3e-4
        and optimizer.defaults["betas"] == (0.8, 0.95)
        and optimizer.defaults["eps"] == 1e-6
    )
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_the_fused_optimizer_steps_like_the_plain_one():
    """The fused AdamW the loop builds (run here with torch's CPU fused kernel) moves the weights as the plain
    (foreach) AdamW does: the kernel changes, the math does not."""
    torch.manual_seed(0)
    weights = torch.randn(64, 32)
    grads = torch.randn(64, 32)
    moved = []

    def built(param):
        return build_adamw([{"params": [param], "weight_decay": 0.01}], TrainConfig(lr=1e-2), "cpu")

    def plain(param):
        return torch.optim.AdamW([{"params": [param], "weight_decay": 0.01}], lr=1e-2, foreach=True)

    for make in (built, plain):
        param = torch.nn.Parameter(weights.clone())
        optimizer = make(param)
        for _ in range(3):
            param.grad = grads.clone()
            optimizer.step()
        moved.append(param.detach())
    assert bool(built(torch.nn.Parameter(weights.clone())).defaults.get("fused")) is True
    torch.testing.assert_close(moved[0], moved[1], rtol=1e-5, atol=1e-6)


def test_optimizer_offload_is_read_from_the_deepspeed_config():
    from accel_tasks.engines.accelerator import optimizer_offloaded

    def accelerator(kind: str, zero: dict) -> SimpleNamespace:
        plugin = SimpleNamespace(deepspeed_config={"zero_optimization": zero}, zero_stage=zero.get("stage", 0))
        return SimpleNamespace(
            state=SimpleNamespace(deepspeed_plugin=plugin), distributed_type=SimpleNamespace(value=kind)
        )

    assert optimizer_offloaded(accelerator("DEEPSPEED", {"stage": 2, "offload_optimizer": {"device": "cpu"}}))
    assert optimizer_offloaded(accelerator("DEEPSPEED", {"stage": 3, "offload_optimizer": {"device": "nvme"}}))
    assert not optimizer_offloaded(accelerator("DEEPSPEED", {"stage": 2, "offload_optimizer": {"device": "none"}}))
    assert not optimizer_offloaded(accelerator("DEEPSPEED", {"stage": 1}))
    assert not optimizer_offloaded(accelerator("MULTI_GPU", {"stage": 2, "offload_optimizer": {"device": "cpu"}}))


# -- TF32 --------------------------------------------------------------------------------------------------
def test_tf32_is_a_cuda_setting_only():
    assert tf32_applies("cuda", True) and not tf32_applies("cuda", False) and not tf32_applies("cpu", True)
    before = torch.get_float32_matmul_precision()
    assert set_tf32("cpu", True) is False
    assert torch.get_float32_matmul_precision() == before  # the CPU's fp32 matmuls are left alone


def test_tf32_on_cuda_sets_both_torch_apis_so_later_reads_do_not_fail():
    """torch >= 2.9 raises on reading allow_tf32 after only the new fp32_precision was set; both must agree."""
    try:
        assert set_tf32("cuda", True) is True
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cuda.matmul.allow_tf32 is True  # a read that libraries do; must not raise
        assert set_tf32("cuda", False) is False
        assert torch.get_float32_matmul_precision() == "highest" and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.set_float32_matmul_precision("highest")


# -- padding under mixed precision -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mixed_precision,multiple", [("bf16", 8), ("fp16", 8), ("BF16", 8), ("fp8", 8), ("no", None), ("fp32", None)]
)
def test_pad_multiple(mixed_precision, multiple):
    assert pad_multiple(mixed_precision) == multiple


def _summarization_recipe():
    from accel_tasks.preflight import resolve_config

    cfg, recipe_cls = resolve_config(["recipe=summarization"], None)
    recipe = recipe_cls(cfg)
    recipe.load_model()
    return recipe


@pytest.mark.parametrize("multiple", [8, None])
def test_seq2seq_batches_are_padded_to_the_multiple(multiple):
    recipe = _summarization_recipe()
    recipe.begin_run(RunContext(pad_to_multiple_of=multiple))  # as the loop does, from the mixed precision
    tokenizer = recipe.processor
    features = [
        dict(tokenizer("a short one"), labels=tokenizer(text_target="x")["input_ids"]),
        dict(
            tokenizer("a somewhat longer document with more words in it"),
            labels=tokenizer(text_target="y z w")["input_ids"],
        ),
    ]
    longest_source = max(len(f["input_ids"]) for f in features)
    longest_label = max(len(f["labels"]) for f in features)
    batch = recipe.collate(features)
    if multiple is None:
        assert batch["input_ids"].shape[1] == longest_source and batch["labels"].shape[1] == longest_label
    else:
        assert batch["input_ids"].shape[1] % multiple == 0 and batch["input_ids"].shape[1] >= longest_source
        assert batch["labels"].shape[1] % multiple == 0
        assert batch["attention_mask"].sum().item() == sum(len(f["input_ids"]) for f in features)  # padding is masked
        assert (batch["labels"] == -100).sum().item() == batch["labels"].numel() - sum(
            len(f["labels"]) for f in features
        )


def test_qa_batches_are_padded_to_the_multiple():
    from accel_tasks.preflight import resolve_config

    cfg, recipe_cls = resolve_config(["recipe=extractive_qa"], None)
    recipe = recipe_cls(cfg)
    recipe.processor = SimpleNamespace(pad_token_id=0, pad_token_type_id=0)
    features = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]},
        {"input_ids": [5] * 11, "attention_mask": [1] * 11},
    ]
    assert recipe.collate(features)["input_ids"].shape == (2, 11)
    recipe.begin_run(RunContext(pad_to_multiple_of=8))
    batch = recipe.collate(features)
    assert batch["input_ids"].shape == (2, 16) and batch["attention_mask"].sum().item() == 14


# -- attention ---------------------------------------------------------------------------------------------
def test_attention_kwargs():
    assert attention_kwargs(None) == {}
    assert attention_kwargs("eager") == {"attn_implementation": "eager"}


@pytest.mark.parametrize("recipe", ["summarization", "translation"])
def test_bundled_models_run_sdpa_attention(recipe):
    """Nothing passed: transformers takes SDPA for every model class that supports it (Marian, BART, T5 do)."""
    from accel_tasks.preflight import resolve_config

    cfg, recipe_cls = resolve_config([f"recipe={recipe}"], None)
    model, _ = recipe_cls(cfg).load_model()
    assert attention_in_use(model) == "sdpa"


def test_model_attn_implementation_is_passed_and_a_bad_one_is_one_line():
    from accel_tasks.preflight import resolve_config

    cfg, recipe_cls = resolve_config(["recipe=summarization", "model.attn_implementation=eager"], None)
    model, _ = recipe_cls(cfg).load_model()
    assert attention_in_use(model) == "eager"
    cfg, recipe_cls = resolve_config(["recipe=summarization", "model.attn_implementation=sdpaa"], None)
    with pytest.raises(
        ConfigError, match=r"model.attn_implementation='sdpaa' cannot be used with this model: .*choose eager"
    ):
        recipe_cls(cfg).load_model()


@pytest.mark.parametrize("model_type", ["t5", "bart"])
def test_t5_and_bart_sized_models_pick_sdpa(model_type):
    import transformers

    config = transformers.AutoConfig.for_model(
        model_type,
        d_model=32,
        vocab_size=64,
        num_layers=1,
        num_heads=2,
        d_kv=16,
        d_ff=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
    )
    model = transformers.AutoModelForSeq2SeqLM.from_config(config, **attention_kwargs(None))
    assert attention_in_use(model) == "sdpa"


# -- torch.compile -----------------------------------------------------------------------------------------
def test_compile_settings_from_the_config_and_from_accelerate_launch():
    assert compile_settings(False, {}) is None
    assert compile_settings(True, {}) == {"backend": "inductor"}
    assert compile_settings(False, {"ACCELERATE_DYNAMO_BACKEND": "NO"}) is None
    assert compile_settings(True, {"ACCELERATE_DYNAMO_BACKEND": "NO"}) == {"backend": "inductor"}
    # `accelerate launch --dynamo_backend aot_eager --dynamo_mode max-autotune --dynamo_use_dynamic true`
    env = {
        "ACCELERATE_DYNAMO_BACKEND": "AOT_EAGER",
        "ACCELERATE_DYNAMO_MODE": "max-autotune",
        "ACCELERATE_DYNAMO_USE_DYNAMIC": "True",
        "ACCELERATE_DYNAMO_USE_FULLGRAPH": "False",
    }
    assert compile_settings(False, env) == {"backend": "aot_eager", "mode": "max-autotune", "dynamic": True}


def test_compile_under_deepspeed_is_refused_with_one_line():
    check_compile_supported(None, deepspeed=True)
    check_compile_supported({"backend": "inductor"}, deepspeed=False)
    with pytest.raises(ConfigError, match="not supported under DeepSpeed"):
        check_compile_supported({"backend": "inductor"}, deepspeed=True)


def test_the_compiled_forward_shares_the_model_and_leaves_its_state_dict_alone():
    model = torch.nn.Linear(3, 2)
    assert compile_for_training(model, None) is model
    compiled = compile_for_training(model, {"backend": "eager"})
    assert compiled is not model and compiled._orig_mod is model
    assert set(model.state_dict()) == {"weight", "bias"}  # what checkpoints and the export save
    x = torch.randn(4, 3)
    torch.testing.assert_close(compiled(x), model(x))


def test_describe():
    line = describe(
        device="cuda", attention="sdpa", TF32=True, pad_to_multiple_of=8, AdamW="fused", compile={"backend": "inductor"}
    )
    assert line == "speed: device=cuda attention=sdpa TF32=on pad_to_multiple_of=8 AdamW=fused compile=backend:inductor"
    assert describe(TF32=False, compile=None) == "speed: TF32=off compile=off"


# -- through the CLI ---------------------------------------------------------------------------------------
SHORT_RUN = [
    "recipe=summarization",
    "data.max_train_samples=64",
    "data.max_eval_samples=4",
    "train.batch_size=8",
    "train.log_every=1",
    "train.eval_at_start=false",
    "task.max_target_length=16",
]


def _losses(stdout: str) -> dict[int, float]:
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"step (\d+)/\d+ loss (\S+)", stdout)}


# A recipe plugin: the built-in summarization recipe, recording for every batch it collates (train and eval) the
# longest source and target before padding and the widths of the padded batch, to $RECORD_DIR/batches.jsonl.
PADDING_PROBE = """
import json
import os
from pathlib import Path

from accel_tasks.recipes import PRESETS_DIR
from accel_tasks.recipes.summarization import SummarizationRecipe


class PaddingProbe(SummarizationRecipe):
    name = "padding_probe"
    preset_file = PRESETS_DIR / "summarization.yaml"

    def collate(self, features):
        longest = {key: max(len(f[key]) for f in features) for key in ("input_ids", "labels") if key in features[0]}
        batch = super().collate(features)
        record = {key: [longest[key], batch[key].shape[1]] for key in longest}
        with (Path(os.environ["RECORD_DIR"]) / "batches.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\\n")
        return batch
"""


def _padding_run(tmp_path: Path, mixed_precision: str) -> tuple[str, list[dict]]:
    """A 2-step run of the probe under ``mixed_precision``: its stdout and every collated batch's widths."""
    (tmp_path / "probe.py").write_text(PADDING_PROBE)
    record = tmp_path / f"record-{mixed_precision}"
    record.mkdir()
    result = check(
        run_cli(
            [
                f"recipe={tmp_path / 'probe.py'}:PaddingProbe",
                *SHORT_RUN[1:],
                "train.max_steps=2",
                "generation.max_new_tokens=4",
                f"output_dir=run-{mixed_precision}",
            ],
            tmp_path,
            env={"RECORD_DIR": str(record)},
            mixed_precision=mixed_precision,
        )
    )
    batches = [json.loads(line) for line in (record / "batches.jsonl").read_text().splitlines()]
    assert len(batches) >= 3, batches  # 2 train batches and the final eval's
    return result.stdout, batches


def test_bf16_runs_pad_to_multiples_of_8_and_fp32_runs_do_not(tmp_path: Path):
    """The loop hands the multiple to the recipe from the launcher's mixed precision (bf16 autocast works on CPU):
    under bf16 every batch (sources and labels, train and eval) is as wide as its longest row rounded up to a
    multiple of 8; in fp32 exactly as wide as its longest row, on data whose lengths are not multiples of 8."""
    bf16_out, bf16 = _padding_run(tmp_path, "bf16")
    fp32_out, fp32 = _padding_run(tmp_path, "no")
    # The same data in both runs, and lengths that tell the two apart.
    assert [{k: v[0] for k, v in b.items()} for b in bf16] == [{k: v[0] for k, v in b.items()} for b in fp32]
    assert any(longest % 8 for batch in fp32 for longest, _ in batch.values()), fp32
    for batch in bf16:
        assert set(batch) == {"input_ids", "labels"}, batch
        for key, (longest, width) in batch.items():
            assert width == -(-longest // 8) * 8, (key, batch)
    for batch in fp32:
        for key, (longest, width) in batch.items():
            assert width == longest, (key, batch)
    for out in (bf16_out, fp32_out):
        losses = _losses(out)
        assert sorted(losses) == [1, 2] and all(math.isfinite(loss) for loss in losses.values()), losses
    # The header and the speed line say what the batches show.
    assert "mixed_precision=bf16" in bf16_out and "mixed_precision=no" in fp32_out
    assert "speed: device=cpu attention=sdpa TF32=off pad_to_multiple_of=8 AdamW=fused" in bf16_out
    assert "speed: device=cpu attention=sdpa TF32=off pad_to_multiple_of=off AdamW=fused" in fp32_out


@pytest.mark.slow
def test_train_compile_trains_the_same_losses_as_eager_and_exports_plain_keys(tmp_path: Path):
    """train.compile=true through the real CLI: the same losses as the eager run (the bundled model has no dropout),
    and a checkpoint and export whose keys are the model's own (no ``_orig_mod.``), which eval-only reloads.

    Every batch here has the same shape (documents and summaries cut to fixed lengths), so inductor compiles once
    (about a minute on 2 CPU cores; more distinct shapes mean a second, dynamic-shape compile).
    """
    from safetensors import safe_open

    data = tmp_path / "train.jsonl"
    import json

    words = "the model reads every word of this document and writes a summary that is short".split()
    rows = [
        {
            "document": " ".join(words[(i + j) % len(words)] for j in range(60)),
            "summary": " ".join(words[i % 7 : i % 7 + 12]),
            "id": str(i),
        }
        for i in range(32)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "recipe=summarization",
        f"data.train_file={data}",
        f"data.validation_file={data}",
        "data.max_eval_samples=2",
        "train.batch_size=8",
        "train.max_steps=4",
        "train.log_every=1",
        "train.eval_at_start=false",
        "train.save_every=4",
        "task.max_source_length=24",
        "task.max_target_length=8",
        "generation.max_new_tokens=4",
    ]
    # Real processes, and inductor compiling in the run's own process: its pool of compile workers hung (15 min,
    # no CPU) in two whole-suite runs, once forked from the test's forkserver and once under python -m.
    eager = check(run_cli([*args, "output_dir=eager"], tmp_path, launcher="python"))
    in_process = {"TORCHINDUCTOR_COMPILE_THREADS": "1"}
    compile_args = [*args, "train.compile=true", "output_dir=compiled"]
    compiled = check(run_cli(compile_args, tmp_path, launcher="python", env=in_process, timeout=600))
    assert "compile=backend:inductor" in compiled.stdout
    eager_losses, compiled_losses = _losses(eager.stdout), _losses(compiled.stdout)
    assert sorted(eager_losses) == sorted(compiled_losses) == [1, 2, 3, 4]
    for step, loss in eager_losses.items():
        assert compiled_losses[step] == pytest.approx(loss, rel=2e-4, abs=2e-4), (step, eager_losses, compiled_losses)
    assert read_json(tmp_path / "compiled/metrics.json")["train_loss"] == pytest.approx(
        read_json(tmp_path / "eager/metrics.json")["train_loss"], rel=2e-4
    )
    for weights in (
        tmp_path / "compiled/model/model.safetensors",
        tmp_path / "compiled/checkpoints/step_4/model.safetensors",
    ):
        with safe_open(str(weights), framework="pt") as handle:
            keys = list(handle.keys())
        assert keys and not [k for k in keys if "_orig_mod" in k], keys[:5]
    check(
        run_cli(
            ["recipe=summarization", "mode=eval", "model.name_or_path=compiled/checkpoints/step_4", "output_dir=again"],
            tmp_path,
        )
    )
    assert read_json(tmp_path / "again/metrics.json")["rougeL"] == pytest.approx(
        read_json(tmp_path / "compiled/metrics.json")["rougeL"]
    )


# -- bench/gpu_throughput.py -------------------------------------------------------------------------------
def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gpu_throughput", Path(__file__).resolve().parents[2] / "bench/gpu_throughput.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA H100 NVL", 835.5),
        ("NVIDIA H200", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.1),
        ("NVIDIA A10", 125.0),
        ("NVIDIA A10G", None),
        ("Tesla V100-SXM2-16GB", None),
        ("AMD Instinct MI300X", 1307.4),
    ],
)
def test_the_peak_table_matches_device_names(name, peak):
    assert _bench().peak_tflops(name) == peak


def test_the_throughput_bench_runs_on_cpu_and_sizes_the_models_as_published(tmp_path: Path):
    import subprocess
    import sys

    bench = _bench()
    t5, bart = bench.build_model("t5-small", None), bench.build_model("bart-base", None)
    assert sum(p.numel() for p in t5.parameters()) == 60_506_624
    assert sum(p.numel() for p in bart.parameters()) == 139_420_416
    done = subprocess.run(
        [
            sys.executable,
            str(Path(bench.__file__)),
            "--models",
            "t5-small",
            "--batch-size",
            "1",
            "--source-len",
            "8",
            "--target-len",
            "4",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--peak-tflops",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"throughput: t5-small tokens_per_s=\d+ mfu=0\.\d{4}", last), done.stdout
