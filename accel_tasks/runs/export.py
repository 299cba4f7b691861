"""The final export: ``output_dir/model`` (and ``model_merged``), full weights gathered under ZeRO-3.

Export layout (``output_dir``):

``model/``         a plain run: safetensors weights + config + processor, loadable with ``from_pretrained``.
                   An adapter run: ``adapter_config.json`` + ``adapter_model.safetensors`` + processor files,
                   loadable with ``PeftModel.from_pretrained(base, output_dir/model)``.
``model/base/``    only when the base model had no weights to reload (built from a bundled config with
                   random init): the exact base weights the adapter was trained on. ``adapter_config.json``
                   then names this directory as ``base_model_name_or_path``.
``model_merged/``  with ``peft.merge=true``: the adapter merged into the base, a plain full model.

Every function here that gathers is a collective: every rank must call it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from accel_tasks.engines.accelerator import unwrap_model, zero3_init_disabled, zero_stage
from accel_tasks.engines.fsdp import full_state_dict as fsdp_full_state_dict
from accel_tasks.engines.fsdp import is_sharded, without_tied_copies
from accel_tasks.manifest import write_manifest
from accel_tasks.models.adapters import EXPORT_ATTR, ExportPlan, is_peft_model, reloadable_base
from accel_tasks.models.loading import BASE_SUBDIR, PEFT_PREFIX, RUN_CONFIG_FILE
from accel_tasks.runs.disk import removed_if_disk_full

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

StateDict = dict[str, "torch.Tensor"]

MERGED_SUFFIX = "_merged"


def export_model(
    accelerator: Accelerator,
    model: torch.nn.Module,
    processor: PreTrainedTokenizerBase | ProcessorMixin,
    out_dir: Path,
    run_config: str,
) -> None:
    """Full safetensors weights + config + processor, loadable with ``from_pretrained(out_dir)``.

    ``full_state_dict`` gathers ZeRO-3 partitions, so every rank must call this. A PEFT model is exported
    as its adapter (layout in the module docstring). Every exported directory also holds ``run_config`` as
    accel_tasks_config.yaml (the run's settings: the resolved config with what the run decided, e.g. capped
    lengths and languages, so eval-only needs nothing but the path) and, last, its manifest.
    """
    if is_peft_model(unwrap_model(accelerator, model)):
        export_adapter(accelerator, model, processor, out_dir, run_config)
        return
    state_dict = full_state_dict(accelerator, model)
    unwrapped = unwrap_model(accelerator, model)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        with removed_if_disk_full(out_dir, f"the export {out_dir.name}", lambda: "the checkpoints are kept"):
            unwrapped.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)
            processor.save_pretrained(out_dir)
            finish_export(out_dir, run_config)
    accelerator.wait_for_everyone()


def finish_export(out_dir: Path, run_config: str) -> None:
    """The run's settings beside the weights, then the manifest that says the directory is complete."""
    (out_dir / RUN_CONFIG_FILE).write_text(run_config)
    write_manifest(out_dir, kind="export")


def resave_settings(out_dir: Path, run_config: str) -> None:
    """Settings decided by the final eval, after the export was written (a threshold tuned on the eval split), into
    the export's (and model_merged's) accel_tasks_config.yaml, with a new manifest; main process only."""
    for directory in (out_dir, merged_dir_for(out_dir)):
        if (directory / RUN_CONFIG_FILE).is_file():
            finish_export(directory, run_config)


def full_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> StateDict:
    """The complete weights on the main process (a collective: every rank must call it).

    Under ZeRO-3 the partitions are gathered whatever ``stage3_gather_16bit_weights_on_model_save`` says
    (accelerate's ``get_state_dict`` refuses when it is off, after the whole training has run). The
    tensors have the engine's dtype: fp32, or bf16/fp16 under DeepSpeed mixed precision.
    """
    if zero_stage(accelerator) == 3:
        return model._zero3_consolidated_16bit_state_dict()
    if is_sharded(model):
        return without_tied_copies(model, fsdp_full_state_dict(model))
    return accelerator.get_state_dict(model)


def _adapter_param_names(peft_model: PeftModel) -> set[str]:
    """Parameters that belong to the adapter: trainable ones and anything keyed by the adapter name."""
    adapter = peft_model.active_adapter
    names = set()
    for name, param in peft_model.named_parameters(remove_duplicate=False):
        if param.requires_grad or f".{adapter}." in name or name.endswith(f".{adapter}"):
            names.add(name)
    return names


def gather_state_dict(accelerator: Accelerator, peft_model: PeftModel, names: Optional[set[str]] = None) -> StateDict:
    """The PeftModel's state dict on the main process, ZeRO-3 included (``names``: gather only those parameters).

    Under ZeRO-3 each parameter is gathered in turn (all ranks take part), so this works whatever
    ``stage3_gather_16bit_weights_on_model_save`` says and never holds more than one full parameter extra.
    """
    main = accelerator.is_main_process
    if is_sharded(peft_model):
        state = fsdp_full_state_dict(peft_model)  # every parameter gathered in turn onto the main process's CPU
        return {k: v for k, v in state.items() if names is None or k in names or k not in _param_names(peft_model)}
    if zero_stage(accelerator) != 3:
        # Every rank holds every parameter: nothing to gather, and nothing is copied.
        return peft_model.state_dict() if main else {}
    import deepspeed

    state: dict = {}
    done: dict[int, Optional[torch.Tensor]] = {}
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


def _param_names(model: torch.nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters(remove_duplicate=False)}


def export_adapter(
    accelerator: Accelerator,
    model: torch.nn.Module,
    processor: PreTrainedTokenizerBase | ProcessorMixin,
    out_dir: Path,
    run_config: str,
) -> None:
    """Write the adapter (and base weights / merged model when needed); every rank must call this."""
    unwrapped = unwrap_model(accelerator, model)
    plan = getattr(unwrapped, EXPORT_ATTR, None) or ExportPlan(
        base_ref=reloadable_base(unwrapped.get_base_model()), merge=False
    )
    need_full = plan.base_ref is None or plan.merge
    state = gather_state_dict(accelerator, unwrapped, None if need_full else _adapter_param_names(unwrapped))
    if accelerator.is_main_process:
        _write_exports(unwrapped, processor, out_dir, state, plan, run_config)
    accelerator.wait_for_everyone()


def _write_exports(
    unwrapped: PeftModel,
    processor: PreTrainedTokenizerBase | ProcessorMixin,
    out_dir: Path,
    state: StateDict,
    plan: ExportPlan,
    run_config: str,
) -> None:
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
    finish_export(out_dir, run_config)
    if plan.merge:
        merged_dir = merged_dir_for(out_dir)
        shutil.rmtree(merged_dir, ignore_errors=True)
        merged = merged_model(unwrapped, state)
        merged.save_pretrained(merged_dir, safe_serialization=True)
        processor.save_pretrained(merged_dir)
        finish_export(merged_dir, run_config)


def merged_dir_for(out_dir: Path) -> Path:
    """``output_dir/model`` -> ``output_dir/model_merged``."""
    return out_dir.with_name(out_dir.name + MERGED_SUFFIX)


def _fresh_base(unwrapped: PeftModel) -> PreTrainedModel:
    """A plain CPU copy of the base architecture; its random init must not disturb the run's RNG."""
    import torch

    base = unwrapped.get_base_model()
    with zero3_init_disabled(), torch.random.fork_rng(devices=[]):
        fresh = type(base)._from_config(copy.deepcopy(base.config))
    generation_config = getattr(base, "generation_config", None)
    if generation_config is not None:
        fresh.generation_config = copy.deepcopy(generation_config)
    return fresh


def base_state_dict(peft_state: StateDict, base_keys: Iterable[str]) -> StateDict:
    """The base model's own weights out of a PeftModel state dict (adapter and head copies left out)."""
    wanted = set(base_keys)
    out = {}
    for key, value in peft_state.items():
        if not key.startswith(PEFT_PREFIX):
            continue
        plain = key[len(PEFT_PREFIX) :].replace(".base_layer.", ".").replace(".original_module.", ".")
        if plain in wanted and plain not in out:
            out[plain] = value
    return out


def _load_exact(module: torch.nn.Module, state: StateDict) -> None:
    keys = module.state_dict().keys()
    missing = [k for k in keys if k not in state]
    if missing:
        raise RuntimeError(f"export: no gathered value for {missing[:5]} ({len(missing)} keys)")
    module.load_state_dict({k: state[k] for k in keys}, strict=True)


def merged_model(unwrapped: PeftModel, state: StateDict) -> PreTrainedModel:
    """The adapter merged into a CPU copy of the base: a plain transformers model."""
    import torch
    from peft import get_peft_model

    fresh = _fresh_base(unwrapped)
    config = copy.deepcopy(unwrapped.peft_config[unwrapped.active_adapter])
    config.inference_mode = False
    with zero3_init_disabled(), torch.random.fork_rng(devices=[]):
        copy_model = get_peft_model(fresh, config)
    _load_exact(copy_model, state)
    return copy_model.merge_and_unload()
