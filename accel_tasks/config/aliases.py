"""The names users bring from HF Trainer and its example scripts, and the "did you mean" built on them.

Users of those tools type their names (``learning_rate``), and spelling alone would not find ours
(``train.lr`` is far from it), so an unknown key is first looked up here, then matched by spelling.
"""

from __future__ import annotations

import difflib

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
# Trainer flags that are launcher settings here, not run-config keys: the hint says where they went.
LAUNCHER_NAMES: dict[str, str] = {
    "fp16": (
        "mixed precision is a launcher setting: accelerate launch --mixed_precision fp16 (or bf16), "
        "or the accelerate config"
    ),
    "bf16": (
        "mixed precision is a launcher setting: accelerate launch --mixed_precision bf16, or the accelerate config"
    ),
    "do_predict": "predicting without training is mode=predict model.name_or_path=MODEL data.test_file=FILE",
    "do_eval": (
        "scoring without training is mode=eval model.name_or_path=MODEL; a training run always scores at its end"
    ),
    "local_rank": "processes are the launcher's: accelerate launch --num_processes N",
    "predict_with_generate": "generative recipes always evaluate on generated text; set generation.* to tune it",
}


def suggest(key: str, candidates: list[str]) -> str:
    """The tail of an "unknown config key" message: a launcher hint, a Trainer name's key, or a close spelling.

    ``candidates`` are every dotted key of the config; the tail starts with ``; `` so it can be appended.
    """
    leaf = key.rsplit(".", 1)[-1]
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
