"""Small strided-conv encoder/decoder pair shared by the autoencoder family."""

from __future__ import annotations

import math
from typing import Literal

import torch
from einops.layers.torch import Rearrange
from torch import nn

from gen_research.errors import GenResearchError

Norm = Literal["batch", "group", "none"]


def make_norm(kind: Norm, num_channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(num_channels)
    if kind == "group":
        # gcd keeps the group count valid for any channel width (e.g. 16 -> 8 groups, 12 -> 4).
        return nn.GroupNorm(math.gcd(8, num_channels), num_channels)
    if kind == "none":
        return nn.Identity()
    raise GenResearchError(f"unknown norm {kind!r}: use one of batch, group, none")


def bottleneck_size(image_size: tuple[int, int], channels: list[int]) -> tuple[int, int]:
    """Spatial size after len(channels) stride-2 stages; raises if the image does not divide evenly."""
    if not channels:
        raise GenResearchError("model.init_args.channels is empty: give at least one conv stage, e.g. [32, 64]")
    h, w = image_size
    factor = 2 ** len(channels)
    if h % factor or w % factor:
        raise GenResearchError(
            f"image size {h}x{w} is not divisible by 2**{len(channels)}={factor}: use fewer "
            "model.init_args.channels or set data.init_args.resize/center_crop"
        )
    return h // factor, w // factor


class ConvEncoder(nn.Module):
    """Stride-2 conv blocks (one per entry of ``channels``), then flatten + linear to ``out_features``."""

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        channels: list[int],
        out_features: int,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        h, w = bottleneck_size(image_size, channels)
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            # k=4, s=2, p=1 halves H and W exactly, mirroring the decoder's ConvTranspose2d.
            layers += [nn.Conv2d(prev, ch, 4, stride=2, padding=1), make_norm(norm, ch), nn.SiLU()]
            prev = ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(Rearrange("b c h w -> b (c h w)"), nn.Linear(prev * h * w, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """Linear to ``channels[-1] x h x w``, ConvTranspose2d blocks mirroring the encoder, final conv.

    No output activation: the model decides how to read the output (clamped pixels, logits, a mean).
    """

    def __init__(
        self,
        latent_dim: int,
        out_channels: int,
        image_size: tuple[int, int],
        channels: list[int],
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        h, w = bottleneck_size(image_size, channels)
        top = channels[-1]
        self.stem = nn.Sequential(
            nn.Linear(latent_dim, top * h * w), Rearrange("b (c h w) -> b c h w", c=top, h=h, w=w), nn.SiLU()
        )
        # Reversed widths; the last upsampling stage keeps channels[0] (the encoder's first stage read the image).
        widths = list(reversed(channels)) + [channels[0]]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), make_norm(norm, c_out), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.out = nn.Conv2d(channels[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(self.stem(z)))
