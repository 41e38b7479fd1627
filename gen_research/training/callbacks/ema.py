"""EMA of weights: Lightning's EMAWeightAveraging, with one fix for checkpoints written after training ends."""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging

from gen_research.registry import CALLBACKS


def warmup_ema_update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor, decay: float, warmup: bool) -> torch.Tensor:
    """One EMA step. With warm-up the decay is min(decay, (1 + n) / (10 + n)) after n updates (as in timm and
    TensorFlow's ExponentialMovingAverage): early averages are not dominated by the random initialisation."""
    n = float(num_averaged)
    effective = min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay
    return effective * averaged + (1.0 - effective) * current


@CALLBACKS.register("ema", "exponential moving average of weights; used for validation and sampling, saved in checkpoints, restored on resume")
class EMA(EMAWeightAveraging):
    """Lightning's EMA callback (swaps EMA weights in for validation; checkpoints hold EMA weights as
    ``state_dict`` and the training weights as ``current_model_state``; restored on resume).

    At the end of fit Lightning copies the EMA weights into the model, and ModelCheckpoint may then
    write ``last.ckpt`` once more: that file would record the EMA weights as the training weights, and a
    run continued from it would silently restart from the average. We keep the true training weights
    for any checkpoint written after that point. ``warmup`` adds the usual decay warm-up.
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        warmup: bool = True,
        use_buffers: bool = True,
    ) -> None:
        # EMAWeightAveraging.__init__ would fix avg_fn to a plain EMA; keep its update schedule, swap the average.
        WeightAveraging.__init__(self, use_buffers=use_buffers, avg_fn=partial(warmup_ema_update, decay=decay, warmup=warmup))
        self.decay = decay
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch
        self._training_weights_at_end: dict[str, Any] | None = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training_weights_at_end = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._training_weights_at_end is not None and "current_model_state" in checkpoint:
            checkpoint["current_model_state"] = self._training_weights_at_end
