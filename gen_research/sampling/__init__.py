"""Samplers: ways of drawing images from a trained model; importing registers them in SAMPLERS."""

from gen_research.sampling import prior
from gen_research.sampling import diffusion  # noqa: F401  (registers ddpm, ddim, dpm-solver++, euler, ...)
from gen_research.sampling.prior import PriorSampler

__all__ = ["PriorSampler", "prior"]
