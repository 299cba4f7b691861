"""The schema: one dataclass per group of settings, each field with its default and its docstring.

The field docstrings are the ``--help`` lines (read by ``docstrings.field_docs``), so a field is
documented where it is declared. The few derived facts that every layer reads the same way
(which splits a run reads, whether it trains an adapter) live here too, next to the fields they read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

# The bundled tiny models a recipe may offer (model.bundled): its sample's model/ and model_decoder_only/.
BUNDLED_MODELS = ("encoder_decoder", "decoder_only")


@dataclass
class ModelConfig:
    """model.*: what is trained or evaluated."""

    name_or_path: Optional[str] = None
    """Hub id or local directory (a saved model, an export, a checkpoint or an adapter);
    None: the recipe's bundled model."""
    tokenizer_name: Optional[str] = None
    """Tokenizer / processor to load instead of the model's own."""
    bundled: str = "encoder_decoder"
    """Which bundled tiny model to build when model.name_or_path is unset: encoder_decoder (MarianMT) or
    decoder_only (a Llama with a chat template; summarization and translation)."""
    revision: str = "main"
    """Hub revision (branch, tag or commit) of model.name_or_path."""
    trust_remote_code: bool = False
    """Run modelling code shipped with a hub model; off unless you trust it."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    attn_implementation: Optional[str] = None
    """Attention kernel: None picks sdpa (torch's scaled_dot_product_attention) where the model supports it,
    else eager; or eager, sdpa, flash_attention_2, flex_attention."""


@dataclass
class MixSource:
    """One source of data.mix: a local file or a data set, its weight, and its columns renamed to the recipe's."""

    train_file: Optional[str] = None
    """A local file: json, jsonl, csv, tsv or parquet (or set name)."""
    name: Optional[str] = None
    """A hub dataset id or a local dataset directory for datasets.load_dataset (or set train_file)."""
    config: Optional[str] = None
    """The data set's configuration name."""
    split: str = "train"
    """The data set's split the mix draws from."""
    weight: float = 1.0
    """Relative weight: this source gives weight / (sum of the weights) of the drawn rows."""
    columns: dict[str, str] = field(default_factory=dict)
    """Its columns renamed before mixing, {its name: the name the recipe reads}, e.g. {article: document}."""


# data.mix_stopping values: datasets.interleave_datasets' stopping strategies.
MIX_STOPPING = ("first_exhausted", "all_exhausted")


@dataclass
class DataConfig:
    """data.*: where the examples come from."""

    name: Optional[str] = None
    """Hub dataset id (or a local dataset directory) for datasets.load_dataset."""
    config: Optional[str] = None
    """The dataset's configuration name (e.g. 3.0.0 for cnn_dailymail)."""
    train_split: str = "train"
    """The dataset split used for training."""
    validation_split: str = "validation"
    """The dataset split used as validation."""
    test_split: str = "test"
    """The dataset split used as test."""
    train_file: Optional[str] = None
    """Local training file: json, jsonl, csv, tsv or parquet."""
    validation_file: Optional[str] = None
    """Local validation file: json, jsonl, csv, tsv or parquet."""
    test_file: Optional[str] = None
    """Local test file: json, jsonl, csv, tsv or parquet."""
    field: Optional[str] = None
    """JSON files whose rows sit under one key (e.g. {"version": ..., "data": [rows]}): that key,
    as HF scripts' field="""
    max_train_samples: Optional[int] = None
    """Use only the first N training examples."""
    max_eval_samples: Optional[int] = None
    """Score only the first N evaluation examples."""
    preprocessing_num_workers: Optional[int] = None
    """Processes for datasets.map preprocessing; None: in process."""
    dataloader_num_workers: int = 0
    """DataLoader worker processes."""
    overwrite_cache: bool = False
    """Redo preprocessing instead of loading cached features."""
    streaming: bool = False
    """Stream the train split (datasets IterableDataset) instead of loading it: rows read, shuffled in a
    buffer and tokenized on the fly, each process its own share; needs train.max_steps. Eval splits stay
    map-style (streamed only to take data.max_eval_samples rows)."""
    shuffle_buffer: int = 1000
    """data.streaming: rows held in the seeded shuffle buffer (datasets' buffer_size; more mixes better,
    holds more rows); 0: the stream's own order."""
    # dataclasses.field: the name ``field`` is data.field's own inside this class.
    mix: list[MixSource] = dataclasses.field(default_factory=list)
    """The train split drawn from several sources by weight (datasets.interleave_datasets); a source is train_file:
    FILE or name: DATASET (with config, split), weight (relative; default 1) and columns ({its name: the recipe's}),
    e.g. [{train_file: a.jsonl, weight: 0.7}, {name: path/to/ds, weight: 0.3, columns: {article: document}}].
    Map-style or streamed; not with data.train_file; eval splits come from data.validation_file / data.name."""
    mix_stopping: str = "first_exhausted"
    """When a data.mix epoch ends: first_exhausted (a source runs out: no row twice) or all_exhausted (every source
    has given every row: the others repeat theirs)."""
    mix_seed: int = 42
    """Seed of data.mix's draws: the same seed, sources and weights give the same rows every run."""


@dataclass
class TrainConfig:
    """train.*: optimisation, schedule, logging and checkpoints."""

    lr: float = 5e-5
    """Peak learning rate of AdamW (Trainer: learning_rate)."""
    weight_decay: float = 0.0
    """AdamW weight decay; biases and norm weights get none."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    lr_scheduler: str = "linear"
    """transformers schedule name: linear, cosine, constant, constant_with_warmup, polynomial, ..."""
    warmup_steps: int = 0
    """Warm-up optimizer steps; wins over warmup_ratio when > 0."""
    warmup_ratio: float = 0.0
    """Warm-up as a fraction of all optimizer steps."""
    epochs: int = 3
    """Passes over the training data (Trainer: num_train_epochs)."""
    max_steps: int = -1
    """Optimizer steps; when > 0 it wins over epochs."""
    batch_size: int = 8
    """Examples per process per micro-batch (Trainer: per_device_train_batch_size)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (Trainer: gradient_accumulation_steps)."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this; 0 disables clipping."""
    log_every: int = 10
    """Log loss, learning rate and throughput every N optimizer steps (Trainer: logging_steps)."""
    eval_every: int = 0
    """Evaluate every N optimizer steps; 0: only at the end of training (Trainer: eval_steps)."""
    save_every: int = 0
    """Write a checkpoint every N optimizer steps; 0: no intermediate checkpoints (Trainer: save_steps)."""
    save_total_limit: Optional[int] = 2
    """Keep the newest N checkpoints; None keeps every one."""
    resume_from: Optional[str] = None
    """Continue a run: latest, or a checkpoint directory."""
    overwrite_output_dir: bool = False
    """Replace a previous run's outputs in output_dir."""
    threads: Optional[int] = None
    """Torch intra-op threads per process; None: usable cores / local processes."""
    early_stopping_patience: int = 0
    """Stop after this many periodic evaluations without improvement of eval.best_metric; 0: off."""
    early_stopping_threshold: float = 0.0
    """How much eval.best_metric must improve to count as better."""
    export_best: bool = False
    """Export the best evaluated checkpoint instead of the last weights (Trainer: load_best_model_at_end)."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy loss for generative recipes (Trainer: label_smoothing_factor)."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Trackers by accelerate's names: tensorboard, wandb, mlflow, aim, comet_ml, clearml, dvclive, swanlab,
    trackio; [none]: no tracker."""
    eval_at_start: bool = False
    """Score the model before the first step (step 0 in eval_history.jsonl), so the gain is visible
    (Trainer: eval_on_start)."""
    group_by_length: bool = False
    """Batches of similar lengths: shuffled mega-batches sorted by length, as HF's LengthGroupedSampler
    (less padding)."""
    packing: bool = False
    """Decoder-only models: pack training examples into rows of train.packing_length tokens (best fit decreasing),
    each example attending only to itself; train.batch_size then counts rows."""
    packing_length: Optional[int] = None
    """Tokens per packed row; None: the model's context, at most 2048."""
    compile: bool = False
    """torch.compile the training forward and backward (inductor; Trainer: torch_compile): a one-time
    compile, then faster steps on GPUs; eval stays eager."""
    tf32: bool = True
    """On CUDA, fp32 matmuls use TF32 tensor cores (Ampere and newer; Trainer: tf32); false keeps full fp32.
    No effect on CPU."""
    grad_compression: Optional[str] = None
    """Compress the gradient all-reduce of multi-process DDP runs (accelerate's DDP communication hooks):
    powersgd (low-rank), fp16 or bf16 (half precision; bf16 needs CUDA + NCCL); None: full fp32. Not with
    DeepSpeed (it does its own communication)."""
    powersgd_rank: int = 1
    """PowerSGD: rank of the low-rank approximation of each gradient matrix (higher: closer to the
    uncompressed run, more bytes)."""
    powersgd_start_iter: int = 1000
    """PowerSGD: optimizer steps all-reduced uncompressed before compression starts (torch's
    start_powerSGD_iter warm-up; at least 2)."""


@dataclass
class EvalConfig:
    """eval.*: how the model is scored."""

    batch_size: int = 16
    """Examples per process per eval batch (Trainer: per_device_eval_batch_size)."""
    metrics: Optional[list[str]] = None
    """evaluate ids or module paths; None: the recipe's default."""
    metric_args: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments per metric, e.g. {sacrebleu: {tokenize: intl}}."""
    split: str = "validation"
    """Which split is scored: validation, test or train (data.<split>_split / data.<split>_file)."""
    group_by_length: bool = True
    """Sort eval features by length so batches hold similar lengths; outputs are restored to input order."""
    max_tokens_per_batch: Optional[int] = None
    """Eval batches by padded size instead of eval.batch_size: length-sorted, rows x longest row <= this
    (many short inputs per batch, few long); None: off."""
    best_metric: Optional[str] = None
    """The metric that picks the best evaluation; None: the recipe's primary one (rougeL, sacrebleu, f1,
    wer)."""
    greater_is_better: Optional[bool] = None
    """Direction of eval.best_metric; None: known per metric (error rates and losses lower, scores
    higher)."""
    precision: Optional[str] = None
    """How evals compute: no; bf16/fp16 (autocast, weights as saved: plain, DDP); bf16-weights/fp16-weights
    (weights cast, no autocast: DeepSpeed); bf16-fsdp2 (weights cast, autocast: FSDP2); launcher (the launcher's
    --mixed_precision). A training run saves its own here; eval-only adopts it; None: the launcher's."""


@dataclass
class GenerationOptions:
    """generation.*: decoding for generative recipes; None keeps the model's generation_config value."""

    num_beams: Optional[int] = None
    """Beam width; 1 is greedy."""
    max_new_tokens: Optional[int] = None
    """Longest generated output; None: task.max_target_length."""
    length_penalty: Optional[float] = None
    """Beam-search length penalty (> 1 favours longer outputs)."""
    no_repeat_ngram_size: Optional[int] = None
    """Forbid repeating n-grams of this size."""
    early_stopping: Optional[bool] = None
    """Stop beam search when num_beams candidates have finished."""


@dataclass
class PeftOptions:
    """peft.*: parameter-efficient fine-tuning (LoRA or any peft method)."""

    method: Optional[str] = None
    """None (full fine-tuning) or lora."""
    r: int = 8
    """LoRA rank."""
    alpha: int = 16
    """LoRA alpha (scaling = alpha / r)."""
    dropout: float = 0.05
    """LoRA dropout."""
    target_modules: Optional[list[str]] = None
    """None: the architecture family's attention + feed-forward linear layers; [all-linear]: every linear
    layer but the head."""
    modules_to_save: Optional[list[str]] = None
    """Trained in full and saved with the adapter; None: the recipe's task head (qa_outputs, CTC lm_head,
    ...)."""
    config: Optional[str] = None
    """A peft config dict as JSON (peft_type IA3, LOHA, ...); unset target_modules / modules_to_save get
    the defaults above."""
    merge: bool = False
    """Also export output_dir/model_merged: the adapter merged into the base, a plain model."""


@dataclass
class NoOptions:
    """Task options of a recipe that has none."""


@dataclass
class RunConfig:
    """The whole run: every group above, plus the recipe's own task.* options."""

    recipe: str = "summarization"
    """Built-in name, entry-point name, path/to/file.py:Class or package.module:Class."""
    mode: str = "train"
    """train; eval (score a model without training); predict (predictions.jsonl for data.test_file,
    references optional)."""
    output_dir: Optional[str] = None
    """Where everything is written; None: outputs/<recipe> for training, outputs/<recipe>-eval for eval-only
    runs."""
    seed: int = 42
    """Seed of weights init, shuffling and dropout."""
    deepspeed: Optional[str] = None
    """A DeepSpeed JSON config; its auto values are filled from this run config."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    peft: PeftOptions = field(default_factory=PeftOptions)
    task: Any = None
    """The recipe's Options dataclass."""


MODES = ("train", "eval", "predict")
# eval.precision values (engines/precision.py says what each computes); "launcher" is never saved by a run.
PRECISIONS = ("no", "bf16", "fp16", "fp8", "bf16-weights", "fp16-weights", "bf16-fsdp2", "launcher")
# The splits a run can read (data.<split>_split / data.<split>_file).
SPLITS = ("train", "validation", "test")


def run_splits(cfg: RunConfig) -> tuple[str, ...]:
    """The splits a run reads, the scored one last: (train, eval.split) for training, (eval.split,) otherwise.

    mode=predict reads the test split (data.test_file, or data.test_split of data.name): preflight sets
    eval.split=test for it, so the saved config says which split was predicted.
    """
    return ("train", cfg.eval.split) if cfg.mode == "train" else (cfg.eval.split,)


def peft_enabled(peft_cfg: PeftOptions) -> bool:
    """Whether the run trains an adapter (peft.method or peft.config set)."""
    return peft_cfg.method is not None or peft_cfg.config is not None
