"""``autoencoder_kl``: CompVis' KL-regularised first stage (latent-diffusion ``ldm/models/autoencoder.py``
AutoencoderKL with ``ldm/modules/losses/contperceptual.py`` LPIPSWithDiscriminator), on diffusers' AutoencoderKL so
the trained network is a diffusers component as it stands."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL
from torch import Tensor, nn

from gen_research.models.common import check_number
from gen_research.models.first_stage_ae.base import FirstStageAutoencoderBase, diffusers_coder_config
from gen_research.models.first_stage_ae.losses import ReconstructionLoss, kl_nll, posterior_kl
from gen_research.registry import MODELS


@MODELS.register("autoencoder_kl", "KL first-stage autoencoder (diffusers AutoencoderKL; L1 + LPIPS, KL 1e-6, hinge PatchGAN from disc_start)")
class KLAutoencoder(FirstStageAutoencoderBase):
    """A diffusers AutoencoderKL trained with CompVis' loss: nll = rec / exp(logvar) + logvar (one learned logvar),
    kl_weight * KL(q(z|x) || N(0, I)), and the adaptive-weight hinge GAN term from ``disc_start``.

    Contract: Reconstructs (through the posterior mean), FirstStage (``encode_moments`` = the posterior's mean and
    std, ``decode_latents``, ``diffusers_autoencoder``). The latent scale factor is the LDM's business: the diffusers
    config keeps its default ``scaling_factor``.
    """

    REGISTERED_NAME = "autoencoder_kl"

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        block_out_channels: list[int] = (32, 64, 64),
        layers_per_block: int = 1,
        latent_channels: int = 4,
        norm_num_groups: int = 16,
        mid_block_attention: bool = True,
        reconstruction_loss: ReconstructionLoss = "l1",
        perceptual_weight: float = 1.0,
        kl_weight: float = 1e-6,
        logvar_init: float = 0.0,
        disc_start: int = 50001,
        disc_weight: float = 0.5,
        disc_factor: float = 1.0,
        disc_layers: int = 3,
        disc_channels: int = 64,
        # CompVis' base_learning_rate; its main.py multiplies it by batch size x GPUs (x accumulation): give that product here.
        lr: float = 4.5e-6,
        optimizers: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(image_shape, reconstruction_loss, perceptual_weight, disc_start, disc_weight, disc_factor,
                         disc_layers, disc_channels, lr, optimizers)
        check_number(self.owner, "kl_weight", kl_weight, low=0.0, hint="1e-6 (CompVis)")
        check_number(self.owner, "logvar_init", logvar_init, hint="0.0 (CompVis)")
        self.save_hyperparameters()
        self.hparams.block_out_channels = list(block_out_channels)
        config = diffusers_coder_config(self.owner, self.image_shape, list(block_out_channels), layers_per_block, latent_channels,
                                        norm_num_groups, mid_block_attention)
        self.autoencoder = AutoencoderKL(**config)
        factor = 2 ** (len(block_out_channels) - 1)
        self.latent_shape = (latent_channels, self.image_shape[1] // factor, self.image_shape[2] // factor)
        self.kl_weight = kl_weight
        # CompVis' learned scalar log-variance. Its configure_optimizers leaves it out (there it stays at its init);
        # here the autoencoder's optimizer trains it, as the loss is written to.
        self.logvar = nn.Parameter(torch.full((), float(logvar_init)))

    # ---- the contract: FirstStage, Reconstructs -----------------------------------------------------
    def posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, logvar) of q(z | x), logvar clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution."""
        distribution = self.autoencoder.encode(images).latent_dist
        return distribution.mean, distribution.logvar

    def encode_moments(self, images: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.posterior(images)
        return mean, torch.exp(0.5 * logvar)

    def decode_latents(self, z: Tensor) -> Tensor:
        return self.autoencoder.decode(z).sample.clamp(-1.0, 1.0)

    def diffusers_autoencoder(self) -> AutoencoderKL:
        return self.autoencoder.eval()

    def reconstruct(self, images: Tensor) -> Tensor:
        """The decoded posterior mean (deterministic: what reconstruction metrics and rFID compare)."""
        return self.decode_latents(self.posterior(images)[0])

    # ---- training -------------------------------------------------------------------------------------
    def trained_with(self, network: str) -> list[nn.Parameter]:
        return [self.logvar] if network == "autoencoder" else []

    def autoencode(self, images: Tensor, generator: torch.Generator | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Decode a posterior sample z = mean + std * noise (noise from ``generator``; None: the global RNG)."""
        mean, logvar = self.posterior(images)
        device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype).to(mean.device)
        z = mean + torch.exp(0.5 * logvar) * noise
        return self.autoencoder.decode(z).sample, {"kl_loss": posterior_kl(mean, logvar)}

    def autoencoder_objective(self, rec_loss: Tensor, terms: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        nll = kl_nll(rec_loss, self.logvar)
        loss = nll + self.kl_weight * terms["kl_loss"]
        scalars = {"rec_loss": rec_loss.detach().mean(), "kl_loss": terms["kl_loss"].detach(), "nll_loss": nll.detach(),
                   "logvar": self.logvar.detach().clone()}
        return loss, nll, scalars

    def evaluation_metrics(self, images: Tensor) -> dict[str, Tensor]:
        metrics = super().evaluation_metrics(images)
        metrics["kl"] = metrics.pop("kl_loss")  # val/kl: per-image KL of the posterior, nats
        return metrics


__all__ = ["KLAutoencoder"]
