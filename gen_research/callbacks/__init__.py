"""Callbacks: EMA, checkpointing, learning-rate monitor, progress bar, sample grids, RNG state.

EMA, checkpointing, the LR monitor and the progress bar are Lightning's own classes, registered here
under short names; we write only what Lightning does not have.
"""

from lightning.pytorch.callbacks import (
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)

from gen_research.callbacks.rng_state import RandomStateCheckpoint
from gen_research.callbacks.sample_grid import SampleGridLogger
from gen_research.registry import CALLBACKS

CALLBACKS.add("ema", EMAWeightAveraging, "exponential moving average of weights (Lightning); used for validation, sampling and saved checkpoints")
CALLBACKS.add("checkpoint", ModelCheckpoint, "Lightning's ModelCheckpoint (the CLI's `checkpoint:` key configures the default one)")
CALLBACKS.add("lr_monitor", LearningRateMonitor, "logs learning rates (added automatically when a logger is on)")
CALLBACKS.add("rich_progress", RichProgressBar, "rich progress bar (added automatically unless trainer.enable_progress_bar=false)")

__all__ = ["RandomStateCheckpoint", "SampleGridLogger"]
