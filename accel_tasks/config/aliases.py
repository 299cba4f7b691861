"""The names users bring from HF Trainer and its example scripts, and the "did you mean" built on them.

Users of those tools type their names (``learning_rate``), and spelling alone would not find ours
(``train.lr`` is far from it), so an unknown key is first looked up here, then matched by spelling.
They type Trainer's command-line form too (``--learning_rate 3e-5 --do_eval``): :func:`trainer_flag_hint`
maps those flags through the same tables, so a name has one translation whichever way it was written.
"""

from __future__ import annotations

import dataclasses
import difflib
import shlex
import typing
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Optional

from accel_tasks.config.groups import RunConfig

# HF Trainer / example-script names -> ours. A typo of a Trainer name is matched against this table too.
TRAINER_NAMES: dict[str, str] = {
    "learning_rate": "train.lr",
    "lr_scheduler_type": "train.lr_scheduler",
    "num_train_epochs": "train.epochs",
    "per_device_train_batch_size": "train.batch_size",
    "per_gpu_train_batch_size": "train.batch_size",
    "train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "eval.batch_size",
    "eval_batch_size": "eval.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "max_grad_norm": "train.max_grad_norm",
    "logging_steps": "train.log_every",
    "eval_steps": "train.eval_every",
    "save_steps": "train.save_every",
    "warmup_ratio": "train.warmup_ratio",
    "warmup_steps": "train.warmup_steps",
    "weight_decay": "train.weight_decay",
    "adam_beta1": "train.adam_beta1",
    "adam_beta2": "train.adam_beta2",
    "adam_epsilon": "train.adam_epsilon",
    "max_steps": "train.max_steps",
    "max_train_steps": "train.max_steps",
    "save_total_limit": "train.save_total_limit",
    "resume_from_checkpoint": "train.resume_from",
    "overwrite_output_dir": "train.overwrite_output_dir",
    "model_name_or_path": "model.name_or_path",
    "tokenizer_name": "model.tokenizer_name",
    "gradient_checkpointing": "model.gradient_checkpointing",
    "dataset_name": "data.name",
    "dataset_config_name": "data.config",
    "max_eval_samples": "data.max_eval_samples",
    "max_train_samples": "data.max_train_samples",
    "dataloader_num_workers": "data.dataloader_num_workers",
    "preprocessing_num_workers": "data.preprocessing_num_workers",
    "generation_num_beams": "generation.num_beams",
    "num_beams": "generation.num_beams",
    "generation_max_length": "generation.max_new_tokens",
    "max_new_tokens": "generation.max_new_tokens",
    "max_source_length": "task.max_source_length",
    "max_target_length": "task.max_target_length",
    "source_prefix": "task.source_prefix",
    "max_seq_length": "task.max_seq_length",
    "metric_for_best_model": "eval.best_metric",
    "greater_is_better": "eval.greater_is_better",
    "load_best_model_at_end": "train.export_best",
    "label_smoothing_factor": "train.label_smoothing",
    "doc_stride": "task.doc_stride",
    "report_to": "train.report_to",
    "eval_on_start": "train.eval_at_start",
    "group_by_length": "train.group_by_length",
    "torch_compile": "train.compile",
    "tf32": "train.tf32",
    "attn_implementation": "model.attn_implementation",
    "test_file": "data.test_file",
}
# Trainer's run switches: together they say what the run does, which is our mode (see mode_hint).
MODE_SWITCHES = ("do_train", "do_eval", "do_predict")
# Trainer flags that are launcher settings here, not run-config keys: the hint says where they went.
LAUNCHER_NAMES: dict[str, str] = {
    "fp16": (
        "mixed precision is a launcher setting: accelerate launch --mixed_precision fp16 (or bf16), "
        "or the accelerate config"
    ),
    "bf16": (
        "mixed precision is a launcher setting: accelerate launch --mixed_precision bf16, or the accelerate config"
    ),
    "local_rank": "processes are the launcher's: accelerate launch --num_processes N",
    "predict_with_generate": "generative recipes always evaluate on generated text; set generation.* to tune it",
}


# Trainer flags that take no value (``--fp16``; ``--fp16 true`` is accepted too), besides our bool settings.
VALUELESS_FLAGS = frozenset({*MODE_SWITCHES, "fp16", "bf16", "predict_with_generate"})
# The values HfArgumentParser reads as booleans; a switch's next argument is its value only if it is one of them.
BOOL_WORDS = {"true": True, "yes": True, "t": True, "y": True, "1": True, "on": True}
BOOL_WORDS.update({"false": False, "no": False, "f": False, "n": False, "0": False, "off": False})


def suggest(key: str, candidates: list[str], siblings: Optional[Mapping[str, Any]] = None) -> str:
    """The tail of an "unknown config key" message: a launcher hint, a Trainer name's key, or a close spelling.

    ``candidates`` are every dotted key of the config; the tail starts with ``; `` so it can be appended.
    ``siblings`` is the mapping the key was found in: Trainer's do_train / do_eval / do_predict are read
    together from it, since ``do_eval`` means ``mode=eval`` only without ``do_train``.
    """
    leaf = key.rsplit(".", 1)[-1]
    if leaf in MODE_SWITCHES:
        given = {name: siblings[name] for name in MODE_SWITCHES if name in (siblings or {})} or {leaf: True}
        typed = " ".join(f"{name}={_bool_text(value)}" for name, value in given.items())
        return f"; Trainer-style {typed}: {mode_hint({name: as_bool(value) for name, value in given.items()})}"
    if leaf in LAUNCHER_NAMES:
        return f"; {LAUNCHER_NAMES[leaf]}"
    trainer_name = (
        leaf
        if leaf in TRAINER_NAMES
        else next(iter(difflib.get_close_matches(leaf, list(TRAINER_NAMES), n=1, cutoff=0.85)), None)
    )
    if trainer_name is not None and TRAINER_NAMES[trainer_name] in candidates:
        ours = TRAINER_NAMES[trainer_name]
        return f"; did you mean {ours!r}? (Trainer's {trainer_name} is {ours} here)"
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:
        close = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf][:1]
    return f"; did you mean {close[0]!r}?" if close else "; run with --help to see every key"


def mode_setting(switches: Mapping[str, bool]) -> Optional[str]:
    """``mode=eval`` or ``mode=predict`` where Trainer's switches (name -> on/off) ask for a run without training;
    None where they train (our default) or ask for nothing."""
    if switches.get("do_train"):
        return None
    if switches.get("do_predict"):
        return "mode=predict"
    return "mode=eval" if switches.get("do_eval") else None


def mode_hint(switches: Mapping[str, bool]) -> str:
    """What Trainer's do_train / do_eval / do_predict, as given (name -> on/off), are here: our ``mode``."""
    setting = mode_setting(switches)
    if setting == "mode=predict":
        return f"here it is {setting} (with model.name_or_path=MODEL data.test_file=FILE)"
    if setting == "mode=eval":
        return f"here it is {setting} (with model.name_or_path=MODEL)"
    if not switches.get("do_train"):
        return "nothing to set: mode=train is the default, mode=eval or mode=predict score without training"
    hint = "mode=train is the default (a training run scores its validation split at the end): leave it out"
    if switches.get("do_predict"):
        hint += (
            ", and predict in a run of its own: mode=predict model.name_or_path=OUTPUT_DIR/model data.test_file=FILE"
        )
    return hint


def trainer_flag_hint(args: Sequence[str]) -> Optional[str]:
    """One line mapping HF Trainer-style flags among ``args`` (``--learning_rate 3e-5``, ``--learning_rate=3e-5``,
    ``--do_eval``, ``--output_dir X``) to our ``key=value`` form; None when no flag maps to anything here.

    Why: Trainer's example scripts are where many users come from, and "unknown option" alone leaves them to
    find each key in --help. The names go through TRAINER_NAMES, LAUNCHER_NAMES and the schema, as keys do.
    """
    flags = _read_flags(args)
    if not any(_our_key(name) or name in LAUNCHER_NAMES or name in MODE_SWITCHES for name, _, _ in flags):
        return None
    parts: list[str] = []
    settings: list[str] = []
    for name, value, typed in flags:
        if name in MODE_SWITCHES:
            continue
        key = _our_key(name)
        if key is not None:
            setting = f"{key}={_flag_value(key, value)}"
            parts.append(f"{typed}: here it is {setting}")
            settings.append(setting)
        elif name in LAUNCHER_NAMES:
            parts.append(f"{typed}: {LAUNCHER_NAMES[name]}")
        else:
            parts.append(f"{typed}: no such option or setting (run with recipe=NAME --help to see every key)")
    switches = [(name, typed) for name, _, typed in flags if name in MODE_SWITCHES]
    if switches:
        given = {name: as_bool(value) for name, value, _ in flags if name in MODE_SWITCHES}
        parts.append(f"{' '.join(typed for _, typed in switches)}: {mode_hint(given)}")
        settings.extend(setting for setting in [mode_setting(given)] if setting is not None)
    plural = "s" if len(flags) > 1 else ""
    tail = f"; in all: {' '.join(settings)}" if len(settings) > 1 else ""
    return f"Trainer-style flag{plural} " + "; ".join(parts) + tail


def as_bool(value: Any) -> bool:
    """A switch's value as Trainer reads it: no value is on; ``false``/``no``/``0`` are off."""
    if value is None:
        return True
    if isinstance(value, str):
        return BOOL_WORDS.get(value.strip().lower(), True)
    return bool(value)


def _bool_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _read_flags(args: Sequence[str]) -> list[tuple[str, Optional[str], str]]:
    """Each ``-``-led argument as (name, value or None, the text as typed), a value taken from ``=`` or from the
    next argument when that is not a flag nor a ``key=value`` (for a switch: only when it is a boolean word)."""
    flags = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.startswith("-"):
            continue
        name, sep, value = arg.lstrip("-").partition("=")
        if sep:
            flags.append((name, value, arg))
            continue
        nxt = args[index] if index < len(args) else None
        if nxt is not None and _is_flag_value(name, nxt):
            flags.append((name, nxt, f"{arg} {shlex.quote(nxt)}"))
            index += 1
        else:
            flags.append((name, None, arg))
    return flags


def _is_flag_value(name: str, candidate: str) -> bool:
    if name in VALUELESS_FLAGS or _key_type(_our_key(name)) is bool:
        return candidate.strip().lower() in BOOL_WORDS
    if "=" in candidate:
        return False
    if candidate.startswith("-"):  # a negative number (--max_steps -1) is a value; --other is a flag
        try:
            float(candidate)
        except ValueError:
            return False
    return True


def _flag_value(key: str, value: Optional[str]) -> str:
    """The value of ``key=...`` for a flag: as given (quoted for the shell), ``true`` for a bare bool flag."""
    if _key_type(key) is bool:
        return "true" if as_bool(value) else "false"
    return "VALUE" if value is None else shlex.quote(value)


def _our_key(name: str) -> Optional[str]:
    """Our dotted key for a flag's name: a Trainer name through TRAINER_NAMES, or one of our own keys."""
    if name in TRAINER_NAMES:
        return TRAINER_NAMES[name]
    if name in _schema_types() or (name.startswith("task.") and len(name) > len("task.")):
        return name
    return None


def _key_type(key: Optional[str]) -> Any:
    """The type of one of our keys (Optional[X] is X), None for a recipe's task.* keys and unknown names."""
    hint = _schema_types().get(key or "")
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


@lru_cache(maxsize=1)
def _schema_types() -> dict[str, Any]:
    """Every dotted key of RunConfig (task.* aside: they are the recipe's) and its type hint."""
    types: dict[str, Any] = {}
    hints = typing.get_type_hints(RunConfig)
    for field in dataclasses.fields(RunConfig):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            group_hints = typing.get_type_hints(hint)
            types.update({f"{field.name}.{sub.name}": group_hints[sub.name] for sub in dataclasses.fields(hint)})
        elif field.name != "task":
            types[field.name] = hint
    return types
