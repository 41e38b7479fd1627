"""EMA of weights: Lightning's EMAWeightAveraging, with one fix for checkpoints written after training ends, and
the average of one chosen submodule (``target: generator``) for families that train several networks."""

from __future__ import annotations

from copy import deepcopy
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging
from torch import nn
from torch.optim.swa_utils import AveragedModel

from gen_research.errors import GenResearchError
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

    ``target`` names the submodule to average (``generator`` of a GAN); None averages the whole model. With a
    target only that submodule's parameters (and buffers, with ``use_buffers``) are averaged and swapped in for
    validation and at the end of fit; the other networks (a discriminator) keep their training weights. A
    checkpoint's ``state_dict`` then holds the averaged target beside the others' training weights (what
    ``sample``/``evaluate`` load), ``current_model_state`` the training weights of all, and a resume restores both
    exactly. Update cadence (``update_every_n_steps``, ``update_starting_at_step``) counts training steps, i.e.
    batches, also for several optimizers (gen_research/training/multi_network.py).
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        warmup: bool = True,
        use_buffers: bool = True,
        target: str | None = None,
    ) -> None:
        # EMAWeightAveraging.__init__ would fix avg_fn to a plain EMA; keep its update schedule, swap the average.
        WeightAveraging.__init__(self, use_buffers=use_buffers, avg_fn=partial(warmup_ema_update, decay=decay, warmup=warmup))
        self.decay = decay
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch
        self.target = target
        self._training_weights_at_end: dict[str, Any] | None = None

    # ---- the averaged module: the whole model, or its submodule ``target`` ------------------------------
    def averaged_module(self, pl_module: pl.LightningModule) -> nn.Module:
        """The module whose weights are averaged; an unknown ``target`` lists the model's submodules."""
        if self.target is None:
            return pl_module
        module = dict(pl_module.named_children()).get(self.target)
        if module is None:
            children = ", ".join(name for name, _ in pl_module.named_children()) or "none"
            raise GenResearchError(f"ema target {self.target!r}: {type(pl_module).__name__} has no such submodule; its submodules are {children}")
        return module

    def _prefix(self) -> str:
        return "" if self.target is None else self.target + "."

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        module = self.averaged_module(pl_module)  # checked in every stage: a wrong target fails before any work
        if self.target is None:
            super().setup(trainer, pl_module, stage)
        elif stage == "fit":
            self._average_model = AveragedModel(model=module, device=self._device or pl_module.device, use_buffers=self._use_buffers, **self._kwargs)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning's update reads pl_module only to average it: hand it the target.
        super().on_train_batch_end(trainer, self.averaged_module(pl_module), outputs, batch, batch_idx)  # type: ignore[arg-type]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, self.averaged_module(pl_module))  # type: ignore[arg-type]

    def _swap_models(self, pl_module: pl.LightningModule) -> None:
        super()._swap_models(self.averaged_module(pl_module))  # type: ignore[arg-type]

    def _copy_average_to_current(self, pl_module: pl.LightningModule) -> None:
        super()._copy_average_to_current(self.averaged_module(pl_module))  # type: ignore[arg-type]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training_weights_at_end = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.target is None or self._average_model is None:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
        else:  # the target's keys of state_dict hold the average, the other networks' their training weights
            average = self._average_model.state_dict()
            checkpoint["current_model_state"] = checkpoint["state_dict"]
            checkpoint["state_dict"] = {**checkpoint["state_dict"], **{self._prefix() + k[7:]: v for k, v in average.items() if k.startswith("module.")}}
            checkpoint["averaging_state"] = {k: v for k, v in average.items() if not k.startswith("module.")}
        if self._training_weights_at_end is not None and "current_model_state" in checkpoint:
            checkpoint["current_model_state"] = self._training_weights_at_end

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.target is None or self._average_model is None:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
            return
        prefix = self._prefix()
        target_state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        if "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            self._average_model.load_state_dict({**{"module." + k: v for k, v in target_state.items()}, **checkpoint["averaging_state"]})
            pl_module.load_state_dict(checkpoint["current_model_state"])
        else:  # a checkpoint written without EMA: start the average from its weights
            self._average_model.module.load_state_dict(deepcopy(target_state), strict=False)
