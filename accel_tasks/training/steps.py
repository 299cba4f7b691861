"""The training steps, top to bottom: micro-batches through the optimizer, and at every optimizer step what is
due then, in this order: the health check, the log line, the periodic eval, the checkpoint, the stop decisions.

Everything the steps share lives on the :class:`~accel_tasks.training.session.TrainSession`; what only the
steps keep (meters, the best evaluation, the last checkpoint, the progress bar) lives on :class:`StepLoop`.
How the steps ended is a :class:`StepsOutcome`, which the export and the final eval (finish.py) read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from accel_tasks import log
from accel_tasks.config import to_yaml
from accel_tasks.errors import Interrupted, NonFiniteLoss, Preempted
from accel_tasks.evaluation.best import BestTracker, tracking
from accel_tasks.runs.checkpoint import Retention, RunTotals, clear_leftovers, save_checkpoint
from accel_tasks.training.evals import periodic_eval
from accel_tasks.training.guards import StepHealth, StopRequest
from accel_tasks.training.meter import ThroughputMeter, log_train, run_totals

if TYPE_CHECKING:
    from accel_tasks.training.session import TrainSession

DIVERGENCE_FIXES = (
    "Try a lower train.lr (now {lr:g}), gradient clipping (train.max_grad_norm=1.0), "
    "or bf16 instead of fp16 mixed precision"
)


@dataclass
class StepsOutcome:
    """How the steps ended: what the export and the final eval need to know.

    ``stats`` go into metrics.json (train_steps, train_runtime_s, train_loss, train_tokens: the whole run's, resumes
    included, see RunTotals); ``best`` is None unless periodic evals tracked a best one; ``stopped_early``: early
    stopping ended the run before train.max_steps / epochs.
    """

    stats: dict[str, Any]
    best: Optional[BestTracker]
    stopped_early: bool
    last_checkpoint: Optional[Path]


def run_steps(session: TrainSession, stop: StopRequest) -> StepsOutcome:
    """The optimizer steps from ``session.state`` to ``session.total_steps`` (or an early stop).

    Raises NonFiniteLoss when the loss diverges and Preempted after the checkpoint a stop signal asked for.
    """
    if session.accelerator.is_main_process:
        clear_leftovers(session.checkpoints_root)
    if session.cfg.train.eval_at_start and session.state.global_step == 0:
        # A baseline, not a candidate for the best checkpoint: nothing has been trained yet.
        periodic_eval(session, 0)
    return StepLoop(session, stop).run()


class StepLoop:
    """One pass of the training steps; see the module docstring for the order of things at each step."""

    def __init__(self, session: TrainSession, stop: StopRequest) -> None:
        from tqdm.auto import tqdm

        self.session, self.stop, self.tcfg = session, stop, session.cfg.train
        self.health = StepHealth(session.accelerator)
        self.best = BestTracker(session.cfg, session.recipe) if tracking(session.cfg) else None
        self.last_checkpoint: Optional[Path] = session.plan.resume_dir
        self.stopped_early = False
        self.progress = tqdm(
            total=session.total_steps,
            initial=session.state.global_step,
            desc="train",
            disable=not (session.accelerator.is_local_main_process and log.interactive()),
        )
        self.first_step, self.start = session.state.global_step, time.perf_counter()
        self.meter = ThroughputMeter()  # the current log window
        self.run_loss = ThroughputMeter()  # every step of this run, for train_loss
        self.totals_before = self.totals_carried()  # what the checkpoint this run resumed from had counted

    def totals_carried(self) -> RunTotals:
        """The run totals of the steps before this run: a fresh run's zeros, a resumed checkpoint's; a checkpoint
        written before totals were kept starts them at its step, and one line says what metrics.json then covers."""
        state = self.session.state
        if state.totals is None:
            log.info(
                f"{self.session.plan.resume_dir} predates the run totals in checkpoints: metrics.json's train_steps, "
                f"train_loss, train_tokens and train_runtime_s count the steps after step {state.global_step} only"
            )
            state.totals = RunTotals(from_step=state.global_step)
        return state.totals

    def totals(self) -> RunTotals:
        """The run totals up to now, every run before this one included (every process calls it: summed over them)."""
        return run_totals(self.session.accelerator, self.run_loss, self.totals_before, time.perf_counter() - self.start)

    def run(self) -> StepsOutcome:
        self.session.model.train()
        for step in self.optimizer_steps():
            if self.after_step(step):
                break
        self.progress.close()
        return self.outcome()

    def optimizer_steps(self) -> Iterator[int]:
        """Micro-batches through forward, backward and the optimizer; the global step after each optimizer step."""
        session = self.session
        if session.state.global_step >= session.total_steps:
            return
        for batch in session.micro_batches():
            loss = session.train_on(batch)
            self.health.add(loss)
            samples, tokens = len(next(iter(batch.values()))), session.recipe.count_tokens(batch)
            self.meter.add(loss.detach(), samples, tokens)
            self.run_loss.add(loss.detach(), samples, tokens)
            if session.accelerator.sync_gradients:
                session.state.global_step += 1
                yield session.state.global_step

    def after_step(self, step: int) -> bool:
        """What is due at optimizer step ``step``; True when training ends here (early stop, or the last step)."""
        session, tcfg = self.session, self.tcfg
        self.progress.update(1)
        diverged, stopping, bad_value = self.health.check(self.stop)
        if diverged:
            self.progress.close()
            raise NonFiniteLoss(self.divergence_message(step, bad_value))
        if step % tcfg.log_every == 0 or step == session.total_steps:
            done = (step - self.first_step, time.perf_counter() - self.start)
            log_train(session.accelerator, self.meter, session.scheduler, step, session.total_steps, done)
        new_best = self.evaluate(step)
        # With train.export_best, every new best is kept as a checkpoint so the export can come from it.
        if stopping or (new_best and tcfg.export_best) or self.save_due(step):
            self.checkpoint(step)
        if stopping:
            self.progress.close()
            raise (Interrupted if self.stop.signal_name == "SIGINT" else Preempted)(
                f"stopped by {self.stop.signal_name or 'a stop signal to another process'} "
                f"at step {step}/{session.total_steps}: checkpoint {self.last_checkpoint} written; "
                "run the same command with train.resume_from=latest to continue"
            )
        if self.stopped_early:
            state = session.state
            log.info(
                f"early stopping at step {step}: {self.best.name} has not improved for "
                f"{state.evals_without_improvement} evaluations (best {state.best_value:.4g} at step {state.best_step})"
            )
            return True
        return step >= session.total_steps

    def evaluate(self, step: int) -> bool:
        """The periodic eval, when one is due; True when it is the new best.

        The last step's weights are the final eval's to score, unless the export must know whether they are the best.
        """
        session, tcfg = self.session, self.tcfg
        if self.best is None or step % tcfg.eval_every or (step >= session.total_steps and not tcfg.export_best):
            return False
        with self.meter.paused():
            metrics = periodic_eval(session, step)
        new_best = self.best.update(session.accelerator, metrics, step, session.state)
        self.stopped_early = self.best.should_stop(session.state)
        return new_best

    def save_due(self, step: int) -> bool:
        """train.save_every: every N steps and the last one."""
        every = self.tcfg.save_every
        return bool(every) and (step % every == 0 or step == self.session.total_steps)

    def checkpoint(self, step: int) -> None:
        session, tcfg, state = self.session, self.tcfg, self.session.state
        protect = (
            session.checkpoints_root / f"step_{state.best_step}" if tcfg.export_best and state.best_step > 0 else None
        )
        state.totals = self.totals()  # a resume from this checkpoint reports the whole run
        with self.meter.paused():
            self.last_checkpoint = save_checkpoint(
                session.accelerator,
                session.checkpoints_root,
                state,
                session.model,
                session.processor,
                to_yaml(session.cfg),
                Retention(keep=tcfg.save_total_limit, protect=protect),
                write_extra=session.loader.write_state if session.streamed else None,
            )
        log.info(f"step {step}: checkpoint saved to {self.last_checkpoint}")

    def outcome(self) -> StepsOutcome:
        """The run's training figures (every process computes train_loss together) and how the steps ended."""
        session, totals = self.session, self.totals()
        stats = {
            "train_steps": session.state.global_step - totals.from_step,
            # The sum of each part's runtime when the run was resumed (the steps up to the checkpoint, then these).
            "train_runtime_s": round(totals.runtime_s, 3),
            # Trainer's train_loss: the mean over the run's steps (every process), not the last log window's.
            "train_loss": totals.loss_sum / max(totals.loss_count, 1),
            "train_tokens": totals.tokens,
        }
        steps, seconds = session.state.global_step - self.first_step, time.perf_counter() - self.start
        whole = f" ({stats['train_steps']} steps in {totals.runtime_s:.1f} s with the run(s) before the resume)"
        log.info(f"trained {steps} steps in {seconds:.1f} s{whole if totals.from_step < self.first_step else ''}")
        return StepsOutcome(stats, self.best, self.stopped_early, self.last_checkpoint)

    def divergence_message(self, step: int, value: float) -> str:
        kept = f"the last checkpoint {self.last_checkpoint} stays" if self.last_checkpoint else "there is no checkpoint"
        fixes = DIVERGENCE_FIXES.format(lr=self.tcfg.lr)
        if self.session.accelerator.mixed_precision != "fp16":
            fixes = fixes.replace(", or bf16 instead of fp16 mixed precision", "")
        return (
            f"step {step}: the training loss is {value} (not finite); "
            f"the run stops and exports nothing, {kept}. {fixes}"
        )
