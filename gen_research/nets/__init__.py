"""Network building blocks (plain nn.Modules, no Lightning)."""

from gen_research.nets.conv import ConvDecoder, ConvEncoder, bottleneck_size, make_norm
from gen_research.nets.quantize import VectorQuantizer  # noqa: F401  (the VQ-VAE codebook)

__all__ = ["ConvDecoder", "ConvEncoder", "bottleneck_size", "make_norm"]
