"""Checkpoints (save / resume / retention) and the final export, safe under ZeRO-3 and many processes.

A checkpoint is written to ``step_N.tmp`` and renamed when complete, so a crash never leaves a
directory that ``resume_from=latest`` would pick up half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from .config import ConfigError

LOOP_STATE_FILE = "loop_state.json"
CHECKPOINT_PREFIX = "step_"


@dataclass
class LoopState:
    """The loop's position: enough to continue at the exact next batch."""

    global_step: int = 0
    epoch: int = 0
    # Micro-batches of the current epoch already consumed.
    batches_in_epoch: int = 0


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / LOOP_STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):].split(".")[0]))


def resolve_resume(resume_from: Optional[str], checkpoints_root: Path) -> Optional[Path]:
    """``latest`` or a path -> the checkpoint directory; errors name what was looked for."""
    if resume_from is None:
        return None
    if resume_from == "latest":
        found = checkpoint_dirs(checkpoints_root)
        if not found:
            raise ConfigError(f"train.resume_from=latest but {checkpoints_root} holds no complete checkpoint")
        return found[-1]
    path = Path(resume_from)
    if not (path / LOOP_STATE_FILE).is_file():
        raise ConfigError(f"train.resume_from={resume_from!r} is not a checkpoint directory (no {LOOP_STATE_FILE})")
    return path


def save_checkpoint(accelerator: Any, root: Path, state: LoopState, model: Any, processor: Any, keep: Optional[int]) -> Path:
    """All ranks call this: DeepSpeed writes its shards from every rank."""
    final = root / f"{CHECKPOINT_PREFIX}{state.global_step}"
    tmp = root / f"{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    # Every rank writes its own files (RNG state, ZeRO shards) and save_state ends without a barrier:
    # renaming the directory before the last rank is done loses its files (seen with 2 processes).
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.config.save_pretrained(tmp)
        generation_config = getattr(unwrapped, "generation_config", None)
        if generation_config is not None:
            generation_config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        from .adapters import mark_peft_checkpoint

        mark_peft_checkpoint(unwrapped, tmp)
        write_json(tmp / LOOP_STATE_FILE, asdict(state))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _apply_retention(root, keep)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: Path) -> LoopState:
    accelerator.load_state(str(path))
    return LoopState(**json.loads((path / LOOP_STATE_FILE).read_text()))


def _apply_retention(root: Path, keep: Optional[int]) -> None:
    if keep is None:
        return
    for old in checkpoint_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def export_model(accelerator: Any, model: Any, processor: Any, out_dir: Path) -> None:
    """Full safetensors weights + config + processor, loadable with ``from_pretrained(out_dir)``.

    ``full_state_dict`` gathers ZeRO-3 partitions, so every rank must call this.
    A PEFT model is exported as its adapter (see ``adapters.export_adapter`` for the layout).
    """
    from .adapters import export_adapter, is_peft_model

    if is_peft_model(accelerator.unwrap_model(model)):
        export_adapter(accelerator, model, processor, out_dir)
        return
    state_dict = full_state_dict(accelerator, model)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        unwrapped.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)
        processor.save_pretrained(out_dir)
    accelerator.wait_for_everyone()


def full_state_dict(accelerator: Any, model: Any) -> dict:
    """The complete weights on the main process (a collective: every rank must call it).

    Under ZeRO-3 the partitions are gathered whatever ``stage3_gather_16bit_weights_on_model_save`` says
    (accelerate's ``get_state_dict`` refuses when it is off, after the whole training has run). The
    tensors have the engine's dtype: fp32, or bf16/fp16 under DeepSpeed mixed precision.
    """
    from .distributed import zero_stage

    if zero_stage(accelerator) == 3:
        return model._zero3_consolidated_16bit_state_dict()
    return accelerator.get_state_dict(model)


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


def load_model_from_deepspeed_checkpoint(source: Path, auto_model: Any, config_kwargs: dict) -> Any:
    """A transformers model with the full weights of a DeepSpeed checkpoint directory (config.json beside it).

    ``from_pretrained(None, config=..., state_dict=...)`` also loads correctly into a model that an
    eval-only ZeRO-3 run builds already partitioned (``zero.Init``).
    """
    import transformers

    config = transformers.AutoConfig.from_pretrained(source, **config_kwargs)
    try:
        model_class = auto_model._model_mapping[type(config)]
    except KeyError:
        raise ConfigError(f"{source}: {auto_model.__name__} has no model class for model_type {config.model_type!r}") from None
    model = model_class.from_pretrained(None, config=config, state_dict=load_deepspeed_checkpoint_weights(source))
    if (Path(source) / "generation_config.json").is_file() and getattr(model, "generation_config", None) is not None:
        model.generation_config = transformers.GenerationConfig.from_pretrained(source)
    return model


def write_json(path: Path, data: Any) -> None:
    """Atomic write: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
