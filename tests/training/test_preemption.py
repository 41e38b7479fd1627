"""StepBoundaryRequeue: USR1 reaches Lightning's requeue handler only at the end of a training step, once."""

import os
import signal

import pytest
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from gen_research.training.callbacks.preemption import StepBoundaryRequeue

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")


class SignalMidStep(BoringModel):
    """Sends itself USR1 in the middle of training step 3 (before the optimizer update)."""

    def training_step(self, batch, batch_idx):
        if self.global_step == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().training_step(batch, batch_idx)


class RecordSteps(Callback):
    def __init__(self, log):
        self.events = log

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.events.append(("step end", trainer.global_step))


def test_signal_is_handled_after_the_step_once():
    log = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: log.append(("handler", signum)))
    try:
        trainer = Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, callbacks=[RecordSteps(log), StepBoundaryRequeue()])
        trainer.fit(SignalMidStep())
        handler = signal.getsignal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    calls = [i for i, entry in enumerate(log) if entry[0] == "handler"]
    assert len(calls) == 1 and log[calls[0]] == ("handler", signal.SIGUSR1)
    assert log[calls[0] - 1] == ("step end", 4)  # after the interrupted step completed, not inside it
    assert callable(handler) and not isinstance(getattr(handler, "__self__", None), StepBoundaryRequeue)  # restored


def test_inert_without_a_handler():
    previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        callback = StepBoundaryRequeue()
        trainer = Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, callbacks=[callback])
        trainer.fit(BoringModel())
        assert callback._lightning_handler is None and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, previous)
