"""Diffusion family: importing it registers its models in gen_research.registry.MODELS."""

from gen_research.models.diffusion.ddpm import DDPM, min_snr_weights
from gen_research.models.diffusion.noisy_classifier import NoisyClassifier

__all__ = ["DDPM", "NoisyClassifier", "min_snr_weights"]
