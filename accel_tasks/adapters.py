"""PEFT adapters (LoRA and any other peft method) for every recipe, without recipe code.

The loop calls :func:`wrap_model` right after ``recipe.load_model()``; the export calls
:func:`export_adapter`; model loading calls :func:`load_adapter_model` for an adapter directory.

Export layout (``output_dir``):

``model/``         the adapter: ``adapter_config.json`` + ``adapter_model.safetensors`` + processor files,
                   loadable with ``PeftModel.from_pretrained(base, output_dir/model)``.
``model/base/``    only when the base model had no weights to reload (built from a bundled config with
                   random init): the exact base weights the adapter was trained on. ``adapter_config.json``
                   then names this directory as ``base_model_name_or_path``.
``model_merged/``  with ``peft.merge=true``: the adapter merged into the base, a plain full model
                   loadable with the Auto class.

``mode=eval model.name_or_path=`` accepts both ``model/`` (base + adapter) and ``model_merged/``.

This module imports torch and peft lazily: the config checks run before anything heavy.
"""

from __future__ import annotations

import copy
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from .config import ConfigError

ADAPTER_CONFIG = "adapter_config.json"
BASE_SUBDIR = "base"
MERGED_SUFFIX = "_merged"
# Files that say a directory holds a tokenizer / feature extractor / processor.
PROCESSOR_FILES = ("tokenizer_config.json", "tokenizer.json", "preprocessor_config.json", "processor_config.json")
# Key prefix of a transformers model inside a PeftModel's state dict.
PEFT_PREFIX = "base_model.model."
# Written into training checkpoints of adapter runs (their weights are adapter-wrapped, not a plain model).
PEFT_CHECKPOINT_MARKER = "peft_checkpoint.json"
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
WHISPER_FAMILY = TargetFamily("Whisper", attention=("q_proj", "k_proj", "v_proj", "out_proj"), feedforward=("fc1", "fc2"))
BERT_FAMILY = TargetFamily(
    "BERT-like encoder",
    attention=(
        "query", "key", "value",  # BERT, RoBERTa, ELECTRA, ALBERT
        "query_proj", "key_proj", "value_proj",  # DeBERTa-v2
        "q_lin", "k_lin", "v_lin", "out_lin",  # DistilBERT
        "attention.output.dense", "attention.dense",
    ),
    feedforward=("intermediate.dense", "output.dense", "lin1", "lin2", "ffn", "ffn_output"),
)
WAV2VEC2_FAMILY = TargetFamily(
    "wav2vec2-like",
    attention=("q_proj", "k_proj", "v_proj", "out_proj", "linear_q", "linear_k", "linear_v", "linear_out"),
    feedforward=("intermediate_dense", "output_dense"),
)

_FAMILY_MEMBERS = {
    T5_FAMILY: ("t5", "mt5", "umt5", "longt5", "switch_transformers"),
    BART_FAMILY: (
        "bart", "mbart", "marian", "pegasus", "pegasus_x", "m2m_100", "nllb-moe", "blenderbot",
        "blenderbot-small", "plbart", "mvp", "led", "speech_to_text",
    ),
    WHISPER_FAMILY: ("whisper",),
    BERT_FAMILY: (
        "bert", "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "electra", "deberta", "deberta-v2",
        "distilbert", "albert", "ernie", "data2vec-text", "rembert", "megatron-bert", "roformer", "xmod",
        "roberta-prelayernorm", "bert-generation",
    ),
    WAV2VEC2_FAMILY: (
        "wav2vec2", "wav2vec2-conformer", "wav2vec2-bert", "hubert", "wavlm", "data2vec-audio", "unispeech",
        "unispeech-sat",
    ),
}
FAMILY_BY_MODEL_TYPE: dict[str, TargetFamily] = {t: fam for fam, types in _FAMILY_MEMBERS.items() for t in types}

# Task heads that start untrained: fully trained and saved next to the adapter (class-name suffix -> head names).
HEADS_BY_MODEL_CLASS = {
    "ForQuestionAnswering": ("qa_outputs",),
    "ForCTC": ("lm_head",),
    "ForSequenceClassification": ("classifier", "score"),
    "ForTokenClassification": ("classifier", "score"),
    "ForAudioClassification": ("projector", "classifier"),
    "ForAudioFrameClassification": ("classifier",),
}


@dataclass
class ExportPlan:
    """What the export needs to know that only the loading knew."""

    # Where the base weights can be reloaded from (hub id or absolute path); None: random init, save them.
    base_ref: Optional[str]
    merge: bool


# -- config checks (cheap: no torch, no peft) ------------------------------------------------------


def peft_enabled(peft_cfg: Any) -> bool:
    return peft_cfg.method is not None or peft_cfg.config is not None


def validate_peft_options(peft_cfg: Any) -> None:
    """Reject impossible peft settings before anything heavy is loaded."""
    if peft_cfg.method is not None and peft_cfg.method != "lora" and peft_cfg.config is None:
        raise ConfigError(
            f"peft.method={peft_cfg.method!r} is not supported directly; use peft.method=lora, "
            "or pass any other peft method as peft.config=FILE.json (a peft config dict with peft_type)"
        )
    if peft_cfg.r < 1:
        raise ConfigError(f"peft.r must be at least 1, got {peft_cfg.r}")
    if peft_cfg.alpha <= 0:
        raise ConfigError(f"peft.alpha must be positive, got {peft_cfg.alpha}")
    if not 0.0 <= peft_cfg.dropout < 1.0:
        raise ConfigError(f"peft.dropout must be in [0, 1), got {peft_cfg.dropout}")
    for key in ("target_modules", "modules_to_save"):
        names = getattr(peft_cfg, key)
        if names is not None and any(not isinstance(n, str) or not n for n in names):
            raise ConfigError(f"peft.{key} must be a list of module names, got {list(names)!r}")
    if peft_cfg.merge and not peft_enabled(peft_cfg):
        raise ConfigError("peft.merge=true needs an adapter: set peft.method=lora or peft.config=FILE.json")
    if peft_cfg.config is not None:
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


def _is_linear(module: Any) -> bool:
    import torch

    if isinstance(module, torch.nn.Linear):
        return True
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def linear_module_names(model: Any) -> list[str]:
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


def _linear_hint(model: Any) -> str:
    names = linear_module_names(model)
    listed = ", ".join(names) if names else "(none)"
    return f"its linear layers are: {listed}"


def _usable_targets(model: Any, candidates: Iterable[str]) -> list[str]:
    """Candidates that match at least one module, all of them linear (a default must never hit a block)."""
    modules = [(name, module) for name, module in model.named_modules() if name]
    usable = []
    for target in candidates:
        hits = [module for name, module in modules if _matches(name, target)]
        if hits and all(_is_linear(m) for m in hits) and target not in usable:
            usable.append(target)
    return usable


def model_type_of(model: Any) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or ""


def default_target_modules(model: Any, method: str = "LORA") -> list[str]:
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
        what = f"{source} targets ({', '.join(candidates)}) match" if candidates else "there are no default target modules for"
        raise ConfigError(
            f"peft: {what} {type(model).__name__} (model_type {model_type!r}); {_linear_hint(model)}; "
            "set peft.target_modules=[name,...] to some of them"
        )
    return usable


def default_feedforward_modules(model: Any, targets: Iterable[str]) -> Optional[list[str]]:
    """IA3 needs to know which targets are feed-forward layers; None when the family is unknown."""
    family = FAMILY_BY_MODEL_TYPE.get(model_type_of(model))
    if family is None:
        return None
    return [t for t in targets if t in family.feedforward]


def check_target_modules(model: Any, targets: list[str]) -> list[str]:
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


def default_modules_to_save(model: Any, recipe: Any) -> list[str]:
    """Task heads that are trained in full: the recipe's ``peft_modules_to_save``, else by model class."""
    declared = getattr(recipe, "peft_modules_to_save", None)
    if declared is not None:
        return list(declared)
    class_name = type(model).__name__
    children = {name for name, _ in model.named_children()}
    for suffix, heads in HEADS_BY_MODEL_CLASS.items():
        if class_name.endswith(suffix):
            return [head for head in heads if head in children]
    return []


def check_modules_to_save(model: Any, names: list[str]) -> list[str]:
    modules = [name for name, _ in model.named_modules() if name]
    missing = [n for n in names if not any(_matches(m, n) for m in modules)]
    if missing:
        top = ", ".join(name for name, _ in model.named_children())
        raise ConfigError(
            f"peft.modules_to_save {missing} match no module of {type(model).__name__}; its top-level modules are: {top}"
        )
    return names


# -- building the peft config -------------------------------------------------------------------


def build_peft_config(model: Any, peft_cfg: Any, recipe: Any) -> Any:
    """A peft config object from ``peft.*`` (LoRA) or ``peft.config=FILE.json``, with per-model defaults filled in."""
    from peft import LoraConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    user_targets = list(peft_cfg.target_modules) if peft_cfg.target_modules else None
    user_heads = list(peft_cfg.modules_to_save) if peft_cfg.modules_to_save is not None else None
    if peft_cfg.config is None:
        targets = check_target_modules(model, user_targets) if user_targets else default_target_modules(model)
        heads = check_modules_to_save(model, user_heads if user_heads is not None else default_modules_to_save(model, recipe))
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
        data["target_modules"] = check_target_modules(model, user_targets) if user_targets else default_target_modules(model, peft_type)
        if "feedforward_modules" in fields and data.get("feedforward_modules") is None:
            feedforward = default_feedforward_modules(model, data["target_modules"])
            if feedforward is not None:
                data["feedforward_modules"] = feedforward
    if "modules_to_save" in fields and data.get("modules_to_save") is None:
        heads = user_heads if user_heads is not None else default_modules_to_save(model, recipe)
        data["modules_to_save"] = check_modules_to_save(model, heads) or None
    try:
        return config_cls(**data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"peft.config {peft_cfg.config!r} is not a valid {peft_type} config: {exc}") from None


# -- wrapping --------------------------------------------------------------------------------------


def is_peft_model(model: Any) -> bool:
    """True for a peft PeftModel; never imports peft (a model cannot be one unless peft was imported)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def wrap_model(model: Any, peft_cfg: Any, recipe: Any, log: Optional[Callable[[str], None]] = None) -> Any:
    """Wrap the freshly loaded model in a PeftModel when ``peft.*`` asks for it (training runs only).

    Only adapter parameters (and ``modules_to_save`` heads) stay trainable. Eval-only runs keep the
    model as loaded: an adapter directory is already a PeftModel, and a fresh adapter changes nothing.
    """
    log = log or (lambda message: None)
    mode = getattr(recipe.cfg, "mode", "train")
    if is_peft_model(model):
        if mode == "train":
            raise ConfigError(
                "model.name_or_path is an exported adapter; training continues from a checkpoint "
                "(train.resume_from=...), or train a new adapter on its merged model (peft.merge=true export)"
            )
        log(f"peft: evaluating adapter {describe_adapter(model)}")
        return model
    if not peft_enabled(peft_cfg):
        return model
    if mode != "train":
        log("peft: eval-only run on a plain model; peft.* settings are not used")
        return model
    from peft import get_peft_model

    config = build_peft_config(model, peft_cfg, recipe)
    base_ref = reloadable_base(model)
    # Gradient checkpointing needs no help here: transformers 5 checkpoints non-reentrantly, so frozen inputs keep adapter grads.
    peft_model = get_peft_model(model, config)
    if peft_cfg.merge and not hasattr(peft_model.base_model, "merge_and_unload"):
        raise ConfigError(f"peft.merge=true but peft method {config.peft_type} cannot be merged into the base model; set peft.merge=false")
    setattr(peft_model, EXPORT_ATTR, ExportPlan(base_ref=base_ref, merge=bool(peft_cfg.merge)))
    if getattr(recipe, "model", None) is model:
        recipe.model = peft_model
    log(f"peft: {describe_adapter(peft_model)}")
    return peft_model


def describe_adapter(peft_model: Any) -> str:
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


def reloadable_base(model: Any) -> Optional[str]:
    """Where the base weights can be loaded again: a hub id or a local directory with weights; else None."""
    from .modeling import has_weights

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


def _zero3(accelerator: Any) -> bool:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


@contextmanager
def _zero3_init_disabled() -> Iterator[None]:
    """Build plain CPU models on the main process even under ZeRO-3.

    transformers wraps model construction in ``deepspeed.zero.Init`` while its global DeepSpeed config is
    set, and that partitions with collectives the other ranks never join (a hang). Accelerate's
    ``zero3_init_context_manager(enable=False)`` re-creates that global config, so unset it here.
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:
        yield
        return
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def _adapter_param_names(peft_model: Any) -> set[str]:
    """Parameters that belong to the adapter: trainable ones and anything keyed by the adapter name."""
    adapter = peft_model.active_adapter
    names = set()
    for name, param in peft_model.named_parameters(remove_duplicate=False):
        if param.requires_grad or f".{adapter}." in name or name.endswith(f".{adapter}"):
            names.add(name)
    return names


def gather_state_dict(accelerator: Any, peft_model: Any, names: Optional[set[str]] = None) -> dict:
    """The PeftModel's state dict on the main process, ZeRO-3 included (``names``: gather only those parameters).

    Under ZeRO-3 each parameter is gathered in turn (all ranks take part), so this works whatever
    ``stage3_gather_16bit_weights_on_model_save`` says and never holds more than one full parameter extra.
    """
    main = accelerator.is_main_process
    if not _zero3(accelerator):
        # Every rank holds every parameter: nothing to gather, and nothing is copied.
        return peft_model.state_dict() if main else {}
    import deepspeed

    state: dict = {}
    done: dict[int, Any] = {}
    for name, param in peft_model.named_parameters(remove_duplicate=False):
        if names is not None and name not in names:
            continue
        if id(param) in done:
            if main:
                state[name] = done[id(param)]
            continue
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            value = param.detach().to("cpu", copy=True) if main else None
        done[id(param)] = value
        if main:
            state[name] = value
    if main:
        persistent = set(peft_model.state_dict().keys())
        for name, buffer in peft_model.named_buffers(remove_duplicate=False):
            if name in persistent:
                state[name] = buffer.detach().to("cpu", copy=True)
    return state


def export_adapter(accelerator: Any, model: Any, processor: Any, out_dir: Path) -> None:
    """Write the adapter (and base weights / merged model when needed); every rank must call this."""
    unwrapped = accelerator.unwrap_model(model)
    plan = getattr(unwrapped, EXPORT_ATTR, None) or ExportPlan(base_ref=reloadable_base(unwrapped.get_base_model()), merge=False)
    need_full = plan.base_ref is None or plan.merge
    state = gather_state_dict(accelerator, unwrapped, None if need_full else _adapter_param_names(unwrapped))
    if accelerator.is_main_process:
        _write_exports(unwrapped, processor, out_dir, state, plan)
    accelerator.wait_for_everyone()


def _write_exports(unwrapped: Any, processor: Any, out_dir: Path, state: dict, plan: ExportPlan) -> None:
    import shutil

    from peft.utils import get_peft_model_state_dict

    adapter = unwrapped.active_adapter
    expected = set(get_peft_model_state_dict(unwrapped, state_dict=unwrapped.state_dict(), adapter_name=adapter))
    found = get_peft_model_state_dict(unwrapped, state_dict=state, adapter_name=adapter)
    empty = [k for k, v in found.items() if v.numel() == 0]
    if set(found) != expected or empty:
        raise RuntimeError(
            f"adapter export incomplete: missing {sorted(expected - set(found))[:5]}, empty {empty[:5]}; "
            "the adapter weights were not gathered"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    base_ref = plan.base_ref
    base_dir = out_dir / BASE_SUBDIR
    shutil.rmtree(base_dir, ignore_errors=True)
    if base_ref is None:
        base = _fresh_base(unwrapped)
        _load_exact(base, base_state_dict(state, base.state_dict().keys()))
        base.save_pretrained(base_dir, safe_serialization=True)
        processor.save_pretrained(base_dir)
        base_ref = str(base_dir.resolve())
        del base
    config = unwrapped.peft_config[adapter]
    config.base_model_name_or_path = base_ref
    unwrapped.save_pretrained(str(out_dir), state_dict=state, safe_serialization=True, selected_adapters=[adapter])
    processor.save_pretrained(out_dir)
    if plan.merge:
        merged_dir = merged_dir_for(out_dir)
        shutil.rmtree(merged_dir, ignore_errors=True)
        merged = merged_model(unwrapped, state)
        merged.save_pretrained(merged_dir, safe_serialization=True)
        processor.save_pretrained(merged_dir)


def merged_dir_for(out_dir: Path) -> Path:
    """``output_dir/model`` -> ``output_dir/model_merged``."""
    return out_dir.with_name(out_dir.name + MERGED_SUFFIX)


def _fresh_base(unwrapped: Any) -> Any:
    """A plain CPU copy of the base architecture; its random init must not disturb the run's RNG."""
    import torch

    base = unwrapped.get_base_model()
    with _zero3_init_disabled(), torch.random.fork_rng(devices=[]):
        fresh = type(base)._from_config(copy.deepcopy(base.config))
    generation_config = getattr(base, "generation_config", None)
    if generation_config is not None:
        fresh.generation_config = copy.deepcopy(generation_config)
    return fresh


def base_state_dict(peft_state: dict, base_keys: Iterable[str]) -> dict:
    """The base model's own weights out of a PeftModel state dict (adapter and head copies left out)."""
    wanted = set(base_keys)
    out = {}
    for key, value in peft_state.items():
        if not key.startswith(PEFT_PREFIX):
            continue
        plain = key[len(PEFT_PREFIX):].replace(".base_layer.", ".").replace(".original_module.", ".")
        if plain in wanted and plain not in out:
            out[plain] = value
    return out


def _load_exact(module: Any, state: dict) -> None:
    keys = module.state_dict().keys()
    missing = [k for k in keys if k not in state]
    if missing:
        raise RuntimeError(f"export: no gathered value for {missing[:5]} ({len(missing)} keys)")
    module.load_state_dict({k: state[k] for k in keys}, strict=True)


def merged_model(unwrapped: Any, state: dict) -> Any:
    """The adapter merged into a CPU copy of the base: a plain transformers model."""
    import torch
    from peft import get_peft_model

    fresh = _fresh_base(unwrapped)
    config = copy.deepcopy(unwrapped.peft_config[unwrapped.active_adapter])
    config.inference_mode = False
    with _zero3_init_disabled(), torch.random.fork_rng(devices=[]):
        copy_model = get_peft_model(fresh, config)
    _load_exact(copy_model, state)
    return copy_model.merge_and_unload()


# -- loading an exported adapter ------------------------------------------------------------------


def is_adapter_dir(source: str) -> bool:
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
        raise ConfigError(f"{adapter_dir}/{ADAPTER_CONFIG} names no base_model_name_or_path; add it (a hub id or a model directory)")
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"the base model {base!r} of adapter {adapter_dir!r} holds no config.json")
        return str(path)
    if base.startswith((".", "/", "~")) or base.count("/") > 1:
        raise ConfigError(
            f"the base model {base!r} of adapter {adapter_dir!r} does not exist; restore it, or set "
            f"base_model_name_or_path in {ADAPTER_CONFIG} to a hub id or an existing directory"
        )
    return base


def mark_peft_checkpoint(model: Any, checkpoint_dir: Path) -> None:
    """Label a training checkpoint of an adapter run, so that no one loads its adapter-wrapped weights as a plain model."""
    if is_peft_model(model):
        config = model.peft_config[model.active_adapter]
        data = {"peft_type": str(getattr(config.peft_type, "value", config.peft_type)), "resume_with": "train.resume_from"}
        (Path(checkpoint_dir) / PEFT_CHECKPOINT_MARKER).write_text(json.dumps(data, indent=2) + "\n")


def check_not_peft_checkpoint(source: str) -> None:
    """A training checkpoint of an adapter run holds PeftModel keys; loading it as a plain model would be silently wrong."""
    path = Path(source)
    weights = path / "model.safetensors"
    wrapped = (path / PEFT_CHECKPOINT_MARKER).is_file()
    if not wrapped and weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            wrapped = next(iter(handle.keys()), "").startswith(PEFT_PREFIX)
    if wrapped:
        raise ConfigError(
            f"{source!r} is a training checkpoint of a PEFT run (its weights are adapter-wrapped); evaluate the exported "
            "adapter output_dir/model (or output_dir/model_merged), or continue training with train.resume_from"
        )


def load_adapter_model(
    source: str, model_cfg: Any, auto_model_class: str, processor_class: str, config_overrides: Optional[dict] = None
) -> tuple[Any, Any]:
    """Base model (from the adapter's config) + the adapter, for evaluation; processor from the adapter dir."""
    from peft import PeftModel

    from .modeling import load_model_and_processor

    base_cfg = copy.deepcopy(model_cfg)
    base_cfg.name_or_path = adapter_base_source(source)
    if not model_cfg.tokenizer_name and any((Path(source) / f).is_file() for f in PROCESSOR_FILES):
        base_cfg.tokenizer_name = source
    base, processor = load_model_and_processor(base_cfg, auto_model_class, processor_class, config_overrides=config_overrides)
    model = PeftModel.from_pretrained(base, source, is_trainable=False)
    return model, processor
