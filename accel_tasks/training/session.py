"""What the steps of a run share, built once: a :class:`RunSession` for every run, a :class:`TrainSession` for training.

Why objects: the accelerator, the plan, the model, the processor and the data used to travel through seven
signatures, each passing them on; a session is made once, when they are ready, and every step reads what it
needs from it. :func:`start_training` is the one setup of map-style and streamed training alike (optimizer,
``prepare``, compile, schedule, resume): only the loader differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from accel_tasks import log
from accel_tasks.config import RunConfig, TrainConfig
from accel_tasks.data.sampling import LengthGroupedSampler, feature_lengths
from accel_tasks.engines.accelerator import cast_floating_inputs, optimizer_offloaded, prepare_for_training
from accel_tasks.engines.compression import track_powersgd
from accel_tasks.engines.performance import build_adamw, compile_for_training, compile_settings
from accel_tasks.errors import ConfigError
from accel_tasks.features.streaming import StreamBatches, is_stream, stream_layout
from accel_tasks.preflight import Plan
from accel_tasks.recipe import Recipe
from accel_tasks.runs.checkpoint import LoopState, load_checkpoint

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase, ProcessorMixin

    Processor = PreTrainedTokenizerBase | ProcessorMixin


@dataclass
class RunData:
    """The raw splits (after prepare_raw / prepare_stream) and their features, by split name.

    A streamed split (data.streaming) holds an IterableDataset in both places: this process's share, read lazily.
    """

    raw: dict[str, Any]
    features: dict[str, Any]


@dataclass
class RunSession:
    """A run whose model and data are ready: what evaluation, the export and the summary read.

    ``cfg`` is the run's settings as the run uses them: the resolved config of preflight plus what the recipe
    decided at run time (``Recipe.decisions``); it is what config.yaml, checkpoints and the export save.
    """

    accelerator: Accelerator
    plan: Plan
    cfg: RunConfig
    model: torch.nn.Module
    processor: Processor
    data: RunData

    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe

    @property
    def output_dir(self) -> Path:
        return self.plan.output_dir

    def eval_split(self) -> tuple[Any, Any]:
        """(examples, features) of the scored split (eval.split)."""
        split = self.cfg.eval.split
        return self.data.raw[split], self.data.features[split]


@dataclass
class TrainSession(RunSession):
    """A run ready to train: the prepared model, optimizer, schedule and loader, and the position in the data.

    ``forward`` is what the training loss is computed with: the compiled model under train.compile, else
    ``model``; ``model`` stays what is saved, evaluated and exported. ``state`` is the loop position that
    checkpoints save (and a resume restored). ``loader`` is the prepared DataLoader, or :class:`StreamBatches`
    for a streamed train split.
    """

    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: Any
    state: LoopState
    total_steps: int
    forward: torch.nn.Module

    @property
    def checkpoints_root(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def streamed(self) -> bool:
        return isinstance(self.loader, StreamBatches)

    def micro_batches(self) -> Iterator[dict[str, Any]]:
        """Micro-batches from the saved position on, one epoch after another, without end (the caller stops).

        At an epoch's end the state moves to the next one; a resume skips the batches its epoch had seen
        (a stream replays itself to its position, streaming.py).
        """
        while True:
            self.loader.set_epoch(self.state.epoch)
            seen = self.state.batches_in_epoch
            if self.streamed:
                yield from self.loader.skip(seen)
            else:
                yield from self.accelerator.skip_first_batches(self.loader, seen) if seen else self.loader
            self.state.epoch += 1
            self.state.batches_in_epoch = 0

    def train_on(self, batch: dict[str, Any]) -> torch.Tensor:
        """Forward, backward and (at the end of an accumulation) the optimizer step of one micro-batch; its loss."""
        accelerator, tcfg = self.accelerator, self.cfg.train
        batch = cast_floating_inputs(batch, accelerator, self.model)
        with accelerator.accumulate(self.model):
            loss = self.recipe.training_loss(self.forward, batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and tcfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.model.parameters(), tcfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        self.state.batches_in_epoch += 1
        return loss


def start_training(run: RunSession) -> TrainSession:
    """The optimizer, ``prepare``, compile, the schedule and the resume position, for either kind of loader."""
    accelerator, tcfg = run.accelerator, run.cfg.train
    streamed = is_stream(run.data.features["train"])
    loader = _stream_loader(run) if streamed else _map_loader(run)

    def optimizer_for(model: torch.nn.Module) -> torch.optim.Optimizer:
        # Fused on CUDA (one kernel for every update); under DeepSpeed this is the client optimizer it wraps.
        groups = parameter_groups(model, tcfg.weight_decay)
        return build_adamw(groups, tcfg, accelerator.device.type, optimizer_offloaded(accelerator))

    # A stream is already this process's share (streaming.py): prepare(loader) would shard it a second time.
    model, optimizer, prepared = prepare_for_training(
        accelerator, run.model, optimizer_for, None if streamed else loader
    )
    loader = loader if streamed else prepared
    track_powersgd(accelerator, model, tcfg)  # PowerSGD's step count goes into checkpoints (compression.py)
    # train.compile: the training forward goes through torch.compile; `model` stays what is saved and evaluated.
    forward = compile_for_training(model, compile_settings(tcfg.compile))
    # A stream has no length: preflight made sure train.max_steps is set for it.
    per_epoch = None if streamed else max(1, math.ceil(len(loader) / tcfg.grad_accum))
    total_steps = tcfg.max_steps if tcfg.max_steps > 0 else tcfg.epochs * per_epoch
    scheduler = _schedule(accelerator, tcfg, optimizer, total_steps)
    shared = {field.name: getattr(run, field.name) for field in fields(RunSession)}
    session = TrainSession(
        **{**shared, "model": model},
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        state=_resume(run, scheduler),
        total_steps=total_steps,
        forward=forward,
    )
    log.info(_training_line(session, per_epoch))
    return session


def _map_loader(run: RunSession) -> Any:
    """The train DataLoader of a map-style split: shuffled, or length-grouped (train.group_by_length)."""
    import torch
    from torch.utils.data import DataLoader

    cfg, recipe, features = run.cfg, run.recipe, run.data.features["train"]
    sampler = None
    if cfg.train.group_by_length:
        lengths = feature_lengths(features, recipe.length_column)
        if lengths is None:
            raise ConfigError(
                f"train.group_by_length: the train features have no {recipe.length_column!r} column to measure; "
                "set train.group_by_length=false"
            )
        sampler = LengthGroupedSampler(lengths, cfg.train.batch_size * run.accelerator.num_processes, cfg.seed)
    loader = DataLoader(
        features,
        batch_size=cfg.train.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=recipe.collate,
        num_workers=cfg.data.dataloader_num_workers,
        # Its own generator: starting an epoch's iterator must not draw from the global RNG,
        # or a resumed run would see different dropout masks than an uninterrupted one.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    if len(loader) == 0:
        raise ConfigError(
            "the train split has no examples left after preprocessing; check the data and data.max_train_samples"
        )
    return loader


def _stream_loader(run: RunSession) -> StreamBatches:
    """data.streaming: this process's share as endless batches (streaming.py), never through prepare(loader)."""
    cfg, accelerator = run.cfg, run.accelerator
    layout = stream_layout(cfg, accelerator.num_processes)
    return StreamBatches(
        run.data.features["train"], cfg.train.batch_size, run.recipe.collate, accelerator.device, layout
    )


def _schedule(accelerator: Accelerator, tcfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """The learning-rate schedule, prepared."""
    from transformers import get_scheduler

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
    return accelerator.prepare_scheduler(scheduler)


def _resume(run: RunSession, scheduler: Any) -> LoopState:
    """The loop state: a fresh one, or the checkpoint's when resuming (its weights and optimizer loaded too)."""
    plan = run.plan
    if plan.resume_dir is None:
        return LoopState()
    # Another number of processes than the checkpoint's: resharded, schedule and data position rescaled (reshard.py).
    state = load_checkpoint(
        run.accelerator, plan.resume_dir, scheduler, plan.output_dir / "checkpoints", run.cfg.train.batch_size
    )
    log.info(
        f"resumed from {plan.resume_dir} at step {state.global_step} "
        f"(epoch {state.epoch}, batch {state.batches_in_epoch})"
    )
    return state


def _training_line(session: TrainSession, per_epoch: Optional[int]) -> str:
    cfg, processes = session.cfg, session.accelerator.num_processes
    tcfg = cfg.train
    batch = f"batch {tcfg.batch_size} x {processes} processes x {tcfg.grad_accum} accumulation"
    if per_epoch is None:
        return (
            f"training: streamed features, {tcfg.max_steps} steps, {batch}, "
            f"shuffle buffer {cfg.data.shuffle_buffer or 'off'} (each pass over the data reshuffled)"
        )
    return (
        f"training: {len(session.data.features['train'])} features, {per_epoch} steps/epoch, "
        f"{session.total_steps} steps, {batch}, "
        f"{'length-grouped' if tcfg.group_by_length else 'shuffled'} batches"
    )


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
