"""PEFT adapters (LoRA and any other peft method) for every recipe, without recipe code: options,
default target modules per architecture family, and wrapping the loaded model.

The loop calls :func:`wrap_model` right after ``recipe.load_model()``; the task head that must stay
trainable comes from the recipe (``Recipe.peft_modules_to_save``). Exporting an adapter is
``export.py``'s job, loading one is ``modeling.py``'s. torch and peft are imported lazily.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from accel_tasks import log
from accel_tasks.config import PeftOptions, peft_enabled
from accel_tasks.errors import ConfigError
from accel_tasks.models.loading import has_weights

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import PreTrainedModel

# Attribute set on the PeftModel by wrap_model, read by the export.
EXPORT_ATTR = "_accel_tasks_peft_export"


@dataclass(frozen=True)
class TargetFamily:
    """Default LoRA targets of an architecture family: the linear layers of attention and feed-forward blocks."""

    label: str
    attention: tuple[str, ...]
    feedforward: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.attention + self.feedforward


T5_FAMILY = TargetFamily("T5", attention=("q", "k", "v", "o"), feedforward=("wi", "wi_0", "wi_1", "wo"))
BART_FAMILY = TargetFamily(
    "BART/mBART/Marian", attention=("q_proj", "k_proj", "v_proj", "out_proj"), feedforward=("fc1", "fc2")
)
WHISPER_FAMILY = TargetFamily(
    "Whisper", attention=("q_proj", "k_proj", "v_proj", "out_proj"), feedforward=("fc1", "fc2")
)
BERT_FAMILY = TargetFamily(
    "BERT-like encoder",
    attention=(
        "query",
        "key",
        "value",  # BERT, RoBERTa, ELECTRA, ALBERT
        "query_proj",
        "key_proj",
        "value_proj",  # DeBERTa-v2
        "q_lin",
        "k_lin",
        "v_lin",
        "out_lin",  # DistilBERT
        "attention.output.dense",
        "attention.dense",
    ),
    feedforward=("intermediate.dense", "output.dense", "lin1", "lin2", "ffn", "ffn_output"),
)
WAV2VEC2_FAMILY = TargetFamily(
    "wav2vec2-like",
    attention=("q_proj", "k_proj", "v_proj", "out_proj", "linear_q", "linear_k", "linear_v", "linear_out"),
    feedforward=("intermediate_dense", "output_dense"),
)

# Decoder-only LLMs: every projection of attention and MLP (QLoRA's finding: all linear layers match full
# fine-tuning, attention alone does not), where peft's own table names only q_proj and v_proj.
LLAMA_FAMILY = TargetFamily(
    "Llama-like decoder",
    attention=("q_proj", "k_proj", "v_proj", "o_proj"),
    feedforward=("gate_proj", "up_proj", "down_proj"),
)
PHI3_FAMILY = TargetFamily("Phi-3", attention=("qkv_proj", "o_proj"), feedforward=("gate_up_proj", "down_proj"))
PHI_FAMILY = TargetFamily("Phi", attention=("q_proj", "k_proj", "v_proj", "dense"), feedforward=("fc1", "fc2"))
GPT2_FAMILY = TargetFamily("GPT-2", attention=("c_attn", "attn.c_proj"), feedforward=("c_fc", "mlp.c_proj"))

_FAMILY_MEMBERS = {
    LLAMA_FAMILY: (
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "smollm3",
        "olmo",
        "olmo2",
        "granite",
        "cohere",
        "helium",
    ),
    PHI3_FAMILY: ("phi3",),
    PHI_FAMILY: ("phi",),
    GPT2_FAMILY: ("gpt2",),
    T5_FAMILY: ("t5", "mt5", "umt5", "longt5", "switch_transformers"),
    BART_FAMILY: (
        "bart",
        "mbart",
        "marian",
        "pegasus",
        "pegasus_x",
        "m2m_100",
        "nllb-moe",
        "blenderbot",
        "blenderbot-small",
        "plbart",
        "mvp",
        "led",
        "speech_to_text",
    ),
    WHISPER_FAMILY: ("whisper",),
    BERT_FAMILY: (
        "bert",
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "electra",
        "deberta",
        "deberta-v2",
        "distilbert",
        "albert",
        "ernie",
        "data2vec-text",
        "rembert",
        "megatron-bert",
        "roformer",
        "xmod",
        "roberta-prelayernorm",
        "bert-generation",
    ),
    WAV2VEC2_FAMILY: (
        "wav2vec2",
        "wav2vec2-conformer",
        "wav2vec2-bert",
        "hubert",
        "wavlm",
        "data2vec-audio",
        "unispeech",
        "unispeech-sat",
    ),
}
FAMILY_BY_MODEL_TYPE: dict[str, TargetFamily] = {t: fam for fam, types in _FAMILY_MEMBERS.items() for t in types}


@dataclass
class ExportPlan:
    """What the export needs to know that only the loading knew."""

    # Where the base weights can be reloaded from (hub id or absolute path); None: random init, save them.
    base_ref: Optional[str]
    merge: bool


# -- config checks (cheap: no torch, no peft) ------------------------------------------------------


def check_peft_config_file(peft_cfg: PeftOptions) -> None:
    """peft.config=FILE.json must be a readable peft config that agrees with peft.method (preflight)."""
    if peft_cfg.config is None:
        return
    data = read_peft_config_file(peft_cfg.config)
    declared = str(data["peft_type"]).upper()
    if peft_cfg.method is not None and peft_cfg.method.upper() != declared:
        raise ConfigError(
            f"peft.method={peft_cfg.method!r} contradicts peft_type {declared!r} in {peft_cfg.config}; "
            "drop peft.method (the file decides) or make them equal"
        )


def read_peft_config_file(path: str) -> dict:
    """The peft config dict of ``peft.config=FILE.json``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"peft.config {path!r} does not exist; pass a JSON file holding a peft config dict")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"peft.config {path!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("peft_type"), str):
        raise ConfigError(
            f'peft.config {path!r} must hold a JSON object with a "peft_type", e.g. {{"peft_type": "IA3"}}'
        )
    return data


# -- module names ------------------------------------------------------------------------------


def _matches(module_name: str, target: str) -> bool:
    """peft's rule for a list of target names: the whole name, or a dotted suffix of it."""
    return module_name == target or module_name.endswith("." + target)


def _is_linear(module: torch.nn.Module) -> bool:
    import torch

    if isinstance(module, torch.nn.Linear):
        return True
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def linear_module_names(model: PreTrainedModel) -> list[str]:
    """Names of the model's linear layers as usable targets: the part after the last layer index."""
    names: list[str] = []
    for name, module in model.named_modules():
        if not name or not _is_linear(module):
            continue
        parts = name.split(".")
        last_index = max((i for i, part in enumerate(parts) if part.isdigit()), default=-1)
        short = ".".join(parts[last_index + 1 :])
        if short not in names:
            names.append(short)
    return names


def _linear_hint(model: PreTrainedModel) -> str:
    names = linear_module_names(model)
    listed = ", ".join(names) if names else "(none)"
    return f"its linear layers are: {listed}"


def _usable_targets(model: PreTrainedModel, candidates: Iterable[str]) -> list[str]:
    """Candidates that match at least one module, all of them linear (a default must never hit a block)."""
    modules = [(name, module) for name, module in model.named_modules() if name]
    usable = []
    for target in candidates:
        hits = [module for name, module in modules if _matches(name, target)]
        if hits and all(_is_linear(m) for m in hits) and target not in usable:
            usable.append(target)
    return usable


def model_type_of(model: PreTrainedModel) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or ""


def default_target_modules(model: PreTrainedModel, method: str = "LORA") -> list[str]:
    """The family default for ``config.model_type``, else peft's own table; ConfigError when neither fits."""
    model_type = model_type_of(model)
    family = FAMILY_BY_MODEL_TYPE.get(model_type)
    candidates: tuple[str, ...] = family.all if family else ()
    source = f"the {family.label} default" if family else ""
    if not candidates and method == "LORA":
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        candidates = tuple(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type, ()))
        source = "peft's default"
    usable = _usable_targets(model, candidates)
    if not usable:
        what = (
            f"{source} targets ({', '.join(candidates)}) match"
            if candidates
            else "there are no default target modules for"
        )
        raise ConfigError(
            f"peft: {what} {type(model).__name__} (model_type {model_type!r}); {_linear_hint(model)}; "
            "set peft.target_modules=[name,...] to some of them"
        )
    return usable


def default_feedforward_modules(model: PreTrainedModel, targets: Iterable[str]) -> Optional[list[str]]:
    """IA3 needs to know which targets are feed-forward layers; None when the family is unknown."""
    family = FAMILY_BY_MODEL_TYPE.get(model_type_of(model))
    if family is None:
        return None
    return [t for t in targets if t in family.feedforward]


def check_target_modules(model: PreTrainedModel, targets: list[str]) -> list[str]:
    """Every user-given target must match a module; a typo would otherwise silently train less."""
    if targets == ["all-linear"]:
        return targets
    names = [name for name, _ in model.named_modules() if name]
    missing = [t for t in targets if not any(_matches(name, t) for name in names)]
    if missing:
        raise ConfigError(
            f"peft.target_modules {missing} match no module of {type(model).__name__}; {_linear_hint(model)}"
        )
    return targets


def check_modules_to_save(model: PreTrainedModel, names: list[str]) -> list[str]:
    modules = [name for name, _ in model.named_modules() if name]
    missing = [n for n in names if not any(_matches(m, n) for m in modules)]
    if missing:
        top = ", ".join(name for name, _ in model.named_children())
        raise ConfigError(
            f"peft.modules_to_save {missing} match no module of {type(model).__name__}; "
            f"its top-level modules are: {top}"
        )
    return names


# -- building the peft config -------------------------------------------------------------------


def build_peft_config(model: PreTrainedModel, peft_cfg: PeftOptions, task_heads: list[str]) -> PeftConfig:
    """A peft config object from ``peft.*`` (LoRA) or ``peft.config=FILE.json``, with per-model defaults filled in.

    ``task_heads``: the recipe's modules_to_save default (its task head), used when peft.modules_to_save is unset.
    """
    from peft import LoraConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    user_targets = list(peft_cfg.target_modules) if peft_cfg.target_modules else None
    user_heads = list(peft_cfg.modules_to_save) if peft_cfg.modules_to_save is not None else None
    if peft_cfg.config is None:
        targets = check_target_modules(model, user_targets) if user_targets else default_target_modules(model)
        heads = check_modules_to_save(model, user_heads if user_heads is not None else task_heads)
        return LoraConfig(
            r=peft_cfg.r,
            lora_alpha=peft_cfg.alpha,
            lora_dropout=peft_cfg.dropout,
            target_modules=targets[0] if targets == ["all-linear"] else targets,
            modules_to_save=heads or None,
        )
    data = dict(read_peft_config_file(peft_cfg.config))
    peft_type = str(data["peft_type"]).upper()
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type)
    if config_cls is None:
        known = ", ".join(sorted(str(k.value if hasattr(k, "value") else k) for k in PEFT_TYPE_TO_CONFIG_MAPPING))
        raise ConfigError(f"peft.config {peft_cfg.config!r}: unknown peft_type {data['peft_type']!r}; known: {known}")
    data["peft_type"] = peft_type
    fields = set(getattr(config_cls, "__dataclass_fields__", {}))
    if "target_modules" in fields and data.get("target_modules") is None:
        data["target_modules"] = (
            check_target_modules(model, user_targets) if user_targets else default_target_modules(model, peft_type)
        )
        if "feedforward_modules" in fields and data.get("feedforward_modules") is None:
            feedforward = default_feedforward_modules(model, data["target_modules"])
            if feedforward is not None:
                data["feedforward_modules"] = feedforward
    if "modules_to_save" in fields and data.get("modules_to_save") is None:
        heads = user_heads if user_heads is not None else task_heads
        data["modules_to_save"] = check_modules_to_save(model, heads) or None
    try:
        return config_cls(**data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"peft.config {peft_cfg.config!r} is not a valid {peft_type} config: {exc}") from None


# -- wrapping --------------------------------------------------------------------------------------


def is_peft_model(model: PreTrainedModel) -> bool:
    """True for a peft PeftModel; never imports peft (a model cannot be one unless peft was imported)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def wrap_model(
    model: PreTrainedModel,
    peft_cfg: PeftOptions,
    mode: str,
    task_heads: Callable[[PreTrainedModel], list[str]],
) -> PreTrainedModel | PeftModel:
    """Wrap the freshly loaded model in a PeftModel when ``peft.*`` asks for it (training runs only).

    Only adapter parameters (and ``modules_to_save`` heads, by default ``task_heads(model)``) stay trainable.
    Eval-only runs keep the model as loaded: an adapter directory is already a PeftModel, and a fresh adapter
    changes nothing. Returns the model to train; the caller's own reference is left as it was.
    """
    if is_peft_model(model):
        if mode == "train":
            raise ConfigError(
                "model.name_or_path is an exported adapter; training continues from a checkpoint "
                "(train.resume_from=...), or train a new adapter on its merged model (peft.merge=true export)"
            )
        log.info(f"peft: evaluating adapter {describe_adapter(model)}")
        return model
    if not peft_enabled(peft_cfg):
        return model
    if mode != "train":
        log.info("peft: eval-only run on a plain model; peft.* settings are not used")
        return model
    from peft import get_peft_model

    config = build_peft_config(model, peft_cfg, task_heads(model))
    base_ref = reloadable_base(model)
    # Gradient checkpointing needs no help here: transformers 5 checkpoints non-reentrantly, so frozen inputs keep
    # adapter grads.
    peft_model = get_peft_model(model, config)
    if peft_cfg.merge and not hasattr(peft_model.base_model, "merge_and_unload"):
        raise ConfigError(
            f"peft.merge=true but peft method {config.peft_type} cannot be merged into the base model; "
            "set peft.merge=false"
        )
    setattr(peft_model, EXPORT_ATTR, ExportPlan(base_ref=base_ref, merge=bool(peft_cfg.merge)))
    log.info(f"peft: {describe_adapter(peft_model)}")
    return peft_model


def describe_adapter(peft_model: PeftModel) -> str:
    config = peft_model.peft_config[peft_model.active_adapter]
    peft_type = getattr(config.peft_type, "value", config.peft_type)
    targets = config.target_modules
    targets = sorted(targets) if isinstance(targets, (set, list, tuple)) else targets
    parts = [f"{peft_type}", f"target_modules={targets}"]
    if peft_type == "LORA":
        parts.append(f"r={config.r} alpha={config.lora_alpha} dropout={config.lora_dropout}")
    heads = getattr(config, "modules_to_save", None)
    parts.append(f"modules_to_save={sorted(heads) if heads else []}")
    base = getattr(config, "base_model_name_or_path", None)
    if base:
        parts.append(f"base={base}")
    return " ".join(parts)


def reloadable_base(model: PreTrainedModel) -> Optional[str]:
    """Where the base weights can be loaded again: a hub id or a local directory with weights; else None."""
    name = str(getattr(model, "name_or_path", "") or "")
    if not name:
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()) if has_weights(str(path)) else None
    if path.exists() or name.startswith((".", "/", "~")):
        return None
    return name


# -- export -----------------------------------------------------------------------------------------


# -- loading an exported adapter ------------------------------------------------------------------
