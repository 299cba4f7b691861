"""Every model load path: a hub id, a saved model or export, a checkpoint (DeepSpeed shards included),
an exported PEFT adapter, or a bundled config built with random weights.

One set of rules says what a model reference may be (:func:`check_model_reference`), for
``model.name_or_path`` and for an adapter's base model alike.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

from accel_tasks import log
from accel_tasks.config import ModelConfig
from accel_tasks.engines.fsdp import is_sharded_checkpoint, load_sharded_weights
from accel_tasks.engines.performance import attention_kwargs
from accel_tasks.engines.zero3_init import zero3_loading
from accel_tasks.errors import ConfigError, first_line
from accel_tasks.manifest import has_manifest, manifest_problem

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

    Processor = Union[PreTrainedTokenizerBase, ProcessorMixin]


# The run's settings saved beside the weights of every export and checkpoint (the resolved config with what the
# run decided, Recipe.decide): how the model was made.
RUN_CONFIG_FILE = "accel_tasks_config.yaml"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

ADAPTER_CONFIG = "adapter_config.json"
BASE_SUBDIR = "base"
# Files that say a directory holds a tokenizer of its own.
TOKENIZER_FILES = ("vocab.json", "tokenizer.json", "tokenizer_config.json")
# Files that say a directory holds a tokenizer / feature extractor / processor.
PROCESSOR_FILES = ("tokenizer_config.json", "tokenizer.json", "preprocessor_config.json", "processor_config.json")
# Key prefix of a transformers model inside a PeftModel's state dict.
PEFT_PREFIX = "base_model.model."
# Written into training checkpoints of adapter runs (their weights are adapter-wrapped, not a plain model).
PEFT_CHECKPOINT_MARKER = "peft_checkpoint.json"


def is_adapter_dir(source: str) -> bool:
    """Whether ``source`` is an exported PEFT adapter (our ``model/`` of a LoRA run, or any peft save)."""
    return (Path(source) / ADAPTER_CONFIG).is_file()


def adapter_base_source(adapter_dir: str) -> str:
    """The adapter's base model: its bundled ``base/`` copy, else ``base_model_name_or_path``."""
    bundled = Path(adapter_dir) / BASE_SUBDIR
    if (bundled / "config.json").is_file():
        return str(bundled)
    try:
        data = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{adapter_dir}/{ADAPTER_CONFIG} is not valid JSON: {exc}") from None
    base = data.get("base_model_name_or_path")
    if not base:
        raise ConfigError(
            f"{adapter_dir}/{ADAPTER_CONFIG} names no base_model_name_or_path; add it (a hub id or a model directory)"
        )
    return check_model_reference(
        base,
        f"the base model {base!r} of adapter {adapter_dir!r}",
        f"restore it, or set base_model_name_or_path in {ADAPTER_CONFIG} to a hub id or an existing directory",
    )


def check_not_peft_checkpoint(source: str) -> None:
    """A training checkpoint of an adapter run holds PeftModel keys; loading it as a plain model would be silently
    wrong."""
    path = Path(source)
    weights = path / "model.safetensors"
    wrapped = (path / PEFT_CHECKPOINT_MARKER).is_file()
    if not wrapped and weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            wrapped = next(iter(handle.keys()), "").startswith(PEFT_PREFIX)
    if wrapped:
        raise ConfigError(
            f"{source!r} is a training checkpoint of a PEFT run (its weights are adapter-wrapped); "
            "evaluate the exported adapter output_dir/model (or output_dir/model_merged), "
            "or continue training with train.resume_from"
        )


def load_adapter_model(
    source: str,
    model_cfg: ModelConfig,
    auto_model_class: str,
    processor_class: str,
    config_overrides: Optional[dict] = None,
) -> tuple[PreTrainedModel, Processor]:
    """Base model (from the adapter's config) + the adapter, for evaluation; processor from the adapter dir."""
    from omegaconf import OmegaConf
    from peft import PeftModel

    base_cfg = copy.deepcopy(model_cfg)
    if OmegaConf.is_config(base_cfg):
        OmegaConf.set_readonly(base_cfg, False)  # a private copy of the run's read-only settings
    base_cfg.name_or_path = adapter_base_source(source)
    if not model_cfg.tokenizer_name and any((Path(source) / f).is_file() for f in PROCESSOR_FILES):
        base_cfg.tokenizer_name = source
    base, processor = load_model_and_processor(
        base_cfg, auto_model_class, processor_class, config_overrides=config_overrides
    )
    model = PeftModel.from_pretrained(base, source, is_trainable=False)
    return model, processor


def check_model_reference(name: str, what: str, fix: str) -> str:
    """A model reference as given: an existing directory with a config, or a hub id; else ConfigError.

    ``what`` names the reference in the message (``model.name_or_path 'x'``), ``fix`` says what to do.
    A name that looks like a path (``./``, ``/``, ``~``, two slashes) is never sent to the hub.
    """
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
            raise ConfigError(f"{what} is a path but holds no config.json; point it at a saved model")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"{what} does not exist; {fix}")
    return name


def check_tokenizer_reference(name: Optional[str]) -> None:
    """model.tokenizer_name as given: an existing directory or a hub id. A name that looks like a path and is not
    there was sent to the hub as an id, whose refusal ("Repo id must use alphanumeric chars") hid the cause."""
    if not name:
        return
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"model.tokenizer_name {name!r} is a file; pass the directory that holds the tokenizer")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(
            f"model.tokenizer_name {name!r} does not exist (relative paths start from {Path.cwd()}); pass an existing "
            "directory holding the tokenizer files, a hub id (org/name), or leave it unset to use the model's own"
        )


def resolve_model_source(model_cfg: ModelConfig, default_dir: Optional[Path]) -> str:
    """Where the model comes from; checked before anything heavy is loaded."""
    name = model_cfg.name_or_path
    if name is None:
        if default_dir is None:
            raise ConfigError("model.name_or_path is required for this recipe (a hub id or a local directory)")
        return str(default_dir)
    return check_model_reference(
        name, f"model.name_or_path {name!r}", "pass a hub id (org/name) or an existing directory"
    )


def config_source(source: str) -> str:
    """Where the model's config.json lives: an adapter's base model, else the source itself."""
    return adapter_base_source(source) if is_adapter_dir(source) else source


def load_model_config(model_cfg: ModelConfig, default_dir: Optional[Path]) -> PretrainedConfig:
    """The config of the model this run will load (for recipes that pick a model family before loading)."""
    from transformers import AutoConfig

    source = config_source(resolve_model_source(model_cfg, default_dir))
    with unreachable_as_config_error("model config", source):
        return AutoConfig.from_pretrained(
            source, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        )


def is_decoder_only(config: PretrainedConfig) -> bool:
    """A left-to-right language model: a causal-LM model type that is not an encoder-decoder and has no masked-LM
    class.

    Why the masked-LM table is consulted: BERT-like encoders also have a causal-LM head class in transformers, but
    they are not generative models (no left-to-right pretraining).
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", "")
    return (
        not getattr(config, "is_encoder_decoder", False)
        and model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def generative_model_class(config: PretrainedConfig, recipe_name: str) -> str:
    """The Auto class of a text-generating model: ``AutoModelForSeq2SeqLM`` for an encoder-decoder config,
    ``AutoModelForCausalLM`` for a decoder-only one (:func:`is_decoder_only`); ConfigError for any other model
    (one line, before loading)."""
    if getattr(config, "is_encoder_decoder", False):
        return "AutoModelForSeq2SeqLM"
    if is_decoder_only(config):
        return "AutoModelForCausalLM"
    model_type = getattr(config, "model_type", "")
    raise ConfigError(
        f"model_type {model_type!r} is neither an encoder-decoder (AutoModelForSeq2SeqLM) nor a decoder-only "
        f"(AutoModelForCausalLM) model, and recipe={recipe_name} generates text; pick a seq2seq model (T5, BART, "
        "Marian) or a causal LM (Llama, Qwen, Gemma, GPT-2)"
    )


@contextmanager
def unreachable_as_config_error(what: str, source: str) -> Iterator[None]:
    """transformers' OSError for a hub id it cannot fetch (offline, no such repo, gated) as one line with the fix."""
    try:
        yield
    except OSError as exc:
        local = Path(source).expanduser().exists()
        fix = (
            "check the directory's files"
            if local
            else "if the Hugging Face hub is unreachable from here, download it where it is reachable "
            f"(huggingface-cli download {source} --local-dir DIR) and pass model.name_or_path=DIR"
        )
        raise ConfigError(f"cannot load the {what} {source!r}: {first_line(exc)}; {fix}") from None


@contextmanager
def attention_as_config_error(requested: Optional[str]) -> Iterator[None]:
    """transformers' ValueError for an attention implementation the model (or this machine) cannot run, as one line."""
    try:
        yield
    except (ValueError, ImportError) as exc:
        if not requested:
            raise
        raise ConfigError(
            f"model.attn_implementation={requested!r} cannot be used with this model: {first_line(exc)}; "
            "unset it (sdpa where the model supports it, else eager) or choose eager"
        ) from None


def lacks_tokenizer(source: str) -> bool:
    """A local model folder without tokenizer files (a pretrained speech encoder); hub ids and adapters are not
    checked."""
    path = Path(source)
    return path.is_dir() and not is_adapter_dir(source) and not any((path / name).is_file() for name in TOKENIZER_FILES)


def has_weights(source: str) -> bool:
    path = Path(source)
    return path.is_dir() and any((path / f).is_file() for f in WEIGHT_FILES)


def saved_run_config(source: str) -> Optional[Path]:
    """The run config saved with a local model (export, checkpoint or adapter), or None."""
    path = Path(source).expanduser() / RUN_CONFIG_FILE
    return path if path.is_file() else None


def check_trained_weights(source: str) -> None:
    """An eval-only run must score trained weights: a local model must hold them, and be complete.

    Hub ids are not checked here (offline); a local directory needs weight files, adapter files or
    DeepSpeed shards, and when it carries one of our manifests it must still match it.
    """
    path = Path(source)
    if not path.is_dir():
        return
    problem = manifest_problem(path) if has_manifest(path) or (path / "loop_state.json").is_file() else None
    if problem is not None:
        raise ConfigError(
            f"model.name_or_path {source!r} is incomplete: {problem}; evaluate another checkpoint or the export"
        )
    if (
        is_adapter_dir(source)
        or has_weights(source)
        or deepspeed_checkpoint_tag_dir(path) is not None
        or is_sharded_checkpoint(path)
    ):
        return
    raise ConfigError(
        f"model.name_or_path {source!r} holds a config but no weights ({', '.join(WEIGHT_FILES[::2])}); "
        "an eval-only run would score random weights: point it at an export (output_dir/model) or a checkpoint"
    )


def load_model_and_processor(
    model_cfg: ModelConfig,
    auto_model_class: str,
    processor_class: str,
    default_dir: Optional[Path] = None,
    config_overrides: Optional[dict] = None,
) -> tuple[PreTrainedModel, Processor]:
    """The model and its processor from ``model_cfg`` (``default_dir``: the recipe's bundled model)."""
    import transformers

    source = resolve_model_source(model_cfg, default_dir)
    if is_adapter_dir(source):
        return load_adapter_model(source, model_cfg, auto_model_class, processor_class, config_overrides)
    check_not_peft_checkpoint(source)
    auto_model = getattr(transformers, auto_model_class)
    auto_processor = getattr(transformers, processor_class)
    common = {"revision": model_cfg.revision, "trust_remote_code": model_cfg.trust_remote_code}
    with unreachable_as_config_error("tokenizer/processor", model_cfg.tokenizer_name or source):
        processor = auto_processor.from_pretrained(model_cfg.tokenizer_name or source, **common)
    # SDPA where the model supports it (transformers' default when nothing is passed), or model.attn_implementation.
    attention = attention_kwargs(model_cfg.attn_implementation)
    # zero3_loading: under ZeRO-3, what the weights lack is initialised with the parameters its init reads gathered.
    with attention_as_config_error(model_cfg.attn_implementation), zero3_loading():
        if Path(source).is_dir() and not has_weights(source) and deepspeed_checkpoint_tag_dir(Path(source)) is not None:
            # A checkpoint saved under DeepSpeed holds ZeRO shards, not model files: reassemble the full weights.
            model = load_model_from_deepspeed_checkpoint(
                Path(source), auto_model, {**common, **(config_overrides or {})}, attention
            )
        elif Path(source).is_dir() and not has_weights(source) and is_sharded_checkpoint(Path(source)):
            model = load_model_from_fsdp_checkpoint(
                Path(source), auto_model, {**common, **(config_overrides or {})}, attention
            )
        elif Path(source).is_dir() and not has_weights(source):
            config = transformers.AutoConfig.from_pretrained(source, **common, **(config_overrides or {}))
            log.info(f"building {config.model_type} from {source}/config.json with random weights")
            model = auto_model.from_config(config, trust_remote_code=model_cfg.trust_remote_code, **attention)
            generation_file = Path(source) / "generation_config.json"
            if generation_file.is_file() and getattr(model, "generation_config", None) is not None:
                model.generation_config = transformers.GenerationConfig.from_pretrained(source)
        else:
            with unreachable_as_config_error("model", source):
                model = auto_model.from_pretrained(source, **common, **(config_overrides or {}), **attention)
    freeze_unsaved_parameters(model)
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, processor


def freeze_unsaved_parameters(model: PreTrainedModel) -> list[str]:
    """Freeze parameters that ``save_pretrained`` leaves out (``_keys_to_ignore_on_save``); returns their names.

    Why: ``from_pretrained`` rebuilds them instead of loading them (Marian's sinusoidal position table
    in transformers 5 comes back with requires_grad=True), so training them would make the export
    score differently from the run that wrote it.
    """
    ignored = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    frozen = []
    for name, param in model.named_parameters():
        if name in ignored and param.requires_grad:
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def count_parameters(model: PreTrainedModel) -> tuple[int, int]:
    """(trainable, total) parameter counts, ZeRO-3 partitioned parameters included."""
    trainable = total = 0
    for param in model.parameters():
        n = getattr(param, "ds_numel", None) or param.numel()
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


# Plain-data DeepSpeed classes pickled into ZeRO checkpoint files (seen in fp32 and bf16 ZeRO-2/3 files;
# DynamicLossScaler for fp16); allowed for torch.load(weights_only=True), nothing else is.
_DS_SAFE_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def deepspeed_checkpoint_tag_dir(path: Path) -> Optional[Path]:
    """The DeepSpeed tag directory (``pytorch_model/``) of a checkpoint written under DeepSpeed, else None."""
    path = Path(path)
    latest = path / "latest"
    tag = latest.read_text().strip() if latest.is_file() else "pytorch_model"
    tag_dir = path / tag
    # mp_rank_00_model_states.pt (ZeRO 0-2) or zero_pp_rank_R_mp_rank_00_model_states.pt per rank (ZeRO-3)
    return tag_dir if tag_dir.is_dir() and any(tag_dir.glob("*mp_rank_00_model_states.pt")) else None


def load_deepspeed_checkpoint_weights(path: Path) -> dict:
    """Full fp32 weights from a checkpoint saved under DeepSpeed (ZeRO 0-3, any number of processes).

    ZeRO 1-3: DeepSpeed's own ``zero_to_fp32`` reassembles the fp32 master partitions of every rank.
    ZeRO-0: the module weights are complete in ``mp_rank_00_model_states.pt``. Files are read with
    ``torch.load(weights_only=True)``, allowing only a few plain DeepSpeed bookkeeping classes.
    """
    import importlib

    import torch

    tag_dir = deepspeed_checkpoint_tag_dir(path)
    if tag_dir is None:
        raise ConfigError(f"{path} is not a DeepSpeed checkpoint (no pytorch_model/*model_states.pt)")
    allowed = []
    for dotted in _DS_SAFE_GLOBALS:
        module, _, name = dotted.rpartition(".")
        try:
            allowed.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    original_load = torch.load

    def safe_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    with torch.serialization.safe_globals(allowed):
        if not any(tag_dir.glob("*optim_states.pt")):
            states = torch.load(tag_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)
            return {k: (v.float() if v.is_floating_point() else v) for k, v in states["module"].items()}
        from deepspeed.utils import zero_to_fp32

        # zero_to_fp32 calls torch.load(..., weights_only=False); force the safe loader for this call only.
        torch.load = safe_load
        try:
            return zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(path), tag=tag_dir.name)
        finally:
            torch.load = original_load


def load_model_from_fsdp_checkpoint(
    source: Path, auto_model: type, config_kwargs: dict, load_kwargs: Optional[dict] = None
) -> PreTrainedModel:
    """A transformers model with the weights of an FSDP2 checkpoint directory (a distributed checkpoint written by
    any number of processes, read whole here), config.json and generation_config.json beside it."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(source, **config_kwargs)
    # The random init is overwritten by the checkpoint: it must not move the run's RNG.
    with torch.random.fork_rng(devices=[]):
        model = auto_model.from_config(config, **(load_kwargs or {}))
    load_sharded_weights(model, source)
    if (Path(source) / "generation_config.json").is_file() and getattr(model, "generation_config", None) is not None:
        model.generation_config = transformers.GenerationConfig.from_pretrained(source)
    return model


def load_model_from_deepspeed_checkpoint(
    source: Path, auto_model: type, config_kwargs: dict, load_kwargs: Optional[dict] = None
) -> PreTrainedModel:
    """A transformers model with the full weights of a DeepSpeed checkpoint directory (config.json beside it).

    ``from_pretrained(None, config=..., state_dict=...)`` also loads correctly into a model that an
    eval-only ZeRO-3 run builds already partitioned (``zero.Init``), with the caller inside
    :func:`~accel_tasks.engines.zero3_init.zero3_loading`: the state dict holds weights a plain export leaves out
    (Marian's sinusoidal positions), whose init would otherwise read their partitioned shapes.
    """
    import transformers

    config = transformers.AutoConfig.from_pretrained(source, **config_kwargs)
    try:
        model_class = auto_model._model_mapping[type(config)]
    except KeyError:
        raise ConfigError(
            f"{source}: {auto_model.__name__} has no model class for model_type {config.model_type!r}"
        ) from None
    model = model_class.from_pretrained(
        None, config=config, state_dict=load_deepspeed_checkpoint_weights(source), **(load_kwargs or {})
    )
    if (Path(source) / "generation_config.json").is_file() and getattr(model, "generation_config", None) is not None:
        model.generation_config = transformers.GenerationConfig.from_pretrained(source)
    return model
