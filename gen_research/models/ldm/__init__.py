"""Latent diffusion: the diffusion family in a frozen first stage's latent space (ldm.py), its latent cache and its
stand-alone diffusers pipeline (pipeline_gen_research_ldm.py)."""

from gen_research.models.ldm.ldm import LatentDiffusion

__all__ = ["LatentDiffusion"]
