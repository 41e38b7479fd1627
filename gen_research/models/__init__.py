"""Model families; importing this package registers them in gen_research.registry.MODELS."""

from gen_research.models import autoencoder
from gen_research.models import classifier  # noqa: F401  (registers "classifier")

__all__ = ["autoencoder"]
