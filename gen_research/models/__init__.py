"""Model families; importing this package registers them in gen_research.registry.MODELS."""

from gen_research.models import autoencoder

__all__ = ["autoencoder"]
