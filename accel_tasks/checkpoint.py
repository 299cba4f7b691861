"""Checkpoints (save / resume / retention), safe under ZeRO-3 and many processes.

A checkpoint is written to ``step_N.tmp`` and renamed when complete, so a crash never leaves a
directory that ``resume_from=latest`` would pick up half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .adapters import is_peft_model
from .errors import ConfigError
from .files import write_json
from .modeling import PEFT_CHECKPOINT_MARKER

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase, ProcessorMixin

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


def save_checkpoint(accelerator: Accelerator, root: Path, state: LoopState, model: torch.nn.Module, processor: PreTrainedTokenizerBase | ProcessorMixin, keep: Optional[int]) -> Path:
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
        mark_peft_checkpoint(unwrapped, tmp)
        write_json(tmp / LOOP_STATE_FILE, asdict(state))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _apply_retention(root, keep)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path) -> LoopState:
    accelerator.load_state(str(path))
    return LoopState(**json.loads((path / LOOP_STATE_FILE).read_text()))


def _apply_retention(root: Path, keep: Optional[int]) -> None:
    if keep is None:
        return
    for old in checkpoint_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def mark_peft_checkpoint(model: torch.nn.Module, checkpoint_dir: Path) -> None:
    """Label a training checkpoint of an adapter run, so that no one loads its adapter-wrapped weights as a plain model."""
    if is_peft_model(model):
        config = model.peft_config[model.active_adapter]
        data = {"peft_type": str(getattr(config.peft_type, "value", config.peft_type)), "resume_with": "train.resume_from"}
        (Path(checkpoint_dir) / PEFT_CHECKPOINT_MARKER).write_text(json.dumps(data, indent=2) + "\n")
