"""DeepSpeed and multi-process correctness, run for real on CPU with 2 processes (no mocks).

One tiny BART (weights saved, no dropout) is trained for 6 optimizer steps with batch 2 x 2 processes x
4 accumulation on 40 examples, so every epoch ends on a partial accumulation window (10 micro-batches per
rank = 4 + 4 + 2) - the case where Accelerate and DeepSpeed have disagreed. Runs:

    base          no DeepSpeed (accelerate_configs/cpu_2proc.yaml)
    zero0         DeepSpeed ZeRO-0 (deepspeed_zero1.yaml with zero_stage 0)
    zero2_json    ZeRO-2 from a user DeepSpeed JSON full of "auto" (deepspeed=ds.json, cpu_2proc.yaml launcher)
    zero3         ZeRO-3 (deepspeed_zero3.yaml): train, checkpoint at 3 and 6, export, eval with generation
    zero3_offload ZeRO-3 + optimizer and parameters offloaded to CPU, resumed from zero3's step-3 checkpoint
    eval1 / eval2 eval-only of zero3's export: 1 process under ZeRO-2 (the plain model: ZeRO 0-2 have
                  nothing to shard without an optimizer) / 2 processes under ZeRO-3 (sharded weights)

The eval recipe forces each example's generation length (3 tokens for long inputs, 12 for short); the long
ones form the first batch (rank 0), so under 2 processes rank 0 stops generating while rank 1 goes on:
without synced_gpus ZeRO-3 breaks there (checked by hand: rank 0 aborts in gloo, rank 1 dies in an
all-gather of the embedding; on GPUs with NCCL it hangs). The embedding is larger than DeepSpeed's
persistence threshold, so ZeRO-3 really shards it. Losses and learning rates are read from the runs'
TensorBoard logs at full precision; they agree to float32 precision across all runs.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from ds_fixtures import LONG_FORCED_TOKENS, LONG_SOURCE_TOKENS, SHORT_FORCED_TOKENS, build_world
from helpers import ACCELERATE_CONFIGS, check, read_json, read_jsonl, run_cli, scalars

pytestmark = pytest.mark.slow

STEPS = 6
LOSS_RTOL = 1e-4
COMMON = [
    "train.batch_size=2",
    "train.grad_accum=4",
    f"train.max_steps={STEPS}",
    "train.log_every=1",
    "train.lr=3e-3",
    "train.warmup_steps=2",
    "train.save_every=3",
    "eval.batch_size=4",
    "task.max_target_length=16",
]
# ZeRO-2 through a user's DeepSpeed JSON: every training value "auto", an AdamW section included.
USER_DS_CONFIG = {
    "zero_optimization": {"stage": 2, "overlap_comm": False, "reduce_bucket_size": "auto"},
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "bf16": {"enabled": "auto"},
}


def launcher_config(source: str, target: Path, **changes) -> Path:
    """A shipped accelerate config, changed only where a 2-core CPU test needs it."""
    config = yaml.safe_load((ACCELERATE_CONFIGS / source).read_text())
    deepspeed = changes.pop("deepspeed_config", None)
    config.update(changes)
    if deepspeed:
        config["deepspeed_config"].update(deepspeed)
    target.write_text(yaml.safe_dump(config))
    return target


class Runs:
    """Each named run is started on first use and shared by every test that needs it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.world = build_world(root / "world")
        self.recipe = f"recipe={self.world['recipe']}:ForcedLengthSummarization"
        self.data = [
            f"model.name_or_path={self.world['model']}",
            f"data.train_file={self.world['train']}",
            f"data.validation_file={self.world['validation']}",
        ]
        self.results: dict[str, tuple[Path, str]] = {}
        cpu_ds = {"num_processes": 2, "mixed_precision": "no"}
        self.configs = {
            "base": launcher_config("cpu_2proc.yaml", root / "base.yaml"),
            "zero0": launcher_config(
                "deepspeed_zero1.yaml", root / "zero0.yaml", deepspeed_config={"zero_stage": 0}, **cpu_ds
            ),
            "zero3": launcher_config("deepspeed_zero3.yaml", root / "zero3.yaml", **cpu_ds),
            "zero3_offload": launcher_config("deepspeed_zero3_offload.yaml", root / "zero3_offload.yaml", **cpu_ds),
            "zero2_1proc": launcher_config(
                "deepspeed_zero2.yaml", root / "zero2_1proc.yaml", num_processes=1, mixed_precision="no"
            ),
        }
        ds_json = root / "ds_zero2.json"
        ds_json.write_text(json.dumps(USER_DS_CONFIG))
        self.plans = {
            "base": ("base", []),
            "zero0": ("zero0", []),
            "zero2_json": ("base", [f"deepspeed={ds_json}"]),
            "zero3": ("zero3", []),
        }

    def get(self, name: str) -> tuple[Path, str]:
        if name in self.results:
            return self.results[name]
        out = self.root / name
        if name == "zero3_offload":
            resume = self.get("zero3")[0] / "checkpoints" / "step_3"
            result = self._launch("zero3_offload", [*COMMON, f"train.resume_from={resume}"], out)
        elif name in ("eval1", "eval2"):
            model = self.get("zero3")[0] / "model"
            args = ["mode=eval", f"model.name_or_path={model}"]  # the export brings back data and settings
            result = self._launch("zero2_1proc" if name == "eval1" else "zero3", args, out, with_data=False)
        else:
            config, extra = self.plans[name]
            result = self._launch(config, [*COMMON, *extra], out)
        self.results[name] = (out, result.stdout)
        return self.results[name]

    def _launch(self, config: str, args: list[str], out: Path, with_data: bool = True):
        data = self.data if with_data else []
        return check(
            run_cli([self.recipe, *data, *args, f"output_dir={out}"], self.root, config_file=self.configs[config])
        )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("deepspeed"))


def predictions(output_dir: Path) -> list[dict]:
    return read_jsonl(output_dir / "predictions.jsonl")


@lru_cache(maxsize=None)
def _validation_ids(path: str) -> tuple[str, ...]:
    return tuple(row["id"] for row in read_jsonl(Path(path)))


# ------------------------------------------------------------------ training matrix


@pytest.mark.parametrize("name", ["zero0", "zero2_json", "zero3"])
def test_zero_stage_follows_the_plain_ddp_loss_and_lr(runs, name):
    base_dir, base_log = runs.get("base")
    run_dir, log = runs.get(name)
    assert "processes=2 distributed=MULTI_CPU" in base_log
    assert "processes=2 distributed=DEEPSPEED" in log
    base_loss, loss = scalars(base_dir, "train/loss"), scalars(run_dir, "train/loss")
    assert sorted(base_loss) == sorted(loss) == list(range(1, STEPS + 1))
    for step in base_loss:
        assert loss[step] == pytest.approx(base_loss[step], rel=LOSS_RTOL), (name, step, loss, base_loss)
    # Linear warmup over 2 steps to 3e-3, then linear decay to 0 at step 6 - the same with and without DeepSpeed.
    expected_lr = {1: 1.5e-3, 2: 3e-3, 3: 2.25e-3, 4: 1.5e-3, 5: 7.5e-4, 6: 0.0}
    assert scalars(run_dir, "train/lr") == pytest.approx(expected_lr, abs=1e-9)
    assert scalars(base_dir, "train/lr") == pytest.approx(expected_lr, abs=1e-9)
    assert loss[STEPS] < loss[1]


def test_zero3_offload_resumed_from_a_zero3_checkpoint_continues_the_same_trajectory(runs):
    zero3_dir, _ = runs.get("zero3")
    offload_dir, log = runs.get("zero3_offload")
    assert "resumed from" in log and "at step 3" in log
    expected = scalars(zero3_dir, "train/loss")
    resumed = scalars(offload_dir, "train/loss")
    assert sorted(resumed) == [4, 5, 6]
    for step in resumed:
        assert resumed[step] == pytest.approx(expected[step], rel=LOSS_RTOL), (step, resumed, expected)
    assert scalars(offload_dir, "train/lr") == pytest.approx({4: 1.5e-3, 5: 7.5e-4, 6: 0.0}, abs=1e-9)
    assert (offload_dir / "model" / "model.safetensors").is_file()
    assert len(predictions(offload_dir)) == 11


# ------------------------------------------------------------------ ZeRO-3 export and checkpoints


def test_zero3_export_holds_the_full_trained_weights(runs):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSeq2SeqLM

    from accel_tasks.models.loading import load_deepspeed_checkpoint_weights

    zero3_dir, _ = runs.get("zero3")
    initial = AutoModelForSeq2SeqLM.from_pretrained(runs.world["model"]).state_dict()
    exported = load_file(zero3_dir / "model" / "model.safetensors")
    model = AutoModelForSeq2SeqLM.from_pretrained(zero3_dir / "model")
    loaded = model.state_dict()
    # Every tensor at full shape (a ZeRO-3 partition would be empty), and trained (changed).
    for name, tensor in initial.items():
        assert loaded[name].shape == tensor.shape, name
    assert all(exported[name].numel() > 0 for name in exported)
    assert not torch.equal(loaded["model.encoder.layers.0.fc1.weight"], initial["model.encoder.layers.0.fc1.weight"])
    # The ZeRO-3 checkpoint of the last step, reassembled by zero_to_fp32, is the same model.
    reassembled = load_deepspeed_checkpoint_weights(zero3_dir / "checkpoints" / f"step_{STEPS}")
    for name, tensor in exported.items():
        assert torch.equal(reassembled[name], tensor), name


def test_a_zero3_checkpoint_directory_loads_as_a_model(runs):
    import torch
    from omegaconf import OmegaConf

    from accel_tasks.config import ModelConfig
    from accel_tasks.models.loading import load_model_and_processor

    zero3_dir, _ = runs.get("zero3")
    model_cfg = OmegaConf.structured(ModelConfig(name_or_path=str(zero3_dir / "checkpoints" / f"step_{STEPS}")))
    model, tokenizer = load_model_and_processor(model_cfg, "AutoModelForSeq2SeqLM", "AutoTokenizer")
    from safetensors.torch import load_file

    exported = load_file(zero3_dir / "model" / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in exported.items())
    assert tokenizer.pad_token == "<pad>"


# ------------------------------------------------------------------ generation and eval counting


def test_zero3_generation_with_different_lengths_per_rank_completes(runs):
    zero3_dir, log = runs.get("zero3")
    # Long documents (the first eval batch, rank 0) end after 3 tokens, short ones (rank 1) after 12: the
    # ranks generated different lengths in the same step, and the run still finished.
    long_ids = {r["id"] for r in read_jsonl(runs.world["validation"]) if len(r["text"].split()) > LONG_SOURCE_TOKENS}
    assert len(long_ids) == 4
    for record in predictions(zero3_dir):
        expected = SHORT_FORCED_TOKENS if record["id"] in long_ids else LONG_FORCED_TOKENS
        assert len(record["prediction"].split()) == expected, record
    assert "eval: rouge1=" in log


@pytest.mark.parametrize("name", ["zero3", "eval1", "eval2"])
def test_one_prediction_per_example_in_input_order(runs, name):
    run_dir, _ = runs.get(name)
    ids = [r["id"] for r in predictions(run_dir)]
    assert ids == list(_validation_ids(str(runs.world["validation"])))
    assert len(ids) == 11  # not a multiple of 2 processes x batch 4: the padded duplicates were dropped


def test_export_evaluates_like_the_engine_on_one_and_two_processes(runs):
    zero3_dir, _ = runs.get("zero3")
    eval1_dir, log1 = runs.get("eval1")
    eval2_dir, log2 = runs.get("eval2")
    assert "processes=1 distributed=DEEPSPEED" in log1 and "processes=2 distributed=DEEPSPEED" in log2
    engine, one, two = predictions(zero3_dir), predictions(eval1_dir), predictions(eval2_dir)
    assert one == two == engine
    metrics = [read_json(d / "metrics.json") for d in (zero3_dir, eval1_dir, eval2_dir)]
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "eval_samples"):
        assert metrics[0][key] == metrics[1][key] == metrics[2][key], key
    assert metrics[1]["eval_samples"] == 11
