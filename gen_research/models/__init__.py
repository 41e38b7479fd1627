"""Model families; importing this package registers them in gen_research.registry.MODELS."""

from gen_research.models import autoencoder
from gen_research.models import classifier  # noqa: F401  (registers "classifier")
from gen_research.models import diffusion  # noqa: F401  (registers "ddpm")

__all__ = ["autoencoder"]
