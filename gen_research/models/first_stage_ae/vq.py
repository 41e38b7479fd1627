"""``autoencoder_vq``: taming-transformers' VQGAN first stage (``taming/models/vqgan.py`` with
``taming/modules/losses/vqperceptual.py`` VQLPIPSWithDiscriminator), on diffusers' VQModel so the trained network is a
diffusers component as it stands."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import VQModel
from torch import Tensor

from gen_research.models.common import check_number, check_widths
from gen_research.models.first_stage_ae.base import FirstStageAutoencoderBase, diffusers_coder_config
from gen_research.models.first_stage_ae.losses import ReconstructionLoss
from gen_research.registry import MODELS


@MODELS.register("autoencoder_vq", "VQ first-stage autoencoder (diffusers VQModel; L1 + LPIPS, codebook loss, hinge PatchGAN from disc_start)")
class VQAutoencoder(FirstStageAutoencoderBase):
    """A diffusers VQModel trained with taming's loss: mean(|x - x_hat| + perceptual_weight * LPIPS) +
    codebook_weight * (codebook + beta * commitment) + the adaptive-weight hinge GAN term from ``disc_start``.

    Contract: Reconstructs, FirstStage (``encode_moments``: the latents after quant_conv, before quantisation, with
    std zeros; ``decode_latents`` quantises then decodes, VQModel.decode's path), Quantizes (``encode_codes``: the
    quantizer's nearest-code indices; ``decode_codes``: codebook vectors, then the decoder).
    """

    REGISTERED_NAME = "autoencoder_vq"

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        block_out_channels: list[int] = (32, 64, 64),
        layers_per_block: int = 1,
        latent_channels: int = 4,
        norm_num_groups: int = 16,
        mid_block_attention: bool = True,
        num_vq_embeddings: int = 256,
        vq_embed_dim: int | None = None,
        beta: float = 0.25,
        codebook_weight: float = 1.0,
        reconstruction_loss: ReconstructionLoss = "l1",
        perceptual_weight: float = 1.0,
        disc_start: int = 0,  # CompVis' vq-f4 config (first_stage_models/vq-f4): disc_start 0, disc_weight 0.75
        disc_weight: float = 0.75,
        disc_factor: float = 1.0,
        disc_layers: int = 3,
        disc_channels: int = 64,
        # taming's base_learning_rate; its main.py multiplies it by batch size x GPUs (x accumulation): give that product here.
        lr: float = 4.5e-6,
        optimizers: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(image_shape, reconstruction_loss, perceptual_weight, disc_start, disc_weight, disc_factor,
                         disc_layers, disc_channels, lr, optimizers)
        check_widths(self.owner, "num_vq_embeddings", num_vq_embeddings)
        if vq_embed_dim is not None:
            check_widths(self.owner, "vq_embed_dim", vq_embed_dim)
        check_number(self.owner, "beta", beta, low=0.0, hint="0.25 (van den Oord et al. 2017)")
        check_number(self.owner, "codebook_weight", codebook_weight, low=0.0, hint="1.0 (taming)")
        self.save_hyperparameters()
        self.hparams.block_out_channels = list(block_out_channels)
        config = diffusers_coder_config(self.owner, self.image_shape, list(block_out_channels), layers_per_block, latent_channels,
                                        norm_num_groups, mid_block_attention)
        self.autoencoder = VQModel(**config, num_vq_embeddings=num_vq_embeddings, vq_embed_dim=vq_embed_dim)
        # diffusers' VectorQuantizer keeps taming's legacy=True default, which puts beta on the codebook term instead
        # of the commitment term; legacy=False is van den Oord et al.'s loss: ||sg[z_q] - z||^2 * beta + ||z_q - sg[z]||^2.
        # (Only the loss changes: a save_pretrained copy reloads with legacy=True but gives the same codes and images.)
        self.autoencoder.quantize.legacy = False
        self.autoencoder.quantize.beta = beta
        self.codebook_weight = codebook_weight
        self.codebook_size = num_vq_embeddings
        factor = 2 ** (len(block_out_channels) - 1)
        self.code_grid = (self.image_shape[1] // factor, self.image_shape[2] // factor)
        self.latent_shape = (vq_embed_dim or latent_channels, *self.code_grid)

    # ---- the contract: FirstStage, Quantizes, Reconstructs -----------------------------------------
    def encode_moments(self, images: Tensor) -> tuple[Tensor, Tensor]:
        latents = self.autoencoder.encode(images).latents
        return latents, torch.zeros_like(latents)

    def decode_latents(self, z: Tensor) -> Tensor:
        return self.autoencoder.decode(z).sample.clamp(-1.0, 1.0)

    def diffusers_autoencoder(self) -> VQModel:
        return self.autoencoder.eval()

    def encode_codes(self, images: Tensor) -> Tensor:
        latents = self.autoencoder.encode(images).latents
        _, _, (_, _, indices) = self.autoencoder.quantize(latents)
        return indices.reshape(len(images), *self.code_grid).long()

    def decode_codes(self, codes: Tensor) -> Tensor:
        shape = (len(codes), *self.code_grid, self.latent_shape[0])  # (batch, height, width, channel), as get_codebook_entry takes
        quantized = self.autoencoder.quantize.get_codebook_entry(codes.reshape(-1).long(), shape)
        return self.autoencoder.decode(quantized, force_not_quantize=True).sample.clamp(-1.0, 1.0)

    def reconstruct(self, images: Tensor) -> Tensor:
        return self.decode_latents(self.encode_moments(images)[0])

    # ---- training -------------------------------------------------------------------------------------
    def autoencode(self, images: Tensor, generator: torch.Generator | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Quantise (straight-through) and decode; the quantizer's loss and the codebook perplexity of the batch."""
        latents = self.autoencoder.encode(images).latents
        quantized, quantizer_loss, (_, _, indices) = self.autoencoder.quantize(latents)
        reconstructions = self.autoencoder.decode(quantized, force_not_quantize=True).sample
        counts = torch.bincount(indices.reshape(-1), minlength=self.codebook_size).float()
        probabilities = counts / counts.sum()
        perplexity = torch.exp(-(probabilities * torch.log(probabilities + 1e-10)).sum())
        return reconstructions, {"quant_loss": quantizer_loss.float(), "perplexity": perplexity.detach()}

    def autoencoder_objective(self, rec_loss: Tensor, terms: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        nll = rec_loss.mean()  # taming: nll_loss = mean(rec_loss)
        loss = nll + self.codebook_weight * terms["quant_loss"]
        scalars = {"rec_loss": nll.detach(), "quant_loss": terms["quant_loss"].detach(), "perplexity": terms["perplexity"]}
        return loss, nll, scalars


__all__ = ["VQAutoencoder"]
