"""The model card: ``model/README.md`` in the Hugging Face format, written after every training run's final eval.

Why here and not at export time: the card carries the final metrics, which exist only after the final eval
of the exported weights. The card is what the hub shows and indexes: YAML front matter (``model-index``
results, base model, data sets, licence, tags) built with huggingface_hub's own ``ModelCardData``, so the hub
parses what we write; then the hyperparameters, the final metrics, the launch line that reproduces the run
and the framework versions. Writing it rewrites the export's manifest so the card is listed like every file.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from accel_tasks.manifest import MANIFEST_FILE, has_manifest, write_manifest
from accel_tasks.models.loading import RUN_CONFIG_FILE

if TYPE_CHECKING:
    from accelerate import Accelerator
    from huggingface_hub import ModelCardData

    from accel_tasks.config import RunConfig
    from accel_tasks.recipe import Recipe

CARD_FILE = "README.md"
# metrics.json keys that describe the run (written by the loop and evaluation), not the model's scores: these,
# and every key starting with one of RUN_FACT_PREFIXES (train_steps, train_loss, best_step, best_rougeL, ...).
RUN_FACTS = ("eval_samples", "eval_runtime_s", "exported_step", "stopped_early_at_step")
RUN_FACT_PREFIXES = ("train_", "best_")
# Libraries whose versions decide what the run computed; the card lists each one installed.
FRAMEWORKS = (
    "accel_tasks",
    "torch",
    "transformers",
    "accelerate",
    "deepspeed",
    "datasets",
    "evaluate",
    "tokenizers",
    "peft",
    "huggingface_hub",
)
# No licence is known for what a run trains: "other" is a valid hub value, and the card says to set it.
DEFAULT_LICENSE = "other"
# The loaders of local data files, by suffix (what datasets.load_dataset calls them).
FILE_LOADERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class LaunchFacts:
    """What the launcher decided for the run (not in the run config): processes, precision, DeepSpeed stage."""

    num_processes: int = 1
    mixed_precision: str = "no"
    zero_stage: int = -1  # the DeepSpeed ZeRO stage (0-3); -1: no DeepSpeed (distributed.zero_stage)

    def launcher_args(self) -> list[str]:
        """``accelerate launch`` flags that recreate these facts."""
        args = ["--num_processes", str(self.num_processes), "--mixed_precision", self.mixed_precision]
        if self.zero_stage >= 0:
            args += ["--use_deepspeed", "--zero_stage", str(self.zero_stage)]
        return args


def is_run_fact(key: str) -> bool:
    """Whether a metrics.json key describes the run (steps, times, the best eval) rather than scoring the model."""
    return key in RUN_FACTS or key.startswith(RUN_FACT_PREFIXES)


def model_scores(metrics: dict[str, Any]) -> dict[str, float]:
    """The model's scores in metrics.json: finite numbers, without the run's facts (is_run_fact)."""
    scores = {}
    for key, value in metrics.items():
        if is_run_fact(key) or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value == value and abs(value) != float("inf"):
            scores[key] = float(value)
    return scores


def framework_versions() -> dict[str, str]:
    """Installed versions of FRAMEWORKS (missing ones left out)."""
    found = {}
    for name in FRAMEWORKS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def is_local(name_or_path: Optional[str]) -> bool:
    """Whether a model or data name is a local path (the hub knows nothing of it) rather than a hub id."""
    return bool(name_or_path) and (Path(name_or_path).exists() or name_or_path.startswith((".", "/", "~")))


def eval_dataset(config: dict[str, Any], recipe_name: str) -> dict[str, Optional[str]]:
    """``model-index`` dataset fields (type, name, config, split) of the split the final metrics scored."""
    data, split = config["data"], config["eval"]["split"]
    if data.get("name"):
        return {
            "type": data["name"],
            "name": data["name"],
            "config": data.get("config"),
            "split": data.get(f"{split}_split", split),
        }
    file = data.get(f"{split}_file")
    if file:
        return {
            "type": FILE_LOADERS.get(Path(file).suffix.lower(), "json"),
            "name": file,
            "config": None,
            "split": split,
        }
    return {"type": "json", "name": f"accel_tasks bundled {recipe_name} sample", "config": None, "split": split}


def card_metadata(
    config: dict[str, Any],
    recipe_cls: type[Recipe],
    metrics: dict[str, Any],
    library_name: str,
    pipeline_tag: Optional[str] = None,
) -> ModelCardData:
    """The front matter: task, data, metric values, base model, licence and tags, as huggingface_hub models them."""
    from huggingface_hub import EvalResult, ModelCardData

    task = recipe_cls.pipeline_tag or recipe_cls.name
    dataset = eval_dataset(config, recipe_cls.name)
    results = [
        EvalResult(
            task_type=task,
            dataset_type=dataset["type"],
            dataset_name=dataset["name"],
            dataset_config=dataset["config"],
            dataset_split=dataset["split"],
            metric_type=name,
            metric_name=name,
            metric_value=value,
        )
        for name, value in model_scores(metrics).items()
    ]
    base = config["model"].get("name_or_path")
    data_name = config["data"].get("name")
    return ModelCardData(
        model_name=model_name(config),
        base_model=base if base and not is_local(base) else None,
        datasets=[data_name] if data_name and not is_local(data_name) else None,
        license=DEFAULT_LICENSE,
        library_name=library_name,
        pipeline_tag=pipeline_tag or recipe_cls.pipeline_tag,
        tags=["accel_tasks", recipe_cls.name],
        eval_results=results or None,
    )


def model_name(config: dict[str, Any]) -> str:
    return Path(str(config.get("output_dir") or config["recipe"])).name or str(config["recipe"])


def hyperparameters(config: dict[str, Any], launch: LaunchFacts) -> dict[str, Any]:
    """What the table shows: every train.* setting that is set, the seed, the launcher's facts, LoRA settings."""
    train = config["train"]
    rows: dict[str, Any] = {f"train.{key}": value for key, value in train.items() if value is not None}
    rows["seed"] = config.get("seed")
    rows["processes"] = launch.num_processes
    rows["total batch size"] = train["batch_size"] * launch.num_processes * train["grad_accum"]
    rows["mixed precision"] = launch.mixed_precision
    rows["DeepSpeed ZeRO stage"] = launch.zero_stage if launch.zero_stage >= 0 else "none (no DeepSpeed)"
    peft = config.get("peft") or {}
    if peft.get("method") or peft.get("config"):
        rows.update({f"peft.{key}": value for key, value in peft.items() if value is not None})
    return rows


def launch_lines(config: dict[str, Any], launch: LaunchFacts, model_subdir: str = "model") -> tuple[str, str]:
    """(the training line that repeats the run, the eval-only line that scores this model again).

    Both run from the directory the run was started in: the saved config names its paths as they were typed.
    """
    output_dir = str(config.get("output_dir") or f"outputs/{config['recipe']}")
    saved = f"{output_dir}/model/{RUN_CONFIG_FILE}"
    train = [
        "accelerate",
        "launch",
        *launch.launcher_args(),
        "-m",
        "accel_tasks.run",
        "--config",
        saved,
        f"output_dir={output_dir}-rerun",
    ]
    if config["train"].get("resume_from"):
        train.append("train.resume_from=null")  # the repeat starts from scratch in its own output_dir
    score = [
        "accelerate",
        "launch",
        "-m",
        "accel_tasks.run",
        f"recipe={config['recipe']}",
        "mode=eval",
        f"model.name_or_path={output_dir}/{model_subdir}",
    ]
    return shlex.join(train), shlex.join(score)


def score_note(config: dict[str, Any], model_subdir: str = "model") -> str:
    """What the card says its eval-only line gives: the results above, exactly, where that holds.

    The line computes in the precision the run's final eval ran in (``eval.precision``, saved with the export and
    adopted by eval-only: engines/precision.py). Not exactly in two cases: a merged adapter under mixed precision
    (the run computed the base weights and the adapter apart, each rounded; the merged weights are rounded once
    after their sum) and FSDP2's bf16 without FSDP2 (a plain model does not cast each layer unit's inputs).
    """
    precision = (config.get("eval") or {}).get("precision") or "no"
    saved = f"`eval.precision: {precision}` in `{RUN_CONFIG_FILE}`"
    if model_subdir != "model" and precision != "no":
        return (
            f"Score this model again, in the precision of the run's final eval ({saved}). It may differ slightly "
            f"from the results above: the run computed the base weights and the adapter apart in {precision}, and "
            "these merged weights are rounded once after their sum; the adapter export `model/` computes them as the "
            "run did:"
        )
    if precision.endswith("-fsdp2"):
        return (
            f"Score this model again, in the precision of the run's final eval ({saved}). Launched under FSDP2 with "
            "the run's fsdp_config (`--config_file`, any number of processes) it reproduces the results above; "
            "without FSDP2 it may differ slightly (FSDP2 also casts each layer unit's inputs to bf16):"
        )
    return (
        f"Score this model again (reproduces the results above: it computes in the precision of the run's final "
        f"eval, {saved}, whatever `--mixed_precision` it is launched with; a DeepSpeed or FSDP2 launch computes only "
        "its own engine's precision, and says so where that is another):"
    )


def _table(rows: dict[str, Any], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    for key, value in rows.items():
        shown = (
            f"{value:.6g}"
            if isinstance(value, float)
            else json.dumps(value)
            if isinstance(value, (list, dict))
            else value
        )
        lines.append(f"| {key} | {str(shown).replace('|', '/')} |")
    return "\n".join(lines)


def _describe_model(config: dict[str, Any]) -> str:
    base = config["model"].get("name_or_path")
    if not base:
        return "built from the recipe's bundled config (random initialisation), trained from scratch"
    return f"`{base}`" + (" (a local directory)" if is_local(base) else "")


def _describe_data(config: dict[str, Any], split: str, recipe_name: str) -> str:
    data = config["data"]
    if data.get("name"):
        return (
            f"`{data['name']}`"
            + (f" (config `{data['config']}`)" if data.get("config") else "")
            + f", split `{data.get(f'{split}_split', split)}`"
        )
    if data.get(f"{split}_file"):
        return f"the file `{data[f'{split}_file']}`"
    return f"the bundled {recipe_name} sample ({split})"


def build_model_card(
    config: dict[str, Any],
    recipe_cls: type[Recipe],
    metrics: dict[str, Any],
    launch: LaunchFacts,
    library_name: str = "transformers",
    versions: Optional[dict[str, str]] = None,
    model_subdir: str = "model",
    pipeline_tag: Optional[str] = None,
) -> str:
    """The README.md text: front matter, then what the model is, its results and how to repeat it.

    ``pipeline_tag``: the hub pipeline of this export when it is not the recipe's (a decoder-only summarizer is a
    ``text-generation`` model)."""
    meta = card_metadata(config, recipe_cls, metrics, library_name, pipeline_tag)
    name = meta.model_name
    train_line, score_line = launch_lines(config, launch, model_subdir)
    scores = model_scores(metrics)
    facts = {key: value for key, value in metrics.items() if is_run_fact(key)}
    versions = framework_versions() if versions is None else versions
    sections = [
        f"# {name}",
        f"A `{recipe_cls.name}` model trained with accel_tasks (one Accelerate + DeepSpeed train/eval loop).",
        f"- Base model: {_describe_model(config)}\n"
        f"- Training data: {_describe_data(config, 'train', recipe_cls.name)}\n"
        f"- Evaluation data: {_describe_data(config, config['eval']['split'], recipe_cls.name)}"
        + (f", {metrics['eval_samples']} examples" if "eval_samples" in metrics else "")
        + "\n"
        f"- Licence: not known to accel_tasks (`license: {DEFAULT_LICENSE}`); "
        "set the base model's and the data's before publishing.",
        "## Evaluation results\n\nThe final evaluation of these weights (metrics.json):\n\n"
        + (_table(scores, ("metric", "value")) if scores else "No scores."),
    ]
    if facts:
        sections.append("Run facts:\n\n" + _table(facts, ("fact", "value")))
    sections += [
        "## Training hyperparameters\n\n" + _table(hyperparameters(config, launch), ("setting", "value")),
        "## Reproduce\n\nFrom the directory the run was started in, repeat the training run (the settings are this "
        f"directory's `{RUN_CONFIG_FILE}`):\n\n```bash\n{train_line}\n```\n\n"
        f"{score_note(config, model_subdir)}\n\n"
        f"```bash\n{score_line}\n```",
        "## Framework versions\n\n" + "\n".join(f"- {lib} {ver}" for lib, ver in versions.items()),
    ]
    return f"---\n{meta.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"


def write_card(model_dir: Path, text: str) -> Path:
    """Write README.md into an export and list it in the export's manifest (its other facts kept)."""
    path = model_dir / CARD_FILE
    path.write_text(text)
    if has_manifest(model_dir):
        facts = json.loads((model_dir / MANIFEST_FILE).read_text())
        write_manifest(model_dir, **{key: value for key, value in facts.items() if key not in ("files", "format")})
    return path


def write_model_card(
    accelerator: Accelerator, model_dir: Path, cfg: RunConfig, recipe: Recipe, metrics: dict[str, Any]
) -> None:
    """The card of the export ``model_dir`` (and of ``model_merged`` beside it, when there is one); main process only.

    Called by the loop after the final eval on every rank; the others return at once.
    """
    if not accelerator.is_main_process:
        return
    from omegaconf import OmegaConf

    from accel_tasks.engines.accelerator import zero_stage
    from accel_tasks.runs.export import merged_dir_for

    config = OmegaConf.to_container(cfg, resolve=True)
    launch = LaunchFacts(accelerator.num_processes, str(accelerator.mixed_precision), zero_stage(accelerator))
    versions = framework_versions()
    adapter = (model_dir / "adapter_config.json").is_file()
    tag = recipe.export_pipeline_tag()
    library = "peft" if adapter else "transformers"
    write_card(model_dir, build_model_card(config, type(recipe), metrics, launch, library, versions, pipeline_tag=tag))
    merged = merged_dir_for(model_dir)
    if has_manifest(merged):
        card = build_model_card(config, type(recipe), metrics, launch, "transformers", versions, merged.name, tag)
        write_card(merged, card)
