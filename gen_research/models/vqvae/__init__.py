"""VQ-VAE family: ``vqvae`` (van den Oord et al. 2017) and ``vq_prior``, an autoregressive prior over its codes."""

from gen_research.models.vqvae import networks, prior, vqvae
from gen_research.models.vqvae.prior import VQPrior
from gen_research.models.vqvae.vqvae import VQVAE

__all__ = ["VQPrior", "VQVAE", "networks", "prior", "vqvae"]
