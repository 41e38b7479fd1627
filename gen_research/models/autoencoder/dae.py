"""Denoising autoencoder: reconstruct the clean image from a corrupted copy."""

from __future__ import annotations

from typing import Literal

import torch

from gen_research.models.autoencoder.base import AutoencoderBase, per_image_mse
from gen_research.models.common import check_number
from gen_research.registry import MODELS
from gen_research.training.optimizers import AdamWImplementation


@MODELS.register("dae", "denoising conv autoencoder (gaussian or mask corruption), MSE to the clean image")
class DenoisingAutoencoder(AutoencoderBase):
    """Autoencoder trained to map corrupted images (gaussian noise or masked pixels) back to clean ones."""

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
        corruption: Literal["gaussian", "mask"] = "gaussian",
        noise_std: float = 0.3,
        mask_fraction: float = 0.3,
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
        check_number("dae", "noise_std", noise_std, low=0.0, hint="a noise level >= 0, e.g. 0.3")
        check_number("dae", "mask_fraction", mask_fraction, low=0.0, high=1.0, high_inclusive=False, hint="a fraction in [0, 1), e.g. 0.3")
        self.corruption = corruption
        self.noise_std = noise_std
        self.mask_fraction = mask_fraction

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Corrupted copy of ``x`` in [-1, 1]; noise from ``generator`` (global RNG when None)."""
        device = generator.device if generator is not None else x.device
        if self.corruption == "gaussian":
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
            return (x + self.noise_std * noise).clamp(-1.0, 1.0)
        # Mask: each pixel (all channels of it) goes black (-1) with probability mask_fraction.
        u = torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=device).to(x.device)
        return x.masked_fill(u < self.mask_fraction, -1.0)

    def compute_losses(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        denoise = per_image_mse(self.decoder(self.encode(self.corrupt(x, generator))), x).mean()
        return {"loss": denoise, "recon_loss": denoise}

    def eval_metrics(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        metrics = self.compute_losses(x, generator)
        # recon_loss: clean image in, clean target out, comparable with the plain autoencoder's.
        metrics["recon_loss"] = per_image_mse(self.reconstruct(x), x).mean()
        metrics["denoise_loss"] = metrics["loss"]
        return metrics
