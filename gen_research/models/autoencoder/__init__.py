"""Autoencoder family: ae (deterministic), dae (denoising), vae (variational)."""

from gen_research.models.autoencoder import ae, base, dae, vae
from gen_research.models.autoencoder.ae import Autoencoder
from gen_research.models.autoencoder.base import AutoencoderBase, holdout_auroc
from gen_research.models.autoencoder.dae import DenoisingAutoencoder
from gen_research.models.autoencoder.vae import VAE

__all__ = ["VAE", "Autoencoder", "AutoencoderBase", "DenoisingAutoencoder", "ae", "base", "dae", "holdout_auroc", "vae"]
