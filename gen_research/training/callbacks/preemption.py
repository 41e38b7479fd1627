"""Take SLURM's preemption signal (USR1) at a training-step boundary, on every rank at the same step.

Lightning's SLURM support (``SLURMEnvironment(auto_requeue=True)``) saves an HPC checkpoint and requeues the job
from inside the USR1 signal handler, i.e. wherever the main thread happens to be: possibly between a step's
optimizer update and its EMA update, or with one DDP rank a step ahead of another. A checkpoint taken there
does not describe one well-defined step, and the requeued run would not end with the weights of an
uninterrupted one. This callback only notes the signal and calls Lightning's own handler at the end of the next
training step (one batch: after all its optimizer steps when a family trains several networks,
gen_research/training/multi_network.py), once all ranks agree (one scalar all-reduce every ``sync_every_n_steps`` steps under DDP;
single-process runs need none). tests/slurm/ checks the result on a real SLURM cluster: the requeued run ends
with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import signal
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class StepBoundaryRequeue(Callback):
    """Defers Lightning's USR1 (requeue) handler to a step boundary; inert unless such a handler is installed."""

    def __init__(self, sync_every_n_steps: int = 10) -> None:
        self.sync_every_n_steps = sync_every_n_steps
        self._received = False
        self._lightning_handler: Any = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not hasattr(signal, "SIGUSR1"):  # Windows
            return
        current = signal.getsignal(signal.SIGUSR1)
        if callable(current):  # Lightning registers one under SLURM with auto-requeue
            self._lightning_handler = current
            signal.signal(signal.SIGUSR1, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        self._received = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._lightning_handler is None:
            return
        if trainer.world_size > 1:
            if trainer.global_step % self.sync_every_n_steps:
                return
            # ranks decide together: one may have seen the signal just before the step ended, another just after
            flag = torch.tensor(float(self._received), device=pl_module.device)
            received = bool(trainer.strategy.reduce(flag, reduce_op="sum") > 0)
        else:
            received = self._received
        if received:
            self._received = False
            self._lightning_handler(signal.SIGUSR1, None)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._lightning_handler is not None:
            signal.signal(signal.SIGUSR1, self._lightning_handler)
            self._lightning_handler = None


__all__ = ["StepBoundaryRequeue"]
