"""A test-only callback for the SLURM requeue test (tests/slurm/run_requeue_test.sh)."""

from __future__ import annotations

import os
import time

from lightning.pytorch import Callback

PACE_ENV = "SLURM_TEST_PACE_S"  # the test's uninterrupted reference job needs no pauses: it sets 0


class PacedSteps(Callback):
    """Pauses ``seconds`` (or $SLURM_TEST_PACE_S) after every training step, so that the test's USR1 and its
    ``scontrol requeue`` arrive mid-training on a fast or a slow machine. Where the signal is taken is the
    framework's business: gen_research's automatic StepBoundaryRequeue callback defers Lightning's requeue handler
    to a step boundary on all ranks, which is what lets the test require exactly the weights of an uninterrupted run.
    The pause changes no number: the reference job runs without it and must end with the same weights.
    """

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = float(os.environ.get(PACE_ENV, seconds))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.seconds > 0:
            time.sleep(self.seconds)
