"""What the training steps measure: loss, samples and tokens per log window, and the per-step log line.

Why its own module: the step loop (steps.py) decides *when* a line is due; how throughput, the mean loss over
processes and the time left are computed is the same for every line and is tested on its own.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from accel_tasks import log
from accel_tasks.runs.checkpoint import RunTotals

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator


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


def run_totals(accelerator: Accelerator, meter: ThroughputMeter, before: RunTotals, seconds: float) -> RunTotals:
    """``before`` (the totals a resumed checkpoint carried) plus what ``meter`` counted on every process and
    ``seconds`` of this run (every process must call it).

    Sums, not means, over processes: the totals of runs on different numbers of processes add up. The tokens are
    the real (not padding) input tokens, Trainer's num_input_tokens_seen, and what tokens/s comparisons divide.
    """
    import torch

    local = torch.tensor(
        [float(meter.loss_sum), meter.batches, meter.tokens], dtype=torch.float64, device=accelerator.device
    )
    loss_sum, batches, tokens = accelerator.reduce(local, reduction="sum").tolist()
    return RunTotals(
        from_step=before.from_step,
        loss_sum=before.loss_sum + loss_sum,
        loss_count=before.loss_count + int(batches),
        tokens=before.tokens + int(tokens),
        runtime_s=before.runtime_s + seconds,
    )


def mean_loss(accelerator: Accelerator, meter: ThroughputMeter) -> float:
    """The meter's mean loss averaged over processes (every process must call it)."""
    import torch

    local = torch.tensor(
        [float(meter.loss_sum) / max(meter.batches, 1)], dtype=torch.float64, device=accelerator.device
    )
    return accelerator.reduce(local, reduction="mean").item()


def log_train(
    accelerator: Accelerator, meter: ThroughputMeter, scheduler: Any, step: int, total: int, done: tuple[int, float]
) -> None:
    """One line per train.log_every steps (the progress report where stderr is no terminal), and the tracker
    values; then the meter starts a new window. Every process calls it (the values are reduced over processes).

    ``done``: (steps, seconds) of this run so far, for the time left.
    """
    import torch

    elapsed = max(time.perf_counter() - meter.start, 1e-9)
    local = torch.tensor([meter.samples, meter.tokens], dtype=torch.float64, device=accelerator.device)
    loss = mean_loss(accelerator, meter)
    totals = accelerator.reduce(local, reduction="sum")
    values = {
        "train/loss": loss,
        "train/lr": scheduler.get_last_lr()[0],
        "train/samples_per_s": totals[0].item() / elapsed,
        "train/tokens_per_s": totals[1].item() / elapsed,
    }
    accelerator.log(values, step=step)
    steps_done, seconds = done
    left = (total - step) * seconds / max(steps_done, 1)
    log.info(
        f"step {step}/{total} loss {loss:.4f} lr {values['train/lr']:.3e} "
        f"{values['train/samples_per_s']:.1f} samples/s {values['train/tokens_per_s']:.0f} tokens/s "
        f"| {100 * step / total:.0f}% elapsed {duration(seconds)} left {duration(left)}"
    )
    meter.reset()


def duration(seconds: float) -> str:
    """``1h02m`` from an hour on, else ``3m07s``."""
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )
