"""A test-only second-stage family: a tiny refiner on top of a frozen first stage (any model that Reconstructs).

Written only against public API (the registry decorator, the model contract, gen_research/models/first_stage.py):
``tests/configs/tiny_two_stage.yaml`` names ``tiny_two_stage_first.yaml`` (the tiny VAE) as its stage, so one ``fit``
trains the VAE and then this model (gen_research/config/stages.py).

- ``two_stage_test``: ``reconstruct(x)`` is the frozen first stage's reconstruction plus a residual of two 3x3
  convolutions, clamped to [-1, 1], trained with L1 against the image. Its checkpoint holds the first stage's weights and
  architecture (``first_stage`` hyperparameter), so it loads without the first stage's checkpoint file.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from gen_research.errors import GenResearchError
from gen_research.models.contract import ModelFamily, Reconstructs
from gen_research.models.first_stage import FrozenFirstStage, build_first_stage
from gen_research.registry import MODELS


@MODELS.register("two_stage_test", "test-only: a convolution refining a frozen first stage's reconstructions (L1)")
class TwoStageRefiner(FrozenFirstStage, ModelFamily, LightningModule):
    """Refines the reconstructions of a frozen first stage.

    Args:
        image_shape: (C, H, W) of the images (linked from the data module).
        num_classes: unused; linked from the data module like for every model.
        first_stage_ckpt: the first stage's checkpoint (set by the two-stage experiment's ``stages:``).
        first_stage: the first stage's spec, saved in this model's checkpoint (not set by hand).
        hidden: channels of the residual convolution.
        lr: AdamW learning rate.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        num_classes: int | None = None,
        first_stage_ckpt: str | None = None,
        first_stage: dict[str, Any] | None = None,
        hidden: int = 4,
        lr: float = 1e-2,
    ) -> None:
        super().__init__()
        if hidden < 1 or lr <= 0:
            raise GenResearchError("two_stage_test: hidden must be >= 1 and lr > 0; fix model.init_args")
        first, spec = build_first_stage("two_stage_test", first_stage_ckpt, first_stage, Reconstructs)
        self.save_hyperparameters(ignore=["first_stage"])
        self.hparams["first_stage"] = spec  # rebuilt from this in load_from_checkpoint (no first-stage file needed)
        self.first_stage = first
        channels = int(image_shape[0])
        self.residual = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, channels, 3, padding=1))

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> "TwoStageRefiner":  # type: ignore[override]
        """Lightning's loader, minus ``first_stage_ckpt``: the checkpoint holds the first stage (as DDPM drops init_from)."""
        kwargs.setdefault("first_stage_ckpt", None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def reconstruct(self, images: Tensor) -> Tensor:
        """The first stage's reconstruction, refined; in [-1, 1]."""
        with torch.no_grad():
            base = self.first_stage.reconstruct(images).clamp(-1, 1)
        return (base + self.residual(base)).clamp(-1, 1)

    def _loss(self, batch: dict[str, Tensor]) -> Tensor:
        return (self.reconstruct(batch["image"]) - batch["image"]).abs().mean()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(batch["image"]))
        return loss

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("test/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(batch["image"]))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.residual.parameters(), lr=self.hparams.lr)


__all__ = ["TwoStageRefiner"]
