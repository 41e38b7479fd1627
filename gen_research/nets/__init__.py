"""Network building blocks (plain nn.Modules, no Lightning)."""

from gen_research.nets.conv import ConvDecoder, ConvEncoder, bottleneck_size, make_norm

__all__ = ["ConvDecoder", "ConvEncoder", "bottleneck_size", "make_norm"]
