"""Diffusion family: importing it registers its models in gen_research.registry.MODELS."""

from gen_research.models.diffusion.ddpm import DDPM, min_snr_weights

__all__ = ["DDPM", "min_snr_weights"]
