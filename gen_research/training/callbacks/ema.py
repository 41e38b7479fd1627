"""EMA of weights: Lightning's EMAWeightAveraging, with one fix for checkpoints written after training ends, the
average of one chosen submodule (``target: generator``) for families that train several networks, and a decay set as
a half-life in thousands of images (NVlabs' StyleGAN2/ADA ``ema_kimg``/``ema_rampup``) that holds at any batch size."""

from __future__ import annotations

import math
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


def ema_beta(
    batch_size: int,
    half_life_kimg: float,
    images_seen: int | None = None,
    rampup: float | None = None,
) -> float:
    """The per-step decay of G's EMA for a half-life given in thousands of images, as NVlabs' stylegan2-ada.

    ``beta = 0.5 ** (batch_size / ema_nimg)`` with ``ema_nimg = half_life_kimg * 1000``, so the EMA forgets half
    of its past after ``half_life_kimg`` thousand images whatever the batch size (a per-step constant such as
    rosinality's ``0.5 ** (32 / 10000)`` is right only for the batch 32 it was tuned at). With ``rampup``, the
    half-life is at most ``images_seen * rampup`` (NVlabs' ``ema_rampup``, 0.05 in the cifar config), so early
    weights, which are far from the final ones, are forgotten quickly.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GenResearchError(f"EMA: batch_size={batch_size!r} must be a positive integer")
    if not (isinstance(half_life_kimg, (int, float)) and math.isfinite(half_life_kimg) and half_life_kimg >= 0):
        raise GenResearchError(
            f"EMA half-life {half_life_kimg!r} kimg must be a finite number >= 0 (NVlabs: 10 to 500)"
        )
    ema_nimg = half_life_kimg * 1000.0
    if rampup is not None:
        if not (math.isfinite(rampup) and rampup > 0):
            raise GenResearchError(f"EMA rampup={rampup!r} must be a positive number or null (NVlabs' cifar: 0.05)")
        if images_seen is None or images_seen < 0:
            raise ValueError(f"ema_beta: a rampup needs images_seen >= 0, got {images_seen!r}")
        ema_nimg = min(ema_nimg, images_seen * rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


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

    ``half_life_kimg`` replaces the fixed ``decay`` (0.999 when unset; setting both is an error) by NVlabs'
    StyleGAN2/ADA rule: each update uses ``beta = ema_beta(images per update, half_life_kimg, images_seen, rampup)``,
    i.e. ``0.5 ** (images per update / min(half_life_kimg * 1000, images_seen * rampup))``, so the average forgets
    half of its past every ``half_life_kimg`` thousand images at any batch size; ``warmup`` is not used (the ramp
    does that job). Images per step: the data module's nominal ``batch_size`` (else the training loader's) x world
    size x ``accumulate_grad_batches``, the same every step (a short last batch of an epoch counts as full); images
    per update: that x ``update_every_n_steps``; ``images_seen``: the count before the update's step,
    ``(global_step - 1) * images per step`` (NVlabs' ``cur_nimg``). The first update copies (beta 0). All of it
    follows from ``global_step``, so a resume continues the exact sequence with nothing extra saved. With a logger
    on, each update logs the beta it used as ``ema/beta``.
    """

    def __init__(
        self,
        decay: float | None = None,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        warmup: bool = True,
        use_buffers: bool = True,
        target: str | None = None,
        half_life_kimg: float | None = None,
        rampup: float | None = None,
    ) -> None:
        if half_life_kimg is not None:
            if decay is not None:
                raise GenResearchError(f"ema: set decay ({decay}, per update) or half_life_kimg ({half_life_kimg}, in thousands of images), not both")
            if update_starting_at_epoch is not None:
                raise GenResearchError("ema: half_life_kimg counts the images of step updates; drop update_starting_at_epoch (it adds per-epoch updates)")
            ema_beta(1, half_life_kimg, images_seen=0, rampup=rampup)  # a bad half-life or ramp fails now, not at step 1
        elif rampup is not None:
            raise GenResearchError(f"ema: rampup={rampup} ramps a half-life; set half_life_kimg too, or drop rampup")
        self.decay = 0.999 if decay is None else decay
        self.half_life_kimg = half_life_kimg
        self.rampup = rampup
        self._beta = 0.0  # the beta of the coming update in half-life mode, set before each update
        # EMAWeightAveraging.__init__ would fix avg_fn to a plain EMA; keep its update schedule, swap the average.
        average = self._half_life_update if half_life_kimg is not None else partial(warmup_ema_update, decay=self.decay, warmup=warmup)
        WeightAveraging.__init__(self, use_buffers=use_buffers, avg_fn=average)
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

    # ---- the half-life: beta from images, not steps ----------------------------------------------------
    def _half_life_update(self, averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        return self._beta * averaged + (1.0 - self._beta) * current

    @staticmethod
    def images_per_step(trainer: pl.Trainer) -> int:
        """Images one optimizer step trains on, over all processes: nominal batch size x world size x accumulation."""
        batch_size = getattr(trainer.datamodule, "batch_size", None)
        if batch_size is None:
            batch_size = getattr(trainer.train_dataloader, "batch_size", None)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise GenResearchError(
                f"ema half_life_kimg: no integer batch size on the data module or training loader (got {batch_size!r}); "
                "give the data module a batch_size"
            )
        return batch_size * trainer.world_size * trainer.accumulate_grad_batches

    def half_life_beta(self, trainer: pl.Trainer) -> float:
        """The beta of an update after optimizer step ``trainer.global_step`` (the first step is 1)."""
        assert self.half_life_kimg is not None
        per_step = self.images_per_step(trainer)
        images_seen = max(trainer.global_step - 1, 0) * per_step
        return ema_beta(per_step * max(self.update_every_n_steps, 1), self.half_life_kimg, images_seen=images_seen, rampup=self.rampup)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.half_life_kimg is not None:
            first = self._average_model is not None and int(self._average_model.n_averaged) == 0
            self._beta = 0.0 if first else self.half_life_beta(trainer)  # the first update copies: beta 0 in effect
        updates_before = self._latest_update_step
        # Lightning's update reads pl_module only to average it: hand it the target.
        super().on_train_batch_end(trainer, self.averaged_module(pl_module), outputs, batch, batch_idx)  # type: ignore[arg-type]
        if self.half_life_kimg is not None and self._latest_update_step != updates_before and trainer.loggers:
            pl_module.log("ema/beta", self._beta, on_step=True, on_epoch=False)

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
