"""A test-only callback for the SLURM requeue test (tests/slurm/run_requeue_test.sh)."""

from __future__ import annotations

import time

from lightning.pytorch import Callback


class PacedSteps(Callback):
    """Pauses ``seconds`` after every training step, so that the test's USR1 arrives mid-training on a fast or
    a slow machine. Where the signal is taken is the framework's business: gen_research's automatic
    StepBoundaryRequeue callback defers Lightning's requeue handler to a step boundary on all ranks, which is
    what lets the test require exactly the weights of an uninterrupted run.
    """

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
