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
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.config.save_pretrained(tmp)
        generation_config = getattr(unwrapped, "generation_config", None)
        if generation_config is not None:
            generation_config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
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

    ``get_state_dict`` gathers ZeRO-3 partitions, so every rank must call this.
    """
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        unwrapped.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)
        processor.save_pretrained(out_dir)
    accelerator.wait_for_everyone()


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
