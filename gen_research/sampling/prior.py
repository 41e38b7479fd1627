"""Ancestral sampling from a model's latent prior."""

from __future__ import annotations

import torch
from torch import nn

from gen_research.errors import GenResearchError
from gen_research.registry import SAMPLERS


@SAMPLERS.register("prior", "decode z ~ N(0, temperature^2 I) from the model's prior (vae)")
class PriorSampler:
    """Draw ``num_samples`` images by decoding latents from the model's prior at a given temperature."""

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def __call__(self, model: nn.Module, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if not getattr(model, "has_prior", False):
            raise GenResearchError(f"sampler 'prior' needs a model with a prior (vae); {type(model).__name__} has none")
        return model.sample(num_samples, generator=generator, temperature=self.temperature)
