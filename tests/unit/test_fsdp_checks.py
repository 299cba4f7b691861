"""FSDP2's settings, the combinations refused before anything loads, the layer units, and the engine in one process.

The launcher settings are the environment `accelerate launch` gives a worker for an FSDP config (read off accelerate
1.16); the refusals go through preflight's make_plan, as a run does, and write nothing. The engine part shards real
transformers models (tiny configs) in this process over a one-process gloo group: DTensor parameters, the full
state dict equal to the weights, and a distributed checkpoint read back into a plain model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from accel_tasks.engines.fsdp import FsdpSettings, check_fsdp_launch, read_fsdp_settings, wrap_units
from accel_tasks.errors import ConfigError

FSDP2_ENV = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_RESHARD_AFTER_FORWARD": "true",
    "FSDP_OFFLOAD_PARAMS": "false",
    "FSDP_ACTIVATION_CHECKPOINTING": "false",
    "ACCELERATE_MIXED_PRECISION": "no",
}


@pytest.fixture
def fsdp_env(monkeypatch):
    for key, value in FSDP2_ENV.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_the_launcher_settings_are_read(fsdp_env):
    assert read_fsdp_settings() == FsdpSettings()
    fsdp_env.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    fsdp_env.setenv("FSDP_OFFLOAD_PARAMS", "true")
    fsdp_env.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "LlamaDecoderLayer, BertLayer")
    settings = read_fsdp_settings()
    assert settings.sharding == "grad-op shard" and settings.offload
    assert settings.wrap_classes == ("LlamaDecoderLayer", "BertLayer")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("FSDP_VERSION", "1", "accel_tasks runs FSDP2: set fsdp_version: 2 in its fsdp_config"),
        ("FSDP_AUTO_WRAP_POLICY", "SIZE_BASED_WRAP", "fsdp_auto_wrap_policy SIZE_BASED_WRAP is not supported here"),
        ("FSDP_RESHARD_AFTER_FORWARD", "maybe", "fsdp_reshard_after_forward='maybe': use true (full shard) or false"),
    ],
)
def test_settings_this_engine_cannot_honour_name_the_fix(fsdp_env, key, value, expected):
    fsdp_env.setenv(key, value)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_fsdp_settings()


def make_plan_of(tmp_path: Path, *overrides: str):
    from accel_tasks.preflight import make_plan, resolve_config

    return make_plan(*resolve_config(["recipe=summarization", f"output_dir={tmp_path / 'out'}", *overrides], None))


@pytest.mark.parametrize(
    "env, overrides, expected",
    [
        ({"FSDP_VERSION": "1"}, [], "accelerate to-fsdp2 --config_file OLD --output_file NEW"),
        ({}, ["deepspeed=ds.json"], "the accelerate config asks for FSDP and the run for DeepSpeed"),
        ({"ACCELERATE_MIXED_PRECISION": "fp16"}, [], "launch with --mixed_precision bf16 (or no)"),
        ({}, ["train.compile=true"], "train.compile (or --dynamo_backend) is not supported under FSDP2 here"),
        ({}, ["train.grad_compression=powersgd"], "FSDP2 reduce-scatters sharded gradients instead"),
    ],
    ids=["fsdp1", "deepspeed", "fp16", "compile", "grad_compression"],
)
def test_bad_combinations_are_one_line_before_anything_loads(tmp_path, fsdp_env, env, overrides, expected):
    for key, value in env.items():
        fsdp_env.setenv(key, value)
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    fsdp_env.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        make_plan_of(tmp_path, *overrides)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_eval_only_under_fsdp2_may_have_compile_settings_that_only_training_uses(fsdp_env):
    check_fsdp_launch(deepspeed=False, compile_requested=True, grad_compression="powersgd", mode="eval")


def fake_checkpoint(root: Path, fsdp: bool) -> Path:
    from accel_tasks.manifest import write_manifest

    path = root / "checkpoints" / "step_2"
    path.mkdir(parents=True)
    (path / "loop_state.json").write_text(json.dumps({"global_step": 2, "epoch": 0, "batches_in_epoch": 2}))
    for rank in (0, 1):
        (path / f"random_states_{rank}.pkl").write_bytes(b"x")
    if fsdp:
        (path / "fsdp_state").mkdir()
        (path / "fsdp_state" / ".metadata").write_bytes(b"x")
    else:
        (path / "model.safetensors").write_bytes(b"x")
    write_manifest(path, kind="checkpoint", step=2)
    return path


def test_a_checkpoint_resumed_under_the_other_engine_is_one_line(tmp_path, monkeypatch):
    from accel_tasks.engines.reshard import check_resume_layout
    from accel_tasks.preflight import resolve_config

    cfg, _ = resolve_config(["recipe=summarization"], None)
    sharded = fake_checkpoint(tmp_path / "a", fsdp=True)
    plain = fake_checkpoint(tmp_path / "b", fsdp=False)
    with pytest.raises(ConfigError, match="is a FSDP2 checkpoint written by 2 processes, and this run has no FSDP"):
        check_resume_layout(cfg, sharded)
    for key, value in FSDP2_ENV.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=r"checkpoint written by 2 processes, and this run runs FSDP2"):
        check_resume_layout(cfg, plain)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert check_resume_layout(cfg, sharded).fsdp  # any number of processes: it reshards on load


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    return LlamaForCausalLM(config)


def tiny_bart():
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=96,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
    )
    return BartForConditionalGeneration(config)


def test_layer_units_come_from_no_split_modules_or_the_layer_stacks():
    from peft import LoraConfig, get_peft_model

    llama = tiny_llama()
    assert [type(unit).__name__ for unit in wrap_units(llama, FsdpSettings())] == ["LlamaDecoderLayer"] * 2
    lora = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert len(wrap_units(lora, FsdpSettings())) == 2  # asked through the PEFT model's base model
    # BART names no _no_split_modules in transformers 5: its encoder and decoder layer stacks are the units.
    names = [type(unit).__name__ for unit in wrap_units(tiny_bart(), FsdpSettings())]
    assert names == ["BartEncoderLayer", "BartEncoderLayer", "BartDecoderLayer"]
    assert wrap_units(llama, FsdpSettings(wrap_layers=False)) == []
    assert len(wrap_units(llama, FsdpSettings(wrap_classes=("LlamaMLP",)))) == 2
    with pytest.raises(ConfigError, match="no module of LlamaForCausalLM is a NoSuchLayer"):
        wrap_units(llama, FsdpSettings(wrap_classes=("NoSuchLayer",)))


def test_one_process_shards_exports_the_full_weights_and_checkpoints_to_a_plain_model(tmp_path, monkeypatch):
    """The engine's own calls in this process (a one-process gloo group): what every multi-process run relies on."""
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator

    from accel_tasks.engines.fsdp import (
        describe_sharding,
        full_state_dict,
        is_sharded,
        load_sharded_weights,
        register_sharded_checkpoints,
        shard_model,
    )

    torch.manual_seed(0)
    model = tiny_llama()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    accelerator = Accelerator(cpu=True)
    try:
        sharded = shard_model(model, accelerator, FsdpSettings())
        assert is_sharded(sharded) and all(type(p).__name__ == "DTensor" for p in sharded.parameters())
        assert "FSDP2 full shard over 1 process, 2 layer units + the root" in describe_sharding(
            sharded, accelerator, FsdpSettings()
        )
        full = full_state_dict(sharded)
        assert "lm_head.weight" in full or "model.embed_tokens.weight" in full
        for name, tensor in full.items():
            assert torch.equal(tensor, before[name]), name
        optimizer = torch.optim.AdamW(sharded.parameters(), lr=1e-2)
        sharded(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
        optimizer.step()
        register_sharded_checkpoints(accelerator, sharded, optimizer)
        accelerator.save_state(str(tmp_path / "checkpoint"))
        trained = full_state_dict(sharded)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert (tmp_path / "checkpoint" / "fsdp_state" / ".metadata").is_file()
    plain = tiny_llama()
    load_sharded_weights(plain, tmp_path / "checkpoint")
    for name, tensor in trained.items():
        assert torch.equal(plain.state_dict()[name], tensor), name
    assert not torch.equal(
        trained["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"]
    )
