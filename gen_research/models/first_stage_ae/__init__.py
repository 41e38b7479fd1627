"""First-stage autoencoders for latent diffusion: ``autoencoder_kl`` (diffusers AutoencoderKL) and ``autoencoder_vq``
(diffusers VQModel), trained with CompVis' LPIPS + hinge-PatchGAN loss (losses.py), sharing base.py."""

from gen_research.models.first_stage_ae import base, kl, losses, vq
from gen_research.models.first_stage_ae.kl import KLAutoencoder
from gen_research.models.first_stage_ae.vq import VQAutoencoder

__all__ = ["KLAutoencoder", "VQAutoencoder", "base", "kl", "losses", "vq"]
