"""Plain deterministic autoencoder."""

from __future__ import annotations

from typing import Literal

import torch

from gen_research.models.autoencoder.base import AutoencoderBase, per_image_mse
from gen_research.registry import MODELS
from gen_research.training.optimizers import AdamWImplementation


@MODELS.register("ae", "deterministic conv autoencoder, MSE loss (no prior: reconstruct/interpolate only)")
class Autoencoder(AutoencoderBase):
    """Deterministic encoder -> latent -> decoder trained with pixel MSE."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        latent_dim: int = 16,
        channels: list[int] = (32, 64),
        norm: Literal["batch", "group", "none"] = "batch",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer_implementation: AdamWImplementation = "auto",
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
    ) -> None:
        super().__init__(
            image_shape=image_shape,
            num_classes=num_classes,
            latent_dim=latent_dim,
            channels=channels,
            norm=norm,
            lr=lr,
            weight_decay=weight_decay,
            optimizer_implementation=optimizer_implementation,
            warmup_steps=warmup_steps,
            lr_schedule=lr_schedule,
        )

    def compute_losses(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        # Unclamped decoder output in the loss: clamping would zero the gradient of saturated pixels.
        recon = per_image_mse(self.decoder(self.encode(x)), x).mean()
        return {"loss": recon, "recon_loss": recon}
