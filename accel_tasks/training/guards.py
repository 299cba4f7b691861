"""What keeps a training run honest while it runs: stop signals, the launcher's death, non-finite losses.

- SIGTERM or SIGUSR1 (what clusters send before they kill a job) set a flag; the loop writes a checkpoint
  at the next optimizer step and stops with exit status 75, and ``train.resume_from=latest`` continues
  exactly. Every process must agree on the step, so the flag travels with the loss check below.
- A worker started by ``accelerate launch`` (or torchrun) gets SIGTERM when its launcher dies, so killing
  the launcher stops its workers (each leads its own process group and would otherwise train on).
- The first non-finite loss stops the run (exit status 3) before anything is saved or exported. fp16
  steps that the loss scaler skips on purpose have finite losses and are not errors.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
from typing import TYPE_CHECKING

from accel_tasks import log
from accel_tasks.engines.fsdp import local_tensor
from accel_tasks.errors import Interrupted, Preempted

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
OUTSIDE_STEPS = (
    "no checkpoint was written by this stop; run the same command again (with train.resume_from=latest it continues "
    "from the newest checkpoint, or starts from the beginning when there is none)"
)
_PR_SET_PDEATHSIG = 1


def launched() -> bool:
    """Whether this process was started by ``accelerate launch`` or torchrun (a worker of a launcher)."""
    return "LOCAL_RANK" in os.environ or "ACCELERATE_MIXED_PRECISION" in os.environ


def die_with_launcher() -> None:
    """Ask Linux to send this process SIGTERM when its parent (the launcher) dies; launched processes only.

    Also: a launched worker that dies of a fatal signal (SIGABRT, SIGSEGV) prints the Python stack of
    every thread first, so an abort says where it happened instead of only ``exitcode: -6``.
    """
    if not launched() or not hasattr(os, "getppid"):
        return
    if not faulthandler.is_enabled():
        faulthandler.enable()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: the launcher's own signal forwarding is all there is
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)  # the launcher died before the request was in place


def stop_outside_the_steps() -> None:
    """Until the training steps begin (and after them): a stop signal ends the run with one line, its lock released.

    Why: with the default handlers SIGTERM killed a run that was still loading with no word and left its lock, and
    Ctrl-C was a traceback. The exception raised here reaches run.py's one-line handler like any RunStopped.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)


def ignore_stop_signals() -> None:
    """While a run that has ended (or failed) tears down: a stop signal (torchrun stops the other ranks of a failed
    run with SIGTERM) must not turn a clean, one-line ending into a traceback; the process exits with its own
    status in moments anyway."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _raise_stop(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    kind = Interrupted if signum == signal.SIGINT else Preempted
    raise kind(f"stopped by {name} outside the training steps: {OUTSIDE_STEPS}")


class StopRequest:
    """Records a stop signal instead of dying mid-step; the loop polls it at optimizer-step boundaries.

    Ctrl-C (SIGINT) is a stop signal too: the first one checkpoints at the next step (exit 130), a second one
    stops at once (KeyboardInterrupt, exit 130, no checkpoint).
    """

    def __init__(self) -> None:
        self.signal_name: str = ""
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> StopRequest:
        """``with StopRequest() as stop:`` the handlers are in place for the block, the previous ones after it."""
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    def _record(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT and self.signal_name == "SIGINT":
            raise KeyboardInterrupt  # the second Ctrl-C: at once
        if signum == signal.SIGINT:
            log.warning("Ctrl-C: checkpointing at the next step (press it again to stop at once)")
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return bool(self.signal_name)


class StepHealth:
    """Per optimizer step: was any micro-batch loss non-finite on any process, and did any process get a stop signal?

    Micro-batch losses are folded into a device tensor without a sync; one small reduce per optimizer step
    gives every process the same answer, so all of them stop (or checkpoint) at the same step.
    """

    def __init__(self, accelerator: Accelerator) -> None:
        import torch

        self.accelerator = accelerator
        self.bad = torch.zeros((), dtype=torch.float32, device=accelerator.device)
        self.first_bad_loss = torch.zeros((), dtype=torch.float32, device=accelerator.device)

    def add(self, loss: torch.Tensor) -> None:
        import torch

        value = loss.detach().float()
        is_bad = (~torch.isfinite(value)).float()
        # Keep the first non-finite value seen (nan or inf) for the message.
        self.first_bad_loss = torch.where((self.bad == 0) & (is_bad > 0), value, self.first_bad_loss)
        self.bad = torch.maximum(self.bad, is_bad)

    def check(self, stop: StopRequest) -> tuple[bool, bool, float]:
        """(non-finite loss anywhere, stop requested anywhere, a non-finite value seen) for the step just taken."""
        import torch

        local = torch.stack([self.bad, torch.tensor(float(stop.requested), device=self.bad.device)])
        total = self.accelerator.reduce(local, reduction="sum") if self.accelerator.num_processes > 1 else local
        bad, stopping = (float(x) for x in total.tolist())
        value = float(self.first_bad_loss) if self.bad > 0 else float("nan")
        self.bad.zero_()
        return bad > 0, stopping > 0, value


def weights_finite(accelerator: Accelerator, model: torch.nn.Module) -> bool:
    """Whether every weight is finite on every process (under ZeRO-3 and FSDP2 each checks its own partition)."""
    import torch

    finite = True
    for param in model.parameters():
        local = getattr(param, "ds_tensor", None)
        tensor = local if local is not None else local_tensor(param)  # this process's partition or shard
        if tensor.numel() and tensor.is_floating_point() and not bool(torch.isfinite(tensor.detach()).all()):
            finite = False
            break
    flag = torch.tensor(0.0 if finite else 1.0, device=accelerator.device)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, reduction="sum")
    return float(flag) == 0.0
