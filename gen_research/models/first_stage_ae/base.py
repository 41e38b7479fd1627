"""What the KL and VQ first-stage autoencoders share: a diffusers encoder/decoder built for the data's image shape,
the perceptual + hinge-PatchGAN loss of CompVis' LPIPSWithDiscriminator (losses.py) trained under manual
optimization with one optimizer per network (gen_research/training/multi_network.py), and seeded validation.

Training follows CompVis/latent-diffusion ``ldm/models/autoencoder.py``: per batch one autoencoder step (optimizer
0), then one discriminator step (optimizer 1), Adam betas (0.5, 0.9) for both. The discriminator is switched on at
``disc_start`` global steps (one step = one batch, see multi_network.py); before it the adversarial factor is 0 and
the discriminator takes no step at all.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning.pytorch as L
import torch
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from gen_research.errors import GenResearchError
from gen_research.models.common import SeededEvaluation, check_number, check_widths
from gen_research.models.contract import ModelFamily
from gen_research.models.first_stage_ae.losses import (
    PerceptualDistance,
    adaptive_gan_weight,
    adversarial_factor,
    generator_adversarial_loss,
    hinge_d_loss,
    pixel_distance,
)
from gen_research.models.translation.networks import NLayerDiscriminator, init_weights_normal, patch_map_size
from gen_research.training.multi_network import MultiNetworkTraining
from gen_research.training.optimizers import build_adamw, optimizer_specs

#: CompVis' optimizers: Adam, betas (0.5, 0.9), the same lr for the autoencoder and the discriminator.
ADAM_BETAS = [0.5, 0.9]


def diffusers_coder_config(owner: str, image_shape: tuple[int, int, int], block_out_channels: list[int], layers_per_block: int,
                           latent_channels: int, norm_num_groups: int, mid_block_attention: bool) -> dict[str, Any]:
    """The keyword arguments AutoencoderKL and VQModel share, checked: one DownEncoderBlock2D per width (each but the
    last halves the side, so the downsampling factor is 2 ** (len(block_out_channels) - 1))."""
    check_widths(owner, "block_out_channels", block_out_channels)
    check_widths(owner, "layers_per_block", layers_per_block)
    check_widths(owner, "latent_channels", latent_channels)
    check_widths(owner, "norm_num_groups", norm_num_groups)
    if bad := [width for width in block_out_channels if width % norm_num_groups]:
        raise GenResearchError(f"{owner}: block_out_channels {bad} are not multiples of model.init_args.norm_num_groups={norm_num_groups}; "
                               "set norm_num_groups to a common divisor of the widths")
    c, h, w = image_shape
    factor = 2 ** (len(block_out_channels) - 1)
    if h % factor or w % factor:
        raise GenResearchError(f"{owner}: image side {h}x{w} is not divisible by the downsampling factor {factor} "
                               f"(2 ** (len(block_out_channels) - 1)); use fewer model.init_args.block_out_channels or resize the data")
    levels = len(block_out_channels)
    return {
        "in_channels": c, "out_channels": c, "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels, "block_out_channels": tuple(block_out_channels),
        "layers_per_block": layers_per_block, "latent_channels": latent_channels, "norm_num_groups": norm_num_groups,
        "sample_size": h, "mid_block_add_attention": mid_block_attention,
    }


def ssim_kernel(side: int) -> int:
    """The SSIM Gaussian window: 11 (the standard) or the largest odd size that fits a smaller image."""
    return 11 if side >= 11 else max(3, side if side % 2 else side - 1)


class FirstStageAutoencoderBase(ModelFamily, MultiNetworkTraining, SeededEvaluation, L.LightningModule):
    """Shared training of ``autoencoder_kl`` and ``autoencoder_vq``; subclasses build ``self.autoencoder`` (the
    diffusers module) and implement :meth:`autoencode` and :meth:`autoencoder_objective`.

    Contract: Reconstructs, FirstStage (and Quantizes for VQ); checkpoints ranked by ``val/rec_loss``."""

    NETWORKS: ClassVar[tuple[str, ...]] = ("autoencoder", "discriminator")
    CHECKPOINT_MONITOR = ("val/rec_loss", "min")
    autoencoder: nn.Module

    def __init__(self, image_shape: tuple[int, int, int], reconstruction_loss: str, perceptual_weight: float,
                 disc_start: int, disc_weight: float, disc_factor: float, disc_layers: int, disc_channels: int,
                 lr: float, optimizers: dict[str, dict[str, Any]] | None) -> None:
        super().__init__()
        name = type(self).__name__.lower()
        self.owner = getattr(self, "REGISTERED_NAME", name)
        if reconstruction_loss not in ("l1", "l2"):
            raise GenResearchError(f"{self.owner}: model.init_args.reconstruction_loss={reconstruction_loss!r} must be l1 or l2")
        check_number(self.owner, "perceptual_weight", perceptual_weight, low=0.0, hint="1.0 (CompVis) or 0 (no LPIPS)")
        check_number(self.owner, "disc_start", disc_start, low=0, hint="a global step, e.g. 50001 (CompVis kl-f4)")
        check_number(self.owner, "disc_weight", disc_weight, low=0.0, hint="0.5 (CompVis' configs)")
        check_number(self.owner, "disc_factor", disc_factor, low=0.0, hint="1.0 (CompVis) or 0 (no adversarial loss)")
        check_widths(self.owner, "disc_layers", disc_layers)
        check_widths(self.owner, "disc_channels", disc_channels)
        check_number(self.owner, "lr", lr, low=0.0, low_inclusive=False, hint="e.g. 4.5e-6 * batch size (CompVis' scaling)")
        c, h, w = image_shape
        if min(patch_map_size(side, disc_layers) for side in (h, w)) < 1:
            raise GenResearchError(f"{self.owner}: a PatchGAN with model.init_args.disc_layers={disc_layers} needs larger images than {h}x{w}; lower disc_layers")
        self.image_shape = (c, h, w)
        self.reconstruction_loss = reconstruction_loss
        self.perceptual_weight = perceptual_weight
        self.disc_start, self.disc_weight, self.disc_factor = disc_start, disc_weight, disc_factor
        # taming's discriminator: NLayerDiscriminator with BatchNorm and normal(0, 0.02) weights.
        self.discriminator = NLayerDiscriminator(c, ndf=disc_channels, n_layers=disc_layers, norm="batch")
        self.discriminator.apply(init_weights_normal)
        self.perceptual = PerceptualDistance(self.owner)  # outside the module tree: not saved, not optimised
        defaults = {network: {"lr": lr, "betas": ADAM_BETAS} for network in self.NETWORKS}
        self.optimizer_specs = optimizer_specs(optimizers, self.NETWORKS, defaults=defaults)

    # ---- what a subclass provides -----------------------------------------------------------------
    def autoencode(self, images: Tensor, generator: torch.Generator | None) -> tuple[Tensor, dict[str, Tensor]]:
        """(raw reconstructions, the regulariser's terms) of a training or evaluation pass."""
        raise NotImplementedError

    def autoencoder_objective(self, rec_loss: Tensor, terms: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(loss before the adversarial term, the nll the adaptive weight balances against, scalars to log) from the
        per-pixel reconstruction loss (pixel distance + perceptual_weight * LPIPS)."""
        raise NotImplementedError

    def trained_with(self, network: str) -> list[nn.Parameter]:
        """Parameters outside a network's submodule that its optimizer also updates (the KL loss' logvar)."""
        return []

    def reconstruct(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    # ---- training -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.perceptual_weight > 0:
            self.perceptual.load()  # a missing backbone fails here in one line, before any step

    def decoder_last_layer(self) -> Tensor:
        """The weight the adaptive GAN weight is measured at: the decoder's ``conv_out`` (CompVis' ``get_last_layer``)."""
        return self.autoencoder.decoder.conv_out.weight

    def reconstruction_term(self, images: Tensor, reconstructions: Tensor) -> Tensor:
        """CompVis' ``rec_loss``: |x - x_hat| (or squared) + perceptual_weight * LPIPS, per pixel."""
        rec_loss = pixel_distance(images, reconstructions, self.reconstruction_loss)
        if self.perceptual_weight > 0:
            rec_loss = rec_loss + self.perceptual_weight * self.perceptual(images, reconstructions)
        return rec_loss

    def adversarial_factor(self) -> float:
        return adversarial_factor(self.global_step, self.disc_start, self.disc_factor)

    def training_iteration(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images = batch["image"]
        factor = self.adversarial_factor()
        logged: dict[str, Tensor] = {}
        reconstructions: list[Tensor] = []

        def autoencoder_loss() -> Tensor:
            recon, terms = self.autoencode(images, None)  # global RNG: part of the checkpointed training stream
            reconstructions.append(recon.detach())
            loss, nll, scalars = self.autoencoder_objective(self.reconstruction_term(images, recon), terms)
            logged.update(scalars)
            if factor > 0:  # the discriminator's parameters do not require gradients here (step_network toggles)
                g_loss = generator_adversarial_loss(self.discriminator(recon))
                d_weight = adaptive_gan_weight(nll, g_loss, self.decoder_last_layer(), self.disc_weight)
                loss = loss + d_weight * factor * g_loss
                logged.update({"g_loss": g_loss.detach(), "d_weight": d_weight})
            return loss

        logged["loss"] = self.step_network("autoencoder", autoencoder_loss)
        if factor > 0:
            # On the reconstruction of the autoencoder step (CompVis recomputes it after that step: one more forward).
            fake = reconstructions[0]
            logged["disc_loss"] = self.step_network("discriminator", lambda: factor * hinge_d_loss(self.discriminator(images.detach()), self.discriminator(fake)))
        self.log_dict({f"train/{key}": value for key, value in logged.items()}, prog_bar=False, batch_size=len(images))
        return logged

    def configure_optimizers(self) -> list[dict[str, Any]]:
        """One Adam(W) per network (weight decay 0 by default: Adam, as CompVis), its own parameters plus
        :meth:`trained_with`; the frozen LPIPS network is in none."""
        configured = []
        for network, spec in self.optimizer_specs.items():
            parameters = [*self.network(network).parameters(), *self.trained_with(network)]
            optimizer, scheduler = build_adamw(parameters, spec, self)
            configured.append({"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": f"lr-{network}"}})
        return configured

    # ---- validation and test ------------------------------------------------------------------------
    def evaluation_metrics(self, images: Tensor) -> dict[str, Tensor]:
        """L1 reconstruction loss, PSNR and SSIM (images mapped to [0, 1]) and the regulariser's terms, with the
        randomness (posterior samples) drawn from the seeded evaluation generator."""
        recon, terms = self.autoencode(images, self.eval_generator())
        recon = recon.float().clamp(-1.0, 1.0)
        target = images.float()
        predicted, real = (recon + 1) / 2, (target + 1) / 2
        # Outside autocast: the metrics in fp32 whatever the training precision (SSIM's Gaussian filter is a conv2d,
        # which bf16-mixed would run in bf16). SSIM still moves between epochs more than PSNR does: on digits' flat
        # black background small decoder noise lowers it a lot (seen: 0.73 to 0.94 between epochs 2 and 3 in fp32).
        with torch.autocast(device_type=images.device.type, enabled=False):
            metrics = {
                "rec_loss": (target - recon).abs().mean(),
                "psnr": peak_signal_noise_ratio(predicted, real, data_range=1.0, dim=(1, 2, 3)),
                "ssim": structural_similarity_index_measure(predicted, real, data_range=1.0, kernel_size=ssim_kernel(min(images.shape[-2:]))),
            }
        metrics.update({key: value.detach().float() for key, value in terms.items()})
        return metrics

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        images = batch["image"]
        metrics = self.evaluation_metrics(images)
        self.log_dict({f"{stage}/{key}": value for key, value in metrics.items()}, prog_bar=stage == "val", on_epoch=True,
                      sync_dist=True, batch_size=len(images))
        return metrics

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test")

    def forward(self, images: Tensor) -> Tensor:
        return self.reconstruct(images)


__all__ = ["ADAM_BETAS", "FirstStageAutoencoderBase", "diffusers_coder_config", "ssim_kernel"]
