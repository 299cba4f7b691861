"""The only loop: training (with periodic eval, checkpoints and exact resume) and eval-only runs.

It knows nothing about tasks; everything task-specific goes through the Recipe hooks.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from omegaconf import OmegaConf

from accel_tasks.config import RunConfig, run_splits, to_yaml
from accel_tasks.data.feature_cache import make_features
from accel_tasks.data.raw import check_columns
from accel_tasks.data.sampling import LengthGroupedSampler, feature_lengths
from accel_tasks.data.streaming import StreamBatches, is_stream, stream_features, stream_layout
from accel_tasks.engines.accelerator import (
    build_accelerator,
    cast_floating_inputs,
    configure_threads,
    optimizer_offloaded,
    prepare_eval_model,
)
from accel_tasks.engines.compression import describe_compression, track_powersgd
from accel_tasks.engines.performance import (
    attention_in_use,
    build_adamw,
    compile_for_training,
    compile_settings,
    describe,
    fused_adamw,
    pad_multiple,
    set_tf32,
)
from accel_tasks.engines.teardown import finish_processes, track
from accel_tasks.engines.trackers import resolve_trackers, tracker_init_kwargs
from accel_tasks.errors import ConfigError, NonFiniteLoss, Preempted
from accel_tasks.evaluation.best import BestTracker, tracking
from accel_tasks.evaluation.eval_pass import run_eval, scalar_metrics
from accel_tasks.files import write_json, write_jsonl
from accel_tasks.models.adapters import wrap_model
from accel_tasks.models.loading import count_parameters
from accel_tasks.preflight import Plan
from accel_tasks.recipe import Recipe
from accel_tasks.reporting.model_card import write_model_card
from accel_tasks.reporting.summary import print_run_summary
from accel_tasks.runs.checkpoint import LoopState, clear_leftovers, load_checkpoint, read_loop_state, save_checkpoint
from accel_tasks.runs.export import export_model
from accel_tasks.runs.output_dir import prepare_output_dir
from accel_tasks.training.guards import StepHealth, StopRequest, die_with_launcher, weights_finite

if TYPE_CHECKING:
    import datasets
    import torch
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase, ProcessorMixin

Log = Callable[[str], None]

logger = logging.getLogger("accel_tasks")


def run(plan: Plan) -> dict[str, Any]:
    """Train or evaluate as the plan says; returns the final metrics on the main process."""
    cfg = plan.cfg
    die_with_launcher()
    threads = configure_threads(cfg.train.threads)
    accelerator = build_accelerator(cfg, plan.output_dir)
    track(accelerator)
    _setup_logging(accelerator)
    log = _main_process_log(accelerator)
    log(
        f"{plan.recipe.name}: mode={cfg.mode} processes={accelerator.num_processes} "
        f"distributed={accelerator.distributed_type.value} mixed_precision={accelerator.mixed_precision} "
        f"threads/process={threads} output_dir={plan.output_dir}"
    )
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    recipe = plan.recipe
    recipe.log = log
    device_type = accelerator.device.type
    tf32 = set_tf32(device_type, cfg.train.tf32)
    recipe.pad_to_multiple_of = pad_multiple(accelerator.mixed_precision)
    model, processor = recipe.load_model()
    if cfg.mode != "train":
        _adopt_model_settings(recipe, model, log)
    model = wrap_model(model, cfg.peft, cfg.mode, recipe.peft_modules_to_save, log)
    trainable, total = count_parameters(model)
    log(
        f"model: {type(model).__name__}, trainable / total parameters: {trainable:,} / {total:,} ({100 * trainable / max(total, 1):.2f}%)"
    )
    training = {
        "AdamW": "fused" if fused_adamw(device_type, optimizer_offloaded(accelerator)) else "plain",
        "compile": compile_settings(cfg.train.compile),
        "grad_compression": describe_compression(cfg.train),
    }
    log(
        describe(
            device=device_type,
            attention=attention_in_use(model),
            TF32=tf32,
            pad_to_multiple_of=recipe.pad_to_multiple_of,
            **(training if cfg.mode == "train" else {}),
        )
    )
    splits = run_splits(cfg)
    raw = recipe.load_data(splits)
    features = {}
    if cfg.mode == "predict":
        recipe.with_references = recipe.has_references(raw[cfg.eval.split])
        log(
            f"predict: {len(raw[cfg.eval.split])} inputs, "
            + ("with references: they are scored too" if recipe.with_references else "no references: predictions only")
        )
    for split in splits:
        check_columns(raw[split], recipe.required_columns(split, raw[split].column_names), split)
        if is_stream(raw[split]):  # data.streaming: read, shuffled and tokenized on the fly, this process's share only
            raw[split] = recipe.prepare_stream(raw[split], split)
            features[split] = stream_features(
                recipe, raw[split], split, cfg, accelerator.process_index, accelerator.num_processes, log
            )
            continue
        raw[split] = recipe.prepare_raw(raw[split], split)
        with accelerator.main_process_first():
            features[split] = make_features(recipe, raw[split], split, cfg.data, log)
    # Every check has passed (model loaded, data read and preprocessed): only now is output_dir written to.
    _prepare_output_dir(accelerator, plan)
    accelerator.init_trackers(
        cfg.mode,
        config=_flat_scalars(cfg),
        init_kwargs=tracker_init_kwargs(resolve_trackers(cfg.train.report_to), plan.output_dir.name),
    )
    if cfg.mode == "train":
        metrics = _train(accelerator, plan, model, processor, raw, features, log)
    else:
        model = prepare_eval_model(accelerator, model)
        metrics = _final_eval(accelerator, plan, model, raw, features, log)
    main_process = accelerator.is_main_process
    # Trackers, the DeepSpeed engine, a barrier, the process group: nothing distributed is left to the
    # interpreter's exit, where a finished process was seen to abort (see teardown.py).
    finish_processes(accelerator)
    if main_process:
        print_run_summary(plan, log)
    return metrics


def _train(
    accelerator: Accelerator,
    plan: Plan,
    model: torch.nn.Module,
    processor: PreTrainedTokenizerBase | ProcessorMixin,
    raw: datasets.DatasetDict,
    features: dict[str, datasets.Dataset],
    log: Log,
) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    cfg, recipe, tcfg = plan.cfg, plan.recipe, plan.cfg.train
    if is_stream(features["train"]):
        return _train_streamed(accelerator, plan, model, processor, raw, features, log)
    sampler = None
    if tcfg.group_by_length:
        lengths = feature_lengths(features["train"], recipe.length_column)
        if lengths is None:
            raise ConfigError(
                f"train.group_by_length: the train features have no {recipe.length_column!r} column to measure; set train.group_by_length=false"
            )
        sampler = LengthGroupedSampler(lengths, tcfg.batch_size * accelerator.num_processes, cfg.seed)
    train_loader = DataLoader(
        features["train"],
        batch_size=tcfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=recipe.collate,
        num_workers=cfg.data.dataloader_num_workers,
        # Its own generator: starting an epoch's iterator must not draw from the global RNG,
        # or a resumed run would see different dropout masks than an uninterrupted one.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    # Fused on CUDA (one kernel for every update); under DeepSpeed this is the client optimizer it wraps.
    optimizer = build_adamw(
        parameter_groups(model, tcfg.weight_decay), tcfg, accelerator.device.type, optimizer_offloaded(accelerator)
    )
    if len(train_loader) == 0:
        raise ConfigError(
            "the train split has no examples left after preprocessing; check the data and data.max_train_samples"
        )
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    track_powersgd(accelerator, model, tcfg)  # PowerSGD's step count goes into checkpoints (compression.py)
    # train.compile: the training forward goes through torch.compile; `model` stays what is saved and evaluated.
    forward = compile_for_training(model, compile_settings(tcfg.compile))
    steps_per_epoch = max(1, math.ceil(len(train_loader) / tcfg.grad_accum))
    total_steps = tcfg.max_steps if tcfg.max_steps > 0 else tcfg.epochs * steps_per_epoch
    scheduler, state = _scheduler_and_state(accelerator, plan, optimizer, total_steps, log)
    log(
        f"training: {len(features['train'])} features, {steps_per_epoch} steps/epoch, {total_steps} steps, "
        f"batch {tcfg.batch_size} x {accelerator.num_processes} processes x {tcfg.grad_accum} accumulation, "
        f"{'length-grouped' if sampler is not None else 'shuffled'} batches"
    )
    with StopRequest() as stop:
        return _train_steps(
            accelerator,
            plan,
            model,
            processor,
            optimizer,
            scheduler,
            train_loader,
            state,
            raw,
            features,
            total_steps,
            stop,
            log,
            forward,
        )


def _train_streamed(
    accelerator: Accelerator,
    plan: Plan,
    model: torch.nn.Module,
    processor: PreTrainedTokenizerBase | ProcessorMixin,
    raw: datasets.DatasetDict,
    features: dict[str, Any],
    log: Log,
) -> dict[str, Any]:
    """data.streaming: this process's share as endless batches (streaming.py), never through prepare(loader),
    which would shard it a second time; train.max_steps is the length (preflight made sure it is set)."""
    cfg, recipe, tcfg = plan.cfg, plan.recipe, plan.cfg.train
    layout = stream_layout(cfg, accelerator.num_processes)
    train_loader = StreamBatches(features["train"], tcfg.batch_size, recipe.collate, accelerator.device, layout)
    optimizer = build_adamw(
        parameter_groups(model, tcfg.weight_decay), tcfg, accelerator.device.type, optimizer_offloaded(accelerator)
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    track_powersgd(accelerator, model, tcfg)
    forward = compile_for_training(model, compile_settings(tcfg.compile))
    scheduler, state = _scheduler_and_state(accelerator, plan, optimizer, tcfg.max_steps, log)
    log(
        f"training: streamed features, {tcfg.max_steps} steps, batch {tcfg.batch_size} x {accelerator.num_processes} processes "
        f"x {tcfg.grad_accum} accumulation, shuffle buffer {cfg.data.shuffle_buffer or 'off'} (each pass over the data reshuffled)"
    )
    with StopRequest() as stop:
        return _train_steps(
            accelerator,
            plan,
            model,
            processor,
            optimizer,
            scheduler,
            train_loader,
            state,
            raw,
            features,
            tcfg.max_steps,
            stop,
            log,
            forward,
        )


def _scheduler_and_state(
    accelerator: Accelerator, plan: Plan, optimizer: torch.optim.Optimizer, total_steps: int, log: Log
) -> tuple[Any, LoopState]:
    """The learning-rate schedule, prepared, and the loop state (from the checkpoint when resuming)."""
    from transformers import get_scheduler

    tcfg = plan.cfg.train
    warmup = tcfg.warmup_steps or math.ceil(tcfg.warmup_ratio * total_steps)
    # The prepared scheduler steps once per process for every optimizer step.
    scheduler = get_scheduler(
        tcfg.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=warmup * accelerator.num_processes,
        num_training_steps=total_steps * accelerator.num_processes,
    )
    # prepare_scheduler, not prepare: under DeepSpeed, prepare(scheduler) without the model returns the bare
    # scheduler, which then steps every micro-batch and is missing from save_state.
    scheduler = accelerator.prepare_scheduler(scheduler)
    state = LoopState()
    if plan.resume_dir is not None:
        # Another number of processes than the checkpoint's: resharded, schedule and data position rescaled (reshard.py).
        state = load_checkpoint(
            accelerator, plan.resume_dir, scheduler, plan.output_dir / "checkpoints", tcfg.batch_size
        )
        log(
            f"resumed from {plan.resume_dir} at step {state.global_step} (epoch {state.epoch}, batch {state.batches_in_epoch})"
        )
    return scheduler, state


def _train_steps(
    accelerator: Accelerator,
    plan: Plan,
    model: torch.nn.Module,
    processor: PreTrainedTokenizerBase | ProcessorMixin,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    train_loader: Any,
    state: LoopState,
    raw: datasets.DatasetDict,
    features: dict[str, datasets.Dataset],
    total_steps: int,
    stop: StopRequest,
    log: Log,
    forward: Optional[torch.nn.Module] = None,
) -> dict[str, Any]:
    """The optimizer steps from ``state`` to ``total_steps``, then the export and the final eval.

    ``forward``: what the training loss is computed with (the compiled model under train.compile), else ``model``.
    """
    from tqdm.auto import tqdm

    cfg, recipe, tcfg = plan.cfg, plan.recipe, plan.cfg.train
    checkpoints_root = plan.output_dir / "checkpoints"
    if accelerator.is_main_process:
        clear_leftovers(checkpoints_root)
    health = StepHealth(accelerator)
    best = BestTracker(cfg, recipe) if tracking(cfg) else None
    last_checkpoint: Optional[Path] = plan.resume_dir
    stopped_early = False
    if tcfg.eval_at_start and state.global_step == 0:
        # A baseline, not a candidate for the best checkpoint: nothing has been trained yet.
        _periodic_eval(accelerator, plan, model, raw, features, 0, log)
    progress = tqdm(
        total=total_steps,
        initial=state.global_step,
        desc="train",
        disable=not (accelerator.is_local_main_process and interactive()),
    )
    first_step, train_start = state.global_step, time.perf_counter()
    meter = ThroughputMeter()
    run_loss = ThroughputMeter()
    model.train()
    while state.global_step < total_steps:
        train_loader.set_epoch(state.epoch)
        if isinstance(train_loader, StreamBatches):  # a stream resumes by replaying itself (streaming.py)
            loader = train_loader.skip(state.batches_in_epoch)
        else:
            loader = (
                accelerator.skip_first_batches(train_loader, state.batches_in_epoch)
                if state.batches_in_epoch
                else train_loader
            )
        for batch in loader:
            batch = cast_floating_inputs(batch, accelerator, model)
            with accelerator.accumulate(model):
                loss = recipe.training_loss(forward if forward is not None else model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and tcfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state.batches_in_epoch += 1
            health.add(loss)
            samples, tokens = len(next(iter(batch.values()))), recipe.count_tokens(batch)
            meter.add(loss.detach(), samples, tokens)
            run_loss.add(loss.detach(), samples, tokens)
            if not accelerator.sync_gradients:
                continue
            state.global_step += 1
            progress.update(1)
            step = state.global_step
            diverged, stopping, bad_value = health.check(stop)
            if diverged:
                progress.close()
                raise NonFiniteLoss(
                    _divergence_message(step, bad_value, tcfg.lr, accelerator.mixed_precision, last_checkpoint)
                )
            if step % tcfg.log_every == 0 or step == total_steps:
                _log_train(
                    accelerator,
                    meter,
                    scheduler,
                    step,
                    total_steps,
                    log,
                    (step - first_step, time.perf_counter() - train_start),
                )
            new_best = False
            # The last step is the final eval's, unless the export must know whether it is the best.
            if best is not None and step % tcfg.eval_every == 0 and (step < total_steps or tcfg.export_best):
                with meter.paused():
                    metrics = _periodic_eval(accelerator, plan, model, raw, features, step, log)
                new_best = best.update(accelerator, metrics, step, state)
                stopped_early = best.should_stop(state)
            # With train.export_best, every new best is kept as a checkpoint so the export can come from it.
            keep_best = new_best and tcfg.export_best
            if stopping or keep_best or (tcfg.save_every and (step % tcfg.save_every == 0 or step == total_steps)):
                protect = (
                    checkpoints_root / f"step_{state.best_step}" if tcfg.export_best and state.best_step > 0 else None
                )
                with meter.paused():
                    last_checkpoint = save_checkpoint(
                        accelerator,
                        checkpoints_root,
                        state,
                        model,
                        processor,
                        tcfg.save_total_limit,
                        to_yaml(cfg),
                        protect,
                        write_extra=train_loader.write_state if isinstance(train_loader, StreamBatches) else None,
                    )
                log(f"step {step}: checkpoint saved to {last_checkpoint}")
            if stopping:
                progress.close()
                raise Preempted(
                    f"stopped by {stop.signal_name or 'a stop signal to another process'} at step {step}/{total_steps}: "
                    f"checkpoint {last_checkpoint} written; run the same command with train.resume_from=latest to continue"
                )
            if stopped_early:
                log(
                    f"early stopping at step {step}: {best.name} has not improved for {state.evals_without_improvement} "
                    f"evaluations (best {state.best_value:.4g} at step {state.best_step})"
                )
                break
            if step >= total_steps:
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
            continue
        break
    progress.close()
    train_stats = {
        "train_steps": state.global_step - first_step,
        "train_runtime_s": round(time.perf_counter() - train_start, 3),
        # Trainer's train_loss: the mean over this run's steps (every process), not the last log window's.
        "train_loss": _mean_loss(accelerator, run_loss),
    }
    log(f"trained {train_stats['train_steps']} steps in {train_stats['train_runtime_s']:.1f} s")
    if not weights_finite(accelerator, model):
        raise NonFiniteLoss(
            f"after step {state.global_step} the weights are not finite (the last update overflowed); nothing is exported"
            f"{f', the last checkpoint {last_checkpoint} stays' if last_checkpoint else ''}. {_DIVERGENCE_FIXES.format(lr=tcfg.lr)}"
        )
    if best is not None and tcfg.export_best and state.best_step not in (-1, state.global_step):
        best_dir = checkpoints_root / f"step_{state.best_step}"
        accelerator.load_state(str(best_dir))
        log(
            f"exporting the best checkpoint {best_dir} ({best.name}={state.best_value:.4g}) instead of step {state.global_step}"
        )
        train_stats["exported_step"] = state.best_step
    export_dir = plan.output_dir / "model"
    export_model(accelerator, model, processor, export_dir, to_yaml(cfg))
    # The final eval scores the last step's weights, which no periodic eval has seen: it counts towards the best
    # (as Trainer's last evaluation does), unless those weights were evaluated already or replaced by the best.
    fold_final = best is not None and not (tcfg.export_best or stopped_early)
    if best is not None and not fold_final:
        train_stats.update(best.summary(state))
    if stopped_early:
        train_stats["stopped_early_at_step"] = state.global_step
    log(f"model exported to {export_dir}")
    metrics = _final_eval(
        accelerator,
        plan,
        model,
        raw,
        features,
        log,
        step=state.global_step,
        extra=train_stats,
        best_of_run=(best, state) if fold_final else None,
    )
    write_model_card(
        accelerator, export_dir, cfg, recipe, metrics
    )  # the card holds the final metrics: after the final eval
    return metrics


_DIVERGENCE_FIXES = "Try a lower train.lr (now {lr:g}), gradient clipping (train.max_grad_norm=1.0), or bf16 instead of fp16 mixed precision"


def _divergence_message(
    step: int, value: float, lr: float, mixed_precision: str, last_checkpoint: Optional[Path]
) -> str:
    kept = f"the last checkpoint {last_checkpoint} stays" if last_checkpoint else "there is no checkpoint"
    fixes = _DIVERGENCE_FIXES.format(lr=lr)
    if mixed_precision != "fp16":
        fixes = fixes.replace(", or bf16 instead of fp16 mixed precision", "")
    return f"step {step}: the training loss is {value} (not finite); the run stops and exports nothing, {kept}. {fixes}"


def _adopt_model_settings(recipe: Recipe, model: torch.nn.Module, log: Log) -> None:
    """Eval-only: what the trained model fixes (labels, vocabulary) wins over task options, with a notice."""
    for key, value in recipe.settings_from_model(model).items():
        current = getattr(recipe.options, key)
        current = OmegaConf.to_container(current) if OmegaConf.is_config(current) else current
        if current != value:
            log(f"task.{key}={value!r} from the model (the settings said {current!r})")
            setattr(recipe.options, key, value)


def _final_eval(
    accelerator: Accelerator,
    plan: Plan,
    model: torch.nn.Module,
    raw: datasets.DatasetDict,
    features: dict[str, datasets.Dataset],
    log: Log,
    step: int = 0,
    extra: Optional[dict[str, Any]] = None,
    best_of_run: Optional[tuple[BestTracker, LoopState]] = None,
) -> dict[str, Any]:
    """Score, then write predictions.jsonl and metrics.json (with ``extra``, and the best eval when tracking)."""
    metrics, result = run_eval(
        accelerator,
        plan.recipe,
        model,
        raw[plan.cfg.eval.split],
        features[plan.cfg.eval.split],
        plan.metric_modules,
        plan.cfg,
        log,
    )
    if best_of_run is not None:
        tracker, state = best_of_run
        tracker.update(accelerator, metrics, step, state)  # every process: the value is broadcast from the main one
        extra = {**(extra or {}), **tracker.summary(state)}
    if accelerator.is_main_process:
        metrics.update(extra or {})
        write_jsonl(plan.output_dir / "predictions.jsonl", result.records)
        write_json(plan.output_dir / "metrics.json", metrics)
        accelerator.log({f"eval/{k}": v for k, v in scalar_metrics(metrics).items()}, step=step)
        log("eval: " + _format_metrics(metrics))
        log(f"wrote {plan.output_dir / 'metrics.json'} and {plan.output_dir / 'predictions.jsonl'}")
    accelerator.wait_for_everyone()
    return metrics


def _periodic_eval(
    accelerator: Accelerator,
    plan: Plan,
    model: torch.nn.Module,
    raw: datasets.DatasetDict,
    features: dict[str, datasets.Dataset],
    step: int,
    log: Log,
) -> dict[str, Any]:
    """Score the current weights; the metrics on the main process ({} elsewhere), also logged and appended to eval_history.jsonl."""
    metrics, _ = run_eval(
        accelerator,
        plan.recipe,
        model,
        raw[plan.cfg.eval.split],
        features[plan.cfg.eval.split],
        plan.metric_modules,
        plan.cfg,
        log,
    )
    if accelerator.is_main_process:
        accelerator.log({f"eval/{k}": v for k, v in scalar_metrics(metrics).items()}, step=step)
        log(f"step {step} eval: " + _format_metrics(metrics))
        with (plan.output_dir / "eval_history.jsonl").open("a") as handle:
            import json

            handle.write(json.dumps({"step": step, **metrics}) + "\n")
    return metrics


class ThroughputMeter:
    """Loss, samples and tokens since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss_sum = 0.0
        self.batches = 0
        self.samples = 0
        self.tokens = 0
        self.start = time.perf_counter()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside (a periodic eval, a checkpoint) is not training time: samples/s leaves it out."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - began

    def add(self, loss: torch.Tensor, samples: int, tokens: int) -> None:
        self.loss_sum = self.loss_sum + loss.float()
        self.batches += 1
        self.samples += samples
        self.tokens += tokens


def _mean_loss(accelerator: Accelerator, meter: ThroughputMeter) -> float:
    """The meter's mean loss averaged over processes (every process must call it)."""
    import torch

    local = torch.tensor(
        [float(meter.loss_sum) / max(meter.batches, 1)], dtype=torch.float64, device=accelerator.device
    )
    return accelerator.reduce(local, reduction="mean").item()


def _log_train(
    accelerator: Accelerator,
    meter: ThroughputMeter,
    scheduler: Any,
    step: int,
    total: int,
    log: Log,
    done: tuple[int, float],
) -> None:
    """One line per train.log_every steps (the progress report where stderr is no terminal), and the tracker values.

    ``done``: (steps, seconds) of this run so far, for the time left.
    """
    import torch

    elapsed = max(time.perf_counter() - meter.start, 1e-9)
    local = torch.tensor([meter.samples, meter.tokens], dtype=torch.float64, device=accelerator.device)
    mean_loss = _mean_loss(accelerator, meter)
    totals = accelerator.reduce(local, reduction="sum")
    values = {
        "train/loss": mean_loss,
        "train/lr": scheduler.get_last_lr()[0],
        "train/samples_per_s": totals[0].item() / elapsed,
        "train/tokens_per_s": totals[1].item() / elapsed,
    }
    accelerator.log(values, step=step)
    steps_done, seconds = done
    left = (total - step) * seconds / max(steps_done, 1)
    log(
        f"step {step}/{total} loss {mean_loss:.4f} lr {values['train/lr']:.3e} "
        f"{values['train/samples_per_s']:.1f} samples/s {values['train/tokens_per_s']:.0f} tokens/s "
        f"| {100 * step / total:.0f}% elapsed {_duration(seconds)} left {_duration(left)}"
    )
    meter.reset()


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay for biases and normalisation weights."""
    no_decay = set()
    for module_name, module in model.named_modules():
        is_norm = "norm" in type(module).__name__.lower()
        for param_name, _ in module.named_parameters(recurse=False):
            if is_norm or param_name == "bias":
                no_decay.add(f"{module_name}.{param_name}" if module_name else param_name)
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if name in no_decay else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def _prepare_output_dir(accelerator: Accelerator, plan: Plan) -> None:
    """Runs once every check has passed and on every rank together, so nothing is written for a run that fails early."""
    if accelerator.is_main_process:
        resume_step = None
        if plan.resume_dir is not None:
            resume_step = read_loop_state(plan.resume_dir).global_step
        prepare_output_dir(plan.output_dir, plan.cfg.train.overwrite_output_dir, resume_step, to_yaml(plan.cfg))
    accelerator.wait_for_everyone()


def _flat_scalars(cfg: RunConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, (int, float, str, bool)):
                flat[f"{prefix}{key}"] = value

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def _format_metrics(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in scalar_metrics(metrics).items())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def interactive() -> bool:
    """Whether stderr is a terminal: only then do progress bars redraw a line (else they fill log files with \\r)."""
    return sys.stderr.isatty()


def _setup_logging(accelerator: Accelerator) -> None:
    import datasets
    import huggingface_hub
    import transformers

    level = logging.INFO if accelerator.is_main_process else logging.WARNING
    logger.setLevel(level)
    if not interactive():
        # A log file or a cluster job: the per-step log lines are the progress report.
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
        huggingface_hub.utils.disable_progress_bars()
    if accelerator.is_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()


def _main_process_log(accelerator: Accelerator) -> Log:
    def log(message: str) -> None:
        if accelerator.is_main_process:
            print(f"[accel_tasks] {message}", flush=True)

    return log
