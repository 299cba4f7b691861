"""Eval-only on an export reproduces the run's final eval whatever precision the run trained in.

Each engine's bf16 is another computation (engines/precision.py): DDP autocasts over fp32 weights, DeepSpeed holds
the weights themselves in bf16 with no autocast (and ZeRO-3's ``zero.Init`` swaps torch's linear for one that adds
the bias apart), FSDP2 casts bf16 copies of fp32 weights under autocast. Before, an eval-only run computed in
whatever its launcher said, so the card's eval line (no ``--mixed_precision``) scored a bf16 run's export in fp32
and got other figures. Now the run saves the precision its evals ran in (``eval.precision``) with the export, and
eval-only computes in it by default, with one notice line.

The model is a tiny Qwen2 (tests/llm_fixtures.py) trained a few steps: its biased q/k/v projections are where
ZeRO-3's linear differed. Its predictions are still noise, which is what makes them a sharp check: a change of
rounding changes some of them, so equal predictions and metrics say the computation was the run's. Measured with
these settings before the change, the full exports' eval-only (fp32) changed 1 of 12 predictions under DDP and 1 of
12 under ZeRO-3; the 4-step adapters happened to agree (a 300-step ZeRO-3 translation adapter: 1 of 40). Every
eval-only run is the card's line: one process, launched without ``--mixed_precision``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from llm_fixtures import save_tiny_causal_lm

from helpers import ACCELERATE_CONFIGS, check, read_json, read_jsonl, run_cli

SMALL = [
    "recipe=summarization",
    "data.max_train_samples=32",
    "data.max_eval_samples=12",
    "train.batch_size=8",
    "train.max_steps=4",
    "train.lr=1e-2",
    "task.max_source_length=48",
    "generation.max_new_tokens=10",
    "generation.num_beams=1",
    "train.report_to=[none]",
]
LORA = ["peft.method=lora", "peft.merge=true"]
NOTICE = re.compile(r"^\[accel_tasks\] eval\.precision=.*$", re.M)
ADOPTED = (
    "[accel_tasks] eval.precision={}: {}, not the launcher's --mixed_precision no (a training run saves the precision "
    "its evals ran in with its model; eval.precision=launcher uses the launcher's)"
)
DDP_BF16 = "bf16 autocast over the weights as saved, as plain and DDP runs compute"
DEEPSPEED_BF16 = "the weights cast to bf16, no autocast, as DeepSpeed's bf16 computes"


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory) -> Path:
    return save_tiny_causal_lm(tmp_path_factory.mktemp("qwen2") / "qwen2", "qwen2")


def scored(output_dir: Path) -> tuple[list[str], dict[str, float]]:
    """(the predictions in input order, the ROUGE scores) of a run's final eval."""
    predictions = [row["prediction"] for row in read_jsonl(output_dir / "predictions.jsonl")]
    metrics = read_json(output_dir / "metrics.json")
    return predictions, {key: value for key, value in metrics.items() if key.startswith("rouge")}


def precision_of(config_file: Path) -> str:
    """eval.precision in a run's config.yaml or an export's accel_tasks_config.yaml."""
    return yaml.safe_load(config_file.read_text())["eval"]["precision"]


def eval_line(work: Path, export: str, output_dir: str, *extra: str):
    """The eval-only line of ``work/export``'s model card, run from ``work`` in one process without
    --mixed_precision (a fork, as ``accelerate launch`` with the default config starts it)."""
    card = (work / export / "README.md").read_text()
    argv = shlex.split(re.findall(r"```bash\n(.*?)\n```", card, flags=re.S)[-1])
    assert argv[:4] == ["accelerate", "launch", "-m", "accel_tasks.run"], argv
    return check(run_cli([*argv[4:], f"output_dir={output_dir}", *extra], work))


def check_exports(work: Path, run: str, precision: str, description: str) -> None:
    """Every export of ``work/run`` saved ``precision``. The card's eval line on the full or adapter export computes
    in it, with one notice line, and gives the run's predictions and metrics, as its card says. The merged export's
    card says it may differ slightly (its weights are rounded once after the merge, where the run rounded base and
    adapter apart: measured 1-2 of 40 predictions on longer runs); it is not scored here, a merged export being a
    full one to eval-only."""
    assert precision_of(work / run / "config.yaml") == precision
    export = "model"
    assert precision_of(work / run / export / "accel_tasks_config.yaml") == precision
    again = f"{run}-again"
    result = eval_line(work, f"{run}/{export}", again)
    assert NOTICE.findall(result.stdout) == [ADOPTED.format(precision, description)]
    assert f"mixed_precision={precision.split('-')[0]} " in result.stdout
    assert precision_of(work / again / "config.yaml") == precision
    card = (work / run / export / "README.md").read_text()
    assert (
        "(reproduces the results above: it computes in the precision of the run's final eval, "
        f"`eval.precision: {precision}` in `accel_tasks_config.yaml`, whatever `--mixed_precision`"
    ) in card
    assert scored(work / again) == scored(work / run), run
    merged = work / run / "model_merged"
    if merged.is_dir():
        assert precision_of(merged / "accel_tasks_config.yaml") == precision
        card = (merged / "README.md").read_text()
        assert f"(`eval.precision: {precision}` in `accel_tasks_config.yaml`). It may differ slightly from" in card
        assert "reproduces" not in card


@pytest.mark.slow
def test_bf16_ddp_exports_full_and_lora_score_as_the_run_did_without_mixed_precision(tmp_path, qwen2):
    """2 processes, cpu_2proc.yaml --mixed_precision bf16: fp32 weights under autocast; eval.precision=launcher gives
    the launcher's fp32 back, without a notice."""
    for run, extra in (("ddp", []), ("ddp-lora", LORA)):
        args = [*SMALL, f"model.name_or_path={qwen2}", *extra, f"output_dir={run}"]
        config = ACCELERATE_CONFIGS / "cpu_2proc.yaml"
        check(run_cli(args, tmp_path, launcher="forked", config_file=config, num_processes=2, mixed_precision="bf16"))
        check_exports(tmp_path, run, "bf16", DDP_BF16)
    result = eval_line(tmp_path, "ddp/model", "ddp-fp32", "eval.precision=launcher")
    assert not NOTICE.findall(result.stdout) and "mixed_precision=no " in result.stdout
    assert precision_of(tmp_path / "ddp-fp32" / "config.yaml") == "no"


@pytest.mark.slow
def test_bf16_zero3_exports_full_and_lora_score_as_the_run_did_without_mixed_precision(tmp_path, qwen2):
    """2 processes, the shipped deepspeed_zero3.yaml (bf16): the weights in bf16, no autocast; the export gathers bf16
    weights, the LoRA adapter stays fp32 (ZeRO-3 casts only what zero.Init built) and its base is cast on load."""
    config = yaml.safe_load((ACCELERATE_CONFIGS / "deepspeed_zero3.yaml").read_text())
    assert config["mixed_precision"] == "bf16"
    config.update(num_processes=2)
    (tmp_path / "zero3.yaml").write_text(yaml.safe_dump(config))
    for run, extra in (("zero3", []), ("zero3-lora", LORA)):
        args = [*SMALL, f"model.name_or_path={qwen2}", *extra, f"output_dir={run}"]
        result = check(run_cli(args, tmp_path, launcher="accelerate", config_file=tmp_path / "zero3.yaml"))
        assert "processes=2 distributed=DEEPSPEED mixed_precision=bf16" in result.stdout
        check_exports(tmp_path, run, "bf16-weights", DEEPSPEED_BF16)


@pytest.mark.slow
def test_an_fsdp2_bf16_export_reproduces_under_fsdp2_and_says_it_may_differ_without(tmp_path, qwen2):
    """fsdp2.yaml (bf16), 2 processes: bf16 copies of fp32 weights under autocast, each layer unit's inputs cast to
    bf16. Under FSDP2 on one process eval-only is the run's computation: its figures, no notice. A plain model (the
    card's line) casts the weights and autocasts but casts no unit's inputs: the notice and the card say the figures
    may differ slightly, and how to get the run's."""
    config = yaml.safe_load((ACCELERATE_CONFIGS / "fsdp2.yaml").read_text())
    assert config["mixed_precision"] == "bf16"
    for processes in (1, 2):
        config.update(num_processes=processes)
        (tmp_path / f"fsdp2_{processes}.yaml").write_text(yaml.safe_dump(config))
    args = [*SMALL, f"model.name_or_path={qwen2}", "output_dir=fsdp2"]
    check(run_cli(args, tmp_path, launcher="forked", config_file=tmp_path / "fsdp2_2.yaml"))
    assert precision_of(tmp_path / "fsdp2" / "model" / "accel_tasks_config.yaml") == "bf16-fsdp2"
    card = (tmp_path / "fsdp2" / "model" / "README.md").read_text()
    assert "Launched under FSDP2 with the run's fsdp_config (`--config_file`, any number of processes) it " in card
    assert "reproduces the results above; without FSDP2 it may differ slightly" in card
    argv = ["mode=eval", f"model.name_or_path={tmp_path / 'fsdp2' / 'model'}", "output_dir=under-fsdp2"]
    result = check(run_cli(argv, tmp_path, launcher="forked", config_file=tmp_path / "fsdp2_1.yaml"))
    assert "processes=1 distributed=FSDP2 mixed_precision=bf16" in result.stdout and not NOTICE.findall(result.stdout)
    assert scored(tmp_path / "under-fsdp2") == scored(tmp_path / "fsdp2")
    result = eval_line(tmp_path, "fsdp2/model", "plain")
    assert NOTICE.findall(result.stdout) == [
        "[accel_tasks] eval.precision=bf16-fsdp2: bf16 copies of the weights under bf16 autocast, as FSDP2's bf16 "
        "computes, but without FSDP2 no layer's inputs are cast to bf16 as FSDP2 casts them, so the figures may "
        "differ slightly from the run's; under FSDP2 with the run's fsdp_config (any number of processes) they are "
        "the run's"
    ]


def test_each_engine_names_the_bf16_it_computes_and_what_differs_is_one_line(monkeypatch):
    """The three bf16s, what an engine computes of a precision asked of it, and the notice of each case."""
    from omegaconf import OmegaConf

    from accel_tasks.engines.precision import engine_precision, precision_notice, run_precision

    engines = {"plain/DDP": (False, False), "DeepSpeed": (True, False), "FSDP2": (False, True)}
    assert {name: engine_precision("bf16", *flags) for name, flags in engines.items()} == {
        "plain/DDP": "bf16",
        "DeepSpeed": "bf16-weights",
        "FSDP2": "bf16-fsdp2",
    }
    assert {name: engine_precision("no", *flags) for name, flags in engines.items()} == dict.fromkeys(engines, "no")
    assert engine_precision("fp16", True, False) == "fp16-weights"

    def cfg(mode: str, precision):
        return OmegaConf.create({"mode": mode, "eval": {"precision": precision}})

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    # A plain engine computes what was asked; the launcher said the same: no notice.
    assert run_precision(cfg("eval", "bf16"), "bf16", False, False) == "bf16"
    assert precision_notice(cfg("eval", "bf16"), "bf16", False, False) is None
    # DeepSpeed computes only its own bf16: what it computes is saved, and the notice says where to get the other.
    assert run_precision(cfg("eval", "bf16"), "bf16", True, False) == "bf16-weights"
    assert precision_notice(cfg("eval", "bf16"), "bf16", True, False) == (
        "eval.precision=bf16 (bf16 autocast over the weights as saved, as plain and DDP runs compute) is not how "
        "DeepSpeed computes: this run computes bf16-weights (the weights cast to bf16, no autocast, as DeepSpeed's "
        "bf16 computes), so its figures may differ from the run that saved bf16; an eval-only run without DeepSpeed "
        "or FSDP (one process, or DDP) computes bf16"
    )
    # eval.precision=launcher, or a model that saved none (a hub model): the launcher's, without a word.
    for value in ("launcher", None):
        assert run_precision(cfg("eval", value), "bf16", False, False) == "bf16"
        assert precision_notice(cfg("eval", value), "bf16", False, False) is None
    # A training run repeated from a saved config computes in its launcher's precision and saves that.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert run_precision(cfg("train", "bf16-weights"), "no", False, False) == "no"
    assert precision_notice(cfg("train", "bf16-weights"), "no", False, False) == (
        "eval.precision=bf16-weights is for eval-only runs: a training run's evals compute in its launcher's "
        "precision, here no (no mixed precision, the weights as saved), which its export saves"
    )
    assert precision_notice(cfg("train", "no"), "no", False, False) is None


def test_an_unknown_eval_precision_or_one_the_machine_cannot_compute_is_one_line():
    import torch
    from omegaconf import OmegaConf

    from accel_tasks.engines.precision import accelerator_settings
    from accel_tasks.errors import ConfigError
    from accel_tasks.preflight import resolve_config

    with pytest.raises(ConfigError) as error:
        resolve_config(["recipe=summarization", "eval.precision=bf32"], None)
    assert str(error.value) == (
        "eval.precision='bf32' is not one of no, bf16, fp16, fp8, bf16-weights, fp16-weights, bf16-fsdp2, launcher"
    )
    if torch.cuda.is_available():
        return  # the fp16 refusal below is for machines without a GPU
    with pytest.raises(ConfigError) as error:
        accelerator_settings(OmegaConf.create({"mode": "eval", "eval": {"precision": "fp16-weights"}}))
    assert str(error.value) == (
        "eval.precision=fp16-weights computes in fp16, which this machine cannot (no GPU); eval.precision=launcher "
        "scores in the launcher's precision (the figures may then differ from the run's)"
    )
