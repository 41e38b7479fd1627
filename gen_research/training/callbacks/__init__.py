"""Callbacks: EMA, checkpointing, learning-rate monitor, progress bar, sample grids, RNG state.

The LR monitor and the progress bar are Lightning's own classes, registered here under short names; EMA and
checkpointing are Lightning's with one fix each (ema.py, checkpoint.py); we write only what Lightning does not have.
"""

from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar

from gen_research.training.callbacks.checkpoint import RunCheckpoint
from gen_research.training.callbacks.ema import EMA
from gen_research.training.callbacks.evaluation import EvaluationCallback
from gen_research.training.callbacks.rng_state import RandomStateCheckpoint
from gen_research.training.callbacks.sample_grid import SampleGridLogger
from gen_research.training.callbacks.speed import ChannelsLast, CompileNetworks  # noqa: F401  (registers compile, channels_last)
from gen_research.registry import CALLBACKS

CALLBACKS.add("checkpoint", RunCheckpoint, "Lightning's ModelCheckpoint, last.ckpt rewritten at the end of training (the CLI's `checkpoint:` key configures the default one)")
CALLBACKS.add("lr_monitor", LearningRateMonitor, "logs learning rates (added automatically when a logger is on)")
CALLBACKS.add("rich_progress", RichProgressBar, "rich progress bar (added automatically unless trainer.enable_progress_bar=false)")

__all__ = ["EMA", "EvaluationCallback", "RandomStateCheckpoint", "RunCheckpoint", "SampleGridLogger"]
