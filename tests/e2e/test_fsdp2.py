"""FSDP2 for real on CPU processes (gloo): `accelerate launch --config_file accelerate_configs/fsdp2.yaml`.

The encoder-decoder world of tests/ds_fixtures.py (a tiny BART with weights, 11 eval examples whose forced generation
lengths make the two processes finish generating at different steps) trains 4 steps on 2 processes with a
checkpoint at step 2 (run A). A probe recipe records, on each process, what its parameters hold: DTensors, each
process its own dim-0 shard. Then, from A:

- the export and the step-4 checkpoint scored in one plain process give A's final metrics and predictions (2-process
  FSDP2 generation, each example once); so does an eval-only run under FSDP2 on 2 processes;
- A's step-2 checkpoint resumed on the same 2 processes ends at A's losses and weights (exact resume), and on 1
  process it reshards (distributed checkpoints reshard on load);
- LoRA on the bundled decoder-only Llama (tied embeddings): 1 FSDP2 process to a checkpoint, resumed on 2
  processes (1 -> 2), exporting the adapter (with its base weights) and the merged model, each of which reproduces
  the run's metrics and predictions in one process;
- every built-in recipe and the example plugin train 2 steps on 2 processes, score and export.

Runs are fp32 (--mixed_precision no), so an eval of the same weights in another process layout is exact.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from ds_fixtures import FORCED_RECIPE, WORLD_ARGS, build_world
from helpers import ACCELERATE_CONFIGS, REPO, check, read_json, read_jsonl, run_cli, scalars

pytestmark = pytest.mark.slow

FSDP2 = ACCELERATE_CONFIGS / "fsdp2.yaml"
COMMON = WORLD_ARGS
SHARD_PROBE = (
    FORCED_RECIPE
    + '''

import json as _json
import os as _os
from pathlib import Path as _Path


class ShardProbe(ForcedLengthSummarization):
    """Records, on each process at its first training step, what each parameter of the model it trains holds."""

    name = "shard_probe"

    def training_loss(self, model, batch):
        path = _Path(_os.environ.get("RECORD_DIR", ".")) / f"rank{_os.environ.get('RANK', '0')}.json"
        if "RECORD_DIR" in _os.environ and not path.exists():
            held = {}
            for name, param in model.named_parameters():
                local = param.to_local() if hasattr(param, "to_local") else param
                held[name] = {"kind": type(param).__name__, "shape": list(param.shape), "local": list(local.shape)}
            path.write_text(_json.dumps(held))
        return super().training_loss(model, batch)
'''
)


def fsdp_run(args: list[str], cwd: Path, processes: int, env: dict | None = None, **settings):
    """accelerate_configs/fsdp2.yaml on ``processes`` processes in fp32 (the shipped file, those two values set, and
    ``settings``: mixed_precision, or fsdp_config keys)."""
    import yaml

    config = yaml.safe_load(FSDP2.read_text())
    config.update(num_processes=processes, mixed_precision=settings.pop("mixed_precision", "no"))
    config["fsdp_config"].update(settings)
    path = cwd / f"fsdp2_{processes}.yaml"
    path.write_text(yaml.safe_dump(config))
    return check(run_cli(args, cwd, launcher="forked", config_file=path, env=env))


def eval_alone(model_dir: Path, cwd: Path, name: str) -> Path:
    """mode=eval of ``model_dir`` with its path alone, in one plain process; the output_dir."""
    check(run_cli(["mode=eval", f"model.name_or_path={model_dir}", f"output_dir={name}"], cwd))
    return cwd / name


def scores(output_dir: Path) -> dict:
    metrics = read_json(output_dir / "metrics.json")
    return {key: value for key, value in metrics.items() if key.startswith("rouge") or key == "eval_samples"}


def predictions(output_dir: Path) -> dict:
    return {row["id"]: row["prediction"] for row in read_jsonl(output_dir / "predictions.jsonl")}


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fsdp2")
    world = build_world(root / "world")
    (root / "probe.py").write_text(SHARD_PROBE)
    record = root / "record"
    record.mkdir()
    base = [
        f"recipe={root / 'probe.py'}:ShardProbe",
        f"model.name_or_path={world['model']}",
        f"data.train_file={world['train']}",
        f"data.validation_file={world['validation']}",
        *COMMON,
    ]
    result = fsdp_run([*base, "output_dir=a"], root, 2, env={"RECORD_DIR": str(record)})
    return {"root": root, "out": root / "a", "log": result.stdout, "record": record, "base": base}


def test_each_process_holds_only_its_shard_of_every_parameter(run_a):
    assert "processes=2 distributed=FSDP2" in run_a["log"]
    engine = re.search(r"engine: FSDP2 full shard over 2 processes, (\d+) layer units \+ the root", run_a["log"])
    assert engine and int(engine.group(1)) == 2  # BART's encoder layer and decoder layer, then the root
    ranks = [read_json(run_a["record"] / f"rank{rank}.json") for rank in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() and ranks[0]
    for name, held in ranks[0].items():
        other = ranks[1][name]
        assert held["kind"] == other["kind"] == "DTensor", name
        rows = held["shape"][0]
        # dim 0 split in two: the first process takes the ceiling, the second the rest; the other dims whole
        assert held["local"][0] == math.ceil(rows / 2) and other["local"][0] == rows - math.ceil(rows / 2), name
        assert held["local"][1:] == other["local"][1:] == held["shape"][1:], name
    embedding = next(held for name, held in ranks[0].items() if "shared" in name or "embed_tokens" in name)
    assert embedding["local"][0] < embedding["shape"][0]


def test_generation_on_two_processes_scores_each_example_once_as_one_process_does(run_a):
    out, root = run_a["out"], run_a["root"]
    assert len(predictions(out)) == 11 and scores(out)["eval_samples"] == 11
    alone = eval_alone(out / "model", root, "export_alone")
    assert scores(alone) == scores(out) and predictions(alone) == predictions(out)
    from_checkpoint = eval_alone(out / "checkpoints" / "step_4", root, "checkpoint_alone")
    assert predictions(from_checkpoint) == predictions(out)
    sharded = fsdp_run(["mode=eval", f"model.name_or_path={out / 'model'}", "output_dir=eval2"], root, 2)
    assert "engine: FSDP2 full shard over 2 processes" in sharded.stdout
    assert scores(root / "eval2") == scores(out) and predictions(root / "eval2") == predictions(out)


def test_accumulation_and_clipping_follow_the_ddp_run(run_a):
    """Gradients reduce-scattered every micro-batch, averaged and clipped as DDP's all-reduced ones are."""
    root = run_a["root"]
    args = [*run_a["base"], "train.grad_accum=2", "train.max_grad_norm=0.05", "train.save_every=0"]
    fsdp_run([*args, "output_dir=accum_fsdp"], root, 2)
    ddp = ACCELERATE_CONFIGS / "cpu_2proc.yaml"
    check(run_cli([*args, "output_dir=accum_ddp"], root, launcher="forked", config_file=ddp))
    sharded, plain = scalars(root / "accum_fsdp", "train/loss"), scalars(root / "accum_ddp", "train/loss")
    assert sorted(sharded) == sorted(plain) == [1, 2, 3, 4]
    for step, loss in plain.items():
        assert sharded[step] == pytest.approx(loss, rel=1e-5), (sharded, plain)
    assert plain[4] != plain[1]


def test_the_export_is_full_weights_that_load_with_from_pretrained(run_a):
    from safetensors.torch import load_file
    from transformers import AutoModelForSeq2SeqLM

    initial = load_file(Path(run_a["base"][1].split("=", 1)[1]) / "model.safetensors")
    exported = load_file(run_a["out"] / "model" / "model.safetensors")
    assert exported.keys() == initial.keys()  # tied weights saved once, as a plain save_pretrained does
    for name, tensor in exported.items():
        assert tensor.shape == initial[name].shape, name
    model = AutoModelForSeq2SeqLM.from_pretrained(run_a["out"] / "model")
    assert type(model).__name__ == "BartForConditionalGeneration"
    assert read_json(run_a["out"] / "model" / "config.json")["architectures"] == ["BartForConditionalGeneration"]


def test_a_checkpoint_resumes_exactly_on_two_processes_and_reshards_onto_one(run_a):
    import torch
    from safetensors.torch import load_file

    root, out = run_a["root"], run_a["out"]
    state = out / "checkpoints" / "step_2" / "fsdp_state"
    assert sorted(p.name for p in state.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    checkpoint = out / "checkpoints" / "step_2"
    same = fsdp_run([*run_a["base"], f"train.resume_from={checkpoint}", "output_dir=b"], root, 2)
    assert f"resumed from {checkpoint} at step 2" in same.stdout
    loss_a, loss_b = scalars(out, "train/loss"), scalars(root / "b", "train/loss")
    assert sorted(loss_b) == [3, 4]
    for step in (3, 4):
        assert loss_b[step] == pytest.approx(loss_a[step], rel=1e-5), (loss_a, loss_b)
    exported_a, exported_b = (
        load_file(out / "model" / "model.safetensors"),
        load_file(root / "b" / "model" / "model.safetensors"),
    )
    for name, tensor in exported_a.items():
        assert torch.allclose(exported_b[name], tensor, atol=1e-6), name

    one = fsdp_run([*run_a["base"], f"train.resume_from={checkpoint}", "output_dir=c"], root, 1)
    assert "resuming a FSDP2 checkpoint written by 2 processes on 1 process at step 2" in one.stdout
    assert "engine: FSDP2 full shard over 1 process," in one.stdout
    assert sorted(scalars(root / "c", "train/loss")) == [3, 4]
    assert len(predictions(root / "c")) == 11


def test_lora_resumes_from_one_process_onto_two_and_both_exports_reproduce(tmp_path):
    # The bundled decoder-only model: a tiny Llama with tied embeddings and random weights, so the export also
    # writes the exact base weights the adapter was trained on (model/base) and the merged model.
    args = [
        "recipe=summarization",
        "model.bundled=decoder_only",
        "peft.method=lora",
        "peft.merge=true",
        "data.max_train_samples=32",
        "data.max_eval_samples=5",
        "train.batch_size=4",
        "train.save_every=2",
        "task.max_source_length=48",
        "generation.max_new_tokens=8",
    ]
    fsdp_run([*args, "train.max_steps=2", "output_dir=one"], tmp_path, 1)
    checkpoint = tmp_path / "one" / "checkpoints" / "step_2"
    two = fsdp_run([*args, "train.max_steps=4", f"train.resume_from={checkpoint}", "output_dir=two"], tmp_path, 2)
    assert "resuming a FSDP2 checkpoint written by 1 process on 2 processes at step 2" in two.stdout
    assert "engine: FSDP2 full shard over 2 processes" in two.stdout
    out = tmp_path / "two"
    assert (out / "model" / "adapter_config.json").is_file() and (out / "model_merged" / "model.safetensors").is_file()
    for export in ("model", "model_merged"):
        alone = eval_alone(out / export, tmp_path, f"{export}_alone")
        assert scores(alone) == scores(out) and predictions(alone) == predictions(out), export


PLUGIN = REPO / "examples" / "text_classification_plugin" / "accel_tasks_textcls" / "recipe.py"
RECIPES = {
    "summarization": ["recipe=summarization", "generation.max_new_tokens=8"],
    "translation": ["recipe=translation", "generation.max_new_tokens=8"],
    "extractive_qa": ["recipe=extractive_qa", "task.max_seq_length=128", "task.doc_stride=32"],
    "speech_ctc": ["recipe=speech_recognition"],
    "speech_whisper": ["recipe=speech_recognition", "task.language=en", "generation.max_new_tokens=8"],
    "plugin": [f"recipe={PLUGIN}:TextClassificationRecipe"],
}


# The other choices of the config, each on one of the recipes: grad-op shard with CPU offload; bf16 with activation
# checkpointing.
VARIANTS = {
    "summarization": (
        {"fsdp_reshard_after_forward": False, "fsdp_offload_params": True},
        "grad-op shard over 2 processes, .* offload on, activation checkpointing off, fp32",
    ),
    "translation": (
        {"mixed_precision": "bf16", "fsdp_activation_checkpointing": True},
        "full shard over 2 processes, .* offload off, activation checkpointing on, bf16 compute, fp32 reductions",
    ),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_built_in_recipe_and_the_example_plugin_train_under_fsdp2(tmp_path, recipe):
    args = [*RECIPES[recipe], "data.max_train_samples=16", "data.max_eval_samples=6", "train.batch_size=4"]
    if recipe == "speech_whisper":
        from accel_tasks.recipes.speech.tiny_whisper import build_tiny_whisper, save_tiny_whisper_assets

        texts = [
            row["text"] for row in read_jsonl(REPO / "accel_tasks" / "samples" / "speech_recognition" / "train.jsonl")
        ]
        tiny = build_tiny_whisper(texts, language="en", task="transcribe")
        save_tiny_whisper_assets(tiny, tmp_path / "tiny")
        tiny.model.save_pretrained(tmp_path / "tiny")
        args.append(f"model.name_or_path={tmp_path / 'tiny'}")
    settings, engine = VARIANTS.get(recipe, ({}, "full shard over 2 processes, [1-9]\\d* layer units"))
    run = fsdp_run([*args, "train.max_steps=2", "eval.batch_size=4", "output_dir=out"], tmp_path, 2, **settings)
    assert re.search(f"engine: FSDP2 {engine}", run.stdout), run.stdout
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["train_steps"] == 2 and metrics["eval_samples"] == 6
    assert len(read_jsonl(tmp_path / "out" / "predictions.jsonl")) == 6
    assert (tmp_path / "out" / "model" / "accel_tasks_manifest.json").is_file()
