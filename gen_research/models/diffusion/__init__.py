"""Diffusion family: importing it registers its models in gen_research.registry.MODELS."""

from gen_research.models.diffusion.ddpm import DDPM, min_snr_weights
from gen_research.models.diffusion.noisy_classifier import NoisyClassifier  # noqa: F401  (registers "noisy_classifier")

__all__ = ["DDPM", "min_snr_weights"]
