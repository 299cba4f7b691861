"""PEFT / LoRA in the core: per-family defaults, config errors, adapter export, eval-only and resume.

Unit tests build tiny models from configs in-process; end-to-end tests run the real CLI through
``accelerate launch`` (plain and DeepSpeed ZeRO-2/3 with 2 processes) on the bundled tiny summarizer, and
once per other built-in recipe on its bundled offline default.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers

from accel_tasks.config import PeftOptions, check_peft_values
from accel_tasks.errors import ConfigError
from accel_tasks.models.adapters import (
    build_peft_config,
    check_peft_config_file,
    default_target_modules,
    linear_module_names,
    wrap_model,
)
from accel_tasks.models.loading import ADAPTER_CONFIG, adapter_base_source
from accel_tasks.recipes.extractive_qa import ExtractiveQARecipe
from accel_tasks.recipes.speech_ctc import SpeechCTCRecipe
from accel_tasks.runs.export import base_state_dict

from helpers import ACCELERATE_CONFIGS, check, cli_env, read_json, read_jsonl, run_cli

transformers.logging.set_verbosity_error()

# -- tiny models ------------------------------------------------------------------------------------

SEQ2SEQ = dict(
    vocab_size=64,
    d_model=16,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    max_position_embeddings=64,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
    bos_token_id=0,
)
ENCODER = dict(
    vocab_size=64,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=64,
    pad_token_id=0,
)
AUDIO = dict(
    vocab_size=20,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    conv_dim=(8, 8),
    conv_stride=(5, 2),
    conv_kernel=(10, 3),
    num_conv_pos_embeddings=4,
    num_conv_pos_embedding_groups=2,
    pad_token_id=0,
)


def tiny(kind: str):
    """A randomly initialised tiny model of one architecture family."""
    t = transformers
    builders = {
        "t5": lambda: t.T5ForConditionalGeneration(
            t.T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0)
        ),
        "mt5": lambda: t.MT5ForConditionalGeneration(
            t.MT5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0)
        ),
        "bart": lambda: t.BartForConditionalGeneration(t.BartConfig(**SEQ2SEQ)),
        "mbart": lambda: t.MBartForConditionalGeneration(t.MBartConfig(**SEQ2SEQ)),
        "marian": lambda: t.MarianMTModel(t.MarianConfig(**SEQ2SEQ, decoder_vocab_size=64)),
        "bert": lambda: t.BertForQuestionAnswering(t.BertConfig(**ENCODER)),
        "distilbert": lambda: t.DistilBertForQuestionAnswering(
            t.DistilBertConfig(vocab_size=64, dim=16, n_layers=1, n_heads=2, hidden_dim=32, pad_token_id=0)
        ),
        "wav2vec2": lambda: t.Wav2Vec2ForCTC(t.Wav2Vec2Config(**AUDIO)),
        "wav2vec2-bert": lambda: t.Wav2Vec2BertForCTC(
            t.Wav2Vec2BertConfig(
                vocab_size=20,
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                output_hidden_size=16,
                feature_projection_input_dim=16,
                pad_token_id=0,
            )
        ),
        "whisper": lambda: t.WhisperForConditionalGeneration(
            t.WhisperConfig(
                **{k: v for k, v in SEQ2SEQ.items() if k != "max_position_embeddings"},
                num_mel_bins=8,
                max_source_positions=16,
                max_target_positions=32,
            )
        ),
        "gpt2": lambda: t.GPT2LMHeadModel(t.GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)),
    }
    torch.manual_seed(0)
    return builders[kind]()


def task_heads(model) -> list[str]:
    """The built-in recipes' modules_to_save hook for a tiny model: QA's span head, CTC's lm_head, else none."""
    if type(model).__name__.endswith("ForQuestionAnswering"):
        return ExtractiveQARecipe.peft_modules_to_save(SimpleNamespace(), model)
    if type(model).__name__.endswith("ForCTC"):
        return SpeechCTCRecipe.peft_modules_to_save(SimpleNamespace(), model)
    return []


def wrap(model, options: PeftOptions, mode: str = "train"):
    return wrap_model(model, options, mode, task_heads)


def validate_peft_options(options: PeftOptions) -> None:
    """What preflight checks of peft.*: the values, then the peft.config file."""
    check_peft_values(options)
    check_peft_config_file(options)


def lora(**overrides) -> PeftOptions:
    options = PeftOptions(method="lora")
    for key, value in overrides.items():
        setattr(options, key, value)
    return options


EXPECTED_TARGETS = {
    "t5": ["q", "k", "v", "o", "wi", "wo"],
    "mt5": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"],
    "bart": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "mbart": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "marian": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "whisper": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "bert": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "wav2vec2": ["q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"],
    "wav2vec2-bert": ["linear_q", "linear_k", "linear_v", "linear_out", "intermediate_dense", "output_dense"],
}


# -- unit tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(EXPECTED_TARGETS))
def test_default_targets_per_family(kind):
    model = tiny(kind)
    assert default_target_modules(model) == EXPECTED_TARGETS[kind]


@pytest.mark.parametrize(
    "kind,heads", [("bert", ["qa_outputs"]), ("wav2vec2", ["lm_head"]), ("marian", []), ("whisper", [])]
)
def test_wrap_trains_only_adapter_and_heads(kind, heads):
    model = tiny(kind)
    total = sum(p.numel() for p in model.parameters())
    wrapped = wrap(model, lora(r=2))
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and sum(p.numel() for p in wrapped.parameters() if p.requires_grad) < total
    for name in trainable:
        assert "lora_" in name or any(f"{h}.modules_to_save" in name for h in heads), name
    for head in heads:
        assert any(f"{head}.modules_to_save" in n for n in trainable)
    assert task_heads(tiny(kind)) == heads


def test_recipe_declares_modules_to_save():
    model = tiny("bert")
    assert build_peft_config(model, lora(), []).modules_to_save is None
    config = build_peft_config(model, lora(), ["qa_outputs"])
    assert set(config.modules_to_save) == {"qa_outputs"}


def test_all_linear_targets_everything_but_the_head():
    wrapped = wrap(tiny("bart"), lora(target_modules=["all-linear"]))
    wrapped_layers = {name.rsplit(".", 1)[-1] for name, module in wrapped.named_modules() if hasattr(module, "lora_A")}
    assert wrapped_layers == set(EXPECTED_TARGETS["bart"])


def test_unknown_family_falls_back_to_peft_table():
    opt = transformers.OPTForCausalLM(
        transformers.OPTConfig(
            vocab_size=64,
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            word_embed_proj_dim=16,
        )
    )
    assert default_target_modules(opt) == ["q_proj", "v_proj"]  # OPT: no family of ours, peft's own table


def test_decoder_only_families_target_every_projection():
    assert default_target_modules(tiny("gpt2")) == ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"]


def test_no_default_lists_linear_names():
    model = tiny("marian")
    model.config.model_type = "my-own-arch"
    with pytest.raises(ConfigError) as err:
        default_target_modules(model)
    message = str(err.value)
    assert "no default target modules" in message and "MarianMTModel" in message
    for name in ("self_attn.q_proj", "fc1", "encoder_attn.out_proj", "lm_head"):
        assert name in message
    assert "peft.target_modules=" in message


def test_user_target_typo_is_an_error():
    with pytest.raises(ConfigError, match=r"\['qproj'\] match no module.*self_attn.q_proj"):
        build_peft_config(tiny("bart"), lora(target_modules=["q_proj", "qproj"]), [])
    with pytest.raises(ConfigError, match="modules_to_save.*qa_output'"):
        build_peft_config(tiny("bert"), lora(modules_to_save=["qa_output"]), [])


def test_linear_module_names_collapse_layer_indices():
    assert linear_module_names(tiny("bert")) == [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
        "qa_outputs",
    ]


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"method": "prefix"}, "peft.method='prefix' is not supported directly"),
        ({"r": 0}, "peft.r must be at least 1"),
        ({"dropout": 1.0}, r"peft.dropout must be in \[0, 1\)"),
        ({"method": None, "merge": True}, "peft.merge=true needs an adapter"),
        ({"config": "/nonexistent/peft.json"}, "does not exist"),
    ],
)
def test_validate_options(overrides, message):
    options = lora(**overrides)
    with pytest.raises(ConfigError, match=message):
        validate_peft_options(options)


def test_config_file_checks(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        validate_peft_options(PeftOptions(config=str(bad)))
    no_type = tmp_path / "no_type.json"
    no_type.write_text('{"r": 4}')
    with pytest.raises(ConfigError, match="peft_type"):
        validate_peft_options(PeftOptions(config=str(no_type)))
    ia3 = tmp_path / "ia3.json"
    ia3.write_text('{"peft_type": "IA3"}')
    with pytest.raises(ConfigError, match="contradicts peft_type 'IA3'"):
        validate_peft_options(PeftOptions(method="lora", config=str(ia3)))
    validate_peft_options(PeftOptions(config=str(ia3)))
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"peft_type": "NOPE"}')
    with pytest.raises(ConfigError, match="unknown peft_type 'NOPE'.*LORA"):
        build_peft_config(tiny("bart"), PeftOptions(config=str(unknown)), [])


@pytest.mark.parametrize("peft_type,marker", [("IA3", "ia3_l"), ("LOHA", "hada_")])
def test_config_file_for_other_methods(tmp_path, peft_type, marker):
    path = tmp_path / "peft.json"
    path.write_text(json.dumps({"peft_type": peft_type} | ({"r": 2} if peft_type == "LOHA" else {})))
    wrapped = wrap(tiny("bert"), PeftOptions(config=str(path)))
    config = wrapped.peft_config["default"]
    assert config.peft_type.value == peft_type
    assert set(config.target_modules) == set(EXPECTED_TARGETS["bert"])
    if peft_type == "IA3":
        assert set(config.feedforward_modules) == {"intermediate.dense", "output.dense"}
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert any(marker in n for n in trainable)
    assert any("qa_outputs.modules_to_save" in n for n in trainable)
    assert all(marker in n or "qa_outputs.modules_to_save" in n for n in trainable)


def test_eval_mode_leaves_model_alone():
    model = tiny("bart")
    assert wrap(model, lora(), mode="eval") is model
    assert wrap(model, PeftOptions()) is model


def test_base_state_dict_strips_adapter_layers():
    model = tiny("bert")
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = wrap(model, lora())
    for name, param in wrapped.named_parameters():
        if param.requires_grad:
            param.data.add_(1.0)  # "train" the adapter and the head copy
    base = base_state_dict(wrapped.state_dict(), reference.keys())
    assert base.keys() == reference.keys()
    assert all(torch.equal(base[k], reference[k]) for k in reference)


def test_adapter_base_source(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / ADAPTER_CONFIG).write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(ConfigError, match="does not exist"):
        adapter_base_source(str(adapter))
    (adapter / ADAPTER_CONFIG).write_text(json.dumps({"base_model_name_or_path": "org/model"}))
    assert adapter_base_source(str(adapter)) == "org/model"
    (adapter / "base").mkdir()
    (adapter / "base" / "config.json").write_text("{}")
    assert adapter_base_source(str(adapter)) == str(adapter / "base")


def test_cli_rejects_bad_peft_settings(tmp_path):
    from accel_tasks.run import main

    assert main(["recipe=summarization", "peft.method=prefix", "--print-config"]) == 2
    assert main(["recipe=summarization", "peft.method=lora", "peft.r=0", "--print-config"]) == 2


# -- end to end ---------------------------------------------------------------------------------------

TINY_RUN = [
    "generation.num_beams=1",
    "generation.max_new_tokens=8",
    "train.batch_size=4",
    "eval.batch_size=4",
    "train.log_every=1",
    "train.lr=1e-2",
    "train.warmup_steps=0",
]


@pytest.fixture(scope="module")
def summarization_args() -> list[str]:
    """The bundled offline sample (tiny Marian from its config, random init) with tiny step counts."""
    from accel_tasks.registry import load_recipe_class

    recipe_cls = load_recipe_class("summarization")
    assert (recipe_cls.sample_dir / "model" / "config.json").is_file(), "the bundled summarization sample is missing"
    return [
        "recipe=summarization",
        "data.max_train_samples=16",
        "data.max_eval_samples=6",
        "task.max_source_length=64",
        *TINY_RUN,
    ]


def step_lines(stdout: str) -> list[str]:
    """``step N/M loss X`` of each logged step: a resumed run must log the same losses as the uninterrupted one."""
    import re

    return re.findall(r"step \d+/\d+ loss \S+", stdout)


def scores(metrics: dict) -> dict:
    """The metric values of a metrics.json, without timings, training counters and which eval was the best."""
    scored = {k: v for k, v in metrics.items() if not k.startswith(("train_", "best_")) and not k.endswith("runtime_s")}
    assert any(isinstance(v, float) for v in scored.values()), metrics
    return scored


def load_adapter_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "adapter_model.safetensors"))


def deepspeed_command(args: list[str], stage: int) -> list[str]:
    """2 CPU processes under DeepSpeed ZeRO-``stage`` through the shipped launcher config.

    fp32 here, so a 1-process eval of the export can reproduce the run's predictions exactly.
    """
    config = ACCELERATE_CONFIGS / f"deepspeed_zero{stage}.yaml"
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "-m",
        "accel_tasks.run",
        *args,
    ]


def accelerate_command(args: list[str]) -> list[str]:
    """What ``run_cli`` runs for one process, for the runs started side by side."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "accel_tasks.run",
        *args,
    ]


def run_side_by_side(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Independent runs at once: start-up (imports) dominates these tiny runs, and the machine has 2 cores."""
    procs = [
        subprocess.Popen(c, cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    results = []
    for command, proc in zip(commands, procs):
        stdout, stderr = proc.communicate(timeout=900)
        results.append(check(subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)))
    return results


def checkpoint_lora_values(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The trained adapter values as the training checkpoint holds them (plain or DeepSpeed), in adapter-file keys."""
    if (checkpoint / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(checkpoint / "model.safetensors"))
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    return {k.replace(".default.", "."): v for k, v in state.items() if "lora_" in k}


def assert_same_tensors(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_lora_summarization_export_eval_resume(tmp_path, summarization_args):
    """Train with checkpoints, export adapter + merged model, evaluate both exports, resume exactly."""
    out = tmp_path / "run"
    # The README's LoRA settings, as written.
    lora_args = [
        *summarization_args,
        "peft.method=lora",
        "peft.r=8",
        "peft.alpha=16",
        "train.max_steps=4",
        "train.save_every=2",
    ]
    train = check(run_cli([*lora_args, "peft.merge=true", f"output_dir={out}"], cwd=tmp_path))
    assert "trainable / total parameters" in train.stdout and "peft: LORA" in train.stdout
    model_dir, merged_dir = out / "model", out / "model_merged"
    adapter_config = read_json(model_dir / "adapter_config.json")
    assert (adapter_config["peft_type"], adapter_config["r"], adapter_config["lora_alpha"]) == ("LORA", 8, 16)
    # The tiny base has no weights to reload: the export carries it, and the adapter config names it.
    assert Path(adapter_config["base_model_name_or_path"]) == (model_dir / "base").resolve()
    assert (model_dir / "base" / "model.safetensors").is_file() and (merged_dir / "model.safetensors").is_file()
    tensors = load_adapter_tensors(model_dir)
    assert tensors and all(t.numel() > 0 for t in tensors.values())
    assert any("lora_B" in k and t.abs().sum() > 0 for k, t in tensors.items()), (
        "lora_B starts at zero; training must move it"
    )
    assert_same_tensors(tensors, checkpoint_lora_values(out / "checkpoints" / "step_4"))

    resumed = tmp_path / "resumed"
    evals = {name: tmp_path / f"eval-{name}" for name in ("adapter", "merged")}
    *_, resume = run_side_by_side(
        [
            accelerate_command(
                [
                    "recipe=summarization",
                    "mode=eval",
                    f"model.name_or_path={model_dir}",
                    f"output_dir={evals['adapter']}",
                ]
            ),
            accelerate_command(
                [
                    "recipe=summarization",
                    "mode=eval",
                    f"model.name_or_path={merged_dir}",
                    f"output_dir={evals['merged']}",
                ]
            ),
            accelerate_command(
                [*lora_args, f"train.resume_from={out / 'checkpoints' / 'step_2'}", f"output_dir={resumed}"]
            ),
        ],
        tmp_path,
    )
    for name, evaluated in evals.items():
        assert read_jsonl(evaluated / "predictions.jsonl") == read_jsonl(out / "predictions.jsonl"), name
        assert scores(read_json(evaluated / "metrics.json")) == scores(read_json(out / "metrics.json")), name
    assert step_lines(resume.stdout) == step_lines(train.stdout)[2:]
    assert_same_tensors(load_adapter_tensors(resumed / "model"), tensors)

    # The merged export is a plain model equal to base + adapter; the adapter changes the base's outputs.
    from peft import PeftModel

    merged = transformers.AutoModelForSeq2SeqLM.from_pretrained(merged_dir).eval()
    base = transformers.AutoModelForSeq2SeqLM.from_pretrained(adapter_config["base_model_name_or_path"]).eval()
    ids = torch.tensor([[5, 6, 7, 8, 1]])
    with torch.no_grad():
        base_logits = base(input_ids=ids, decoder_input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(base, model_dir).eval()
        adapter_logits = peft_model(input_ids=ids, decoder_input_ids=ids).logits
        assert torch.allclose(merged(input_ids=ids, decoder_input_ids=ids).logits, adapter_logits, atol=1e-5)
    assert not torch.allclose(base_logits, adapter_logits, atol=1e-4)


def test_peft_checkpoint_is_not_a_model(tmp_path):
    """A checkpoint of an adapter run is refused as a model, with the fix in the message."""
    from safetensors.torch import save_file

    from accel_tasks.models.loading import check_not_peft_checkpoint

    save_file({"base_model.model.lm_head.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="training checkpoint of a PEFT run.*output_dir/model"):
        check_not_peft_checkpoint(str(tmp_path))
    save_file({"lm_head.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    check_not_peft_checkpoint(str(tmp_path))
    (tmp_path / "peft_checkpoint.json").write_text(
        "{}"
    )  # DeepSpeed checkpoints have no model.safetensors: the marker says it
    with pytest.raises(ConfigError, match="training checkpoint of a PEFT run"):
        check_not_peft_checkpoint(str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("stage", [3])
def test_lora_deepspeed_two_processes(tmp_path, summarization_args, stage):
    """ZeRO-3 on 2 CPU processes: train, checkpoint, export, resume; the saved adapter holds the trained values.

    ZeRO-3 only (the stage that partitions the adapter and gathers it to export): a ZeRO-2 LoRA run's checkpoints and
    adapter export are read back in tests/e2e/test_average.py::test_deepspeed_checkpoints_average, and ZeRO-2 resumes
    on 2 processes in tests/e2e/test_resume_world_size.py; the ZeRO-2 run here cost 1-2 minutes of the suite."""
    out = tmp_path / "run"
    common = [*summarization_args, "peft.method=lora", "peft.r=4", "train.max_steps=4", "train.save_every=2"]
    (first,) = run_side_by_side([deepspeed_command([*common, f"output_dir={out}"], stage)], tmp_path)
    tensors = load_adapter_tensors(out / "model")
    config = read_json(out / "model" / "adapter_config.json")
    assert tensors and all(t.dim() == 2 and t.numel() > 0 for t in tensors.values())
    for key, value in tensors.items():
        assert value.shape[0 if "lora_A" in key else 1] == config["r"], key
    assert any("lora_B" in k and t.abs().sum() > 0 for k, t in tensors.items())
    assert (out / "checkpoints" / "step_4" / "peft_checkpoint.json").is_file()
    # The final checkpoint's fp32 partitions, consolidated, are exactly what the export wrote.
    assert_same_tensors(tensors, checkpoint_lora_values(out / "checkpoints" / "step_4"))

    resumed, evaluated = tmp_path / "resumed", tmp_path / "eval"
    second, _ = run_side_by_side(
        [
            deepspeed_command(
                [*common, f"train.resume_from={out / 'checkpoints' / 'step_2'}", f"output_dir={resumed}"], stage
            ),
            # Eval-only on the export (1 process, no DeepSpeed) reproduces the 2-process run's predictions.
            accelerate_command(
                ["recipe=summarization", "mode=eval", f"model.name_or_path={out / 'model'}", f"output_dir={evaluated}"]
            ),
        ],
        tmp_path,
    )
    assert read_jsonl(evaluated / "predictions.jsonl") == read_jsonl(out / "predictions.jsonl")
    assert scores(read_json(evaluated / "metrics.json")) == scores(read_json(out / "metrics.json"))
    assert step_lines(second.stdout) == step_lines(first.stdout)[2:]
    assert_same_tensors(load_adapter_tensors(resumed / "model"), tensors)


# Built-in recipes written by others: each trains a LoRA adapter on its bundled offline default,
# exports it, and an eval-only run on the export reproduces the final metrics.
OTHER_RECIPES = {
    "translation": ["generation.num_beams=1", "generation.max_new_tokens=8"],
    "extractive_qa": [],
    "speech_recognition": [],
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(OTHER_RECIPES))
def test_lora_every_recipe(tmp_path, recipe):
    from accel_tasks.registry import load_recipe_class

    recipe_cls = load_recipe_class(recipe)  # fails loudly (not a skip) while the recipe is missing
    assert recipe_cls.sample_dir is not None and (recipe_cls.sample_dir / "train.jsonl").is_file(), (
        f"{recipe} has no bundled sample"
    )
    common = [
        f"recipe={recipe}",
        "data.max_train_samples=16",
        "data.max_eval_samples=8",
        "train.batch_size=4",
        "eval.batch_size=8",
        "train.log_every=1",
        *OTHER_RECIPES[recipe],
    ]
    out = tmp_path / "run"
    check(run_cli([*common, "peft.method=lora", "peft.r=4", "train.max_steps=3", f"output_dir={out}"], cwd=tmp_path))
    assert (out / "model" / "adapter_model.safetensors").is_file()
    evaluated = tmp_path / "eval"
    check(
        run_cli(
            [f"recipe={recipe}", "mode=eval", f"model.name_or_path={out / 'model'}", f"output_dir={evaluated}"],
            cwd=tmp_path,
        )
    )
    assert scores(read_json(evaluated / "metrics.json")) == scores(read_json(out / "metrics.json"))
    assert read_jsonl(evaluated / "predictions.jsonl") == read_jsonl(out / "predictions.jsonl")
