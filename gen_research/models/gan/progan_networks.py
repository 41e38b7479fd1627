"""ProGAN's networks (Karras et al. 2018, "Progressive Growing of GANs"), after tkarras/progressive_growing_of_gans
``networks.py`` (``G_paper`` / ``D_paper``). Written by hand: no library ships them.

- Equalized learning rate: weights drawn from N(0, 1) and multiplied at run time by He's constant
  ``gain / sqrt(fan_in)`` (gain sqrt(2), 1 for toRGB and D's output, sqrt(2)/4 for G's first dense layer, as the
  reference), so Adam's per-parameter step sizes act alike on every layer.
- Generator: latent -> pixel norm -> dense to 4x4 -> conv 3x3; per resolution above, nearest upsampling and two
  3x3 convs; LeakyReLU 0.2 and pixelwise feature normalization after every conv; a 1x1 toRGB per resolution
  (linear output, as the reference: no tanh).
- Discriminator, mirrored: a 1x1 fromRGB per resolution; per resolution two 3x3 convs and 2x2 average pooling; at
  4x4 the minibatch standard deviation (group 4), a 3x3 conv and two dense layers to one output.
- Widths: :func:`progan_channels`; the paper's 512 channels up to 32x32, halved at each doubling above.

Both networks run at their current ``level`` (side ``4 * 2**level``) with fade-in ``alpha``, set by
:meth:`set_growth`; plain attributes, not buffers, so an EMA of the generator never averages them (the family
module holds them as buffers: progan.py). During a fade-in G's output is
``lerp(upsample(toRGB_prev(x_prev)), toRGB_new(x_new), alpha)`` and D's features after the new block are
``lerp(fromRGB_prev(downsample(x)), block_new(fromRGB_new(x)), alpha)``, as in the paper (section 3, figure 2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_research.errors import GenResearchError

#: LeakyReLU slope of every hidden layer in both networks (the paper, appendix A.1).
LEAKY_SLOPE = 0.2
#: He's constant for LeakyReLU layers, as the reference uses (sqrt(2), not sqrt(2 / (1 + 0.2**2))).
HE_GAIN = math.sqrt(2.0)


def progan_channels(side: int, base_channels: int, max_channels: int) -> int:
    """Feature maps at resolution ``side``: ``min(max_channels, base_channels * 32 / side)``, at least 1.

    ``base_channels`` is the width at 32x32; base 512 and max 512 are the paper's widths (512 up to 32x32, then
    256, 128, ... at 64, 128, ...), i.e. the reference's ``nf`` with ``fmap_base = 16 * base_channels``."""
    return max(1, min(max_channels, base_channels * 32 // side))


def num_levels(image_shape: tuple[int, int, int]) -> int:
    """Growth levels above 4x4 for square images with a power-of-2 side >= 4 (8x8: 1, 32x32: 3), else a one-line error."""
    if len(image_shape) != 3 or image_shape[0] not in (1, 3):
        raise GenResearchError(f"progan: image_shape={tuple(image_shape)} must be (channels, side, side) with 1 or 3 channels")
    _, height, width = image_shape
    if height != width or height < 4 or height & (height - 1):
        side = 2 ** max(2, math.ceil(math.log2(max(height, width, 1))))
        raise GenResearchError(f"progan needs square images with a power-of-2 side >= 4, got {height}x{width}: "
                               f"set data.init_args.resize (or data.init_args.center_crop) to {side}")
    return int(math.log2(height)) - 2


class EqualizedLinear(nn.Module):
    """A dense layer with equalized learning rate: weight ~ N(0, 1), scaled by ``gain / sqrt(in_features)`` each call."""

    def __init__(self, in_features: int, out_features: int, gain: float = HE_GAIN, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class EqualizedConv2d(nn.Module):
    """A same-padded conv with equalized learning rate: weight ~ N(0, 1), scaled by ``gain / sqrt(in * k * k)`` each call."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = HE_GAIN) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Each pixel's feature vector divided by its RMS over channels (the paper's eq. in section 4.2), in float32."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.square().mean(dim=1, keepdim=True) + eps)).to(x.dtype)


def minibatch_stddev(x: Tensor, group_size: int = 4) -> Tensor:
    """``x`` with one more channel: the standard deviation of each feature over a group, averaged over features
    and pixels (the paper's section 3; the reference's ``minibatch_stddev_layer``: biased variance, eps 1e-8 inside
    the square root, float32, image i in group ``i % (N / group)``). The group is the largest divisor of the batch
    that is at most ``group_size``, so odd-sized batches (an epoch's last one) still work."""
    n, _, h, w = x.shape
    group = max(g for g in range(1, min(group_size, n) + 1) if n % g == 0)
    y = x.float().reshape(group, n // group, *x.shape[1:])
    y = (y - y.mean(dim=0, keepdim=True)).square().mean(dim=0)
    y = torch.sqrt(y + 1e-8).mean(dim=(1, 2, 3))  # one value per group: [N / group]
    y = y.repeat(group).view(n, 1, 1, 1).expand(n, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


def _act(x: Tensor) -> Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


class GrowingNetwork(nn.Module):
    """The growth state both networks share: ``level`` (side ``4 * 2**level``) and fade-in ``alpha`` in [0, 1]."""

    def __init__(self, max_level: int) -> None:
        super().__init__()
        self.max_level = max_level
        self.level, self.alpha = max_level, 1.0  # the full network until the family sets the state

    def set_growth(self, level: int, alpha: float) -> None:
        if not (0 <= level <= self.max_level and 0.0 <= alpha <= 1.0):
            raise ValueError(f"growth level {level} must be in [0, {self.max_level}] and alpha {alpha} in [0, 1]")
        self.level, self.alpha = int(level), float(alpha)

    @property
    def side(self) -> int:
        return 4 * 2**self.level

    @property
    def fading(self) -> bool:
        """True during a fade-in: the previous resolution still contributes (1 - alpha)."""
        return self.level > 0 and self.alpha < 1.0


class ProGANGenerator(GrowingNetwork):
    """G_paper: ``forward(z)`` -> images at the current side (linear output; the family clamps samples to [-1, 1])."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], base_channels: int, max_channels: int) -> None:
        super().__init__(num_levels(image_shape))
        self.latent_dim, self.image_shape = latent_dim, tuple(image_shape)
        width = [progan_channels(4 * 2**level, base_channels, max_channels) for level in range(self.max_level + 1)]
        # The reference's 4x4 "dense" has gain sqrt(2)/4 and a per-channel bias added after the reshape.
        self.dense = EqualizedLinear(latent_dim, width[0] * 16, gain=HE_GAIN / 4, bias=False)
        self.dense_bias = nn.Parameter(torch.zeros(width[0]))
        self.blocks = nn.ModuleList([nn.ModuleList([EqualizedConv2d(width[0], width[0], 3)])])
        for level in range(1, self.max_level + 1):
            self.blocks.append(nn.ModuleList([EqualizedConv2d(width[level - 1], width[level], 3), EqualizedConv2d(width[level], width[level], 3)]))
        self.to_rgb = nn.ModuleList([EqualizedConv2d(w, image_shape[0], 1, gain=1.0) for w in width])

    def _block(self, level: int, x: Tensor) -> Tensor:
        if level > 0:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        for conv in self.blocks[level]:
            x = pixel_norm(_act(conv(x)))
        return x

    def forward(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0) -> Tensor:
        """``truncation_psi`` scales the normalized latent towards its mean 0 (after the pixel norm: scaling z before
        it would be undone by the normalization); 1 is off, as the paper (which has no truncation)."""
        x = pixel_norm(z.flatten(1)) * truncation_psi
        x = self.dense(x).view(len(z), -1, 4, 4) + self.dense_bias.view(1, -1, 1, 1)
        x = self._block(0, pixel_norm(_act(x)))
        previous = x
        for level in range(1, self.level + 1):
            previous, x = x, self._block(level, x)
        images = self.to_rgb[self.level](x)
        if self.fading:
            low = F.interpolate(self.to_rgb[self.level - 1](previous), scale_factor=2, mode="nearest")
            images = torch.lerp(low, images, self.alpha)
        return images


class ProGANDiscriminator(GrowingNetwork):
    """D_paper: ``forward(images)`` at the current side -> one score per image, shape [N]."""

    def __init__(self, image_shape: tuple[int, int, int], base_channels: int, max_channels: int, minibatch_std_group: int = 4) -> None:
        super().__init__(num_levels(image_shape))
        self.image_shape, self.minibatch_std_group = tuple(image_shape), minibatch_std_group
        width = [progan_channels(4 * 2**level, base_channels, max_channels) for level in range(self.max_level + 1)]
        self.from_rgb = nn.ModuleList([EqualizedConv2d(image_shape[0], w, 1) for w in width])
        self.blocks = nn.ModuleList([nn.ModuleList()])  # level 0 is the 4x4 head below
        for level in range(1, self.max_level + 1):
            self.blocks.append(nn.ModuleList([EqualizedConv2d(width[level], width[level], 3), EqualizedConv2d(width[level], width[level - 1], 3)]))
        extra = 1 if minibatch_std_group > 1 else 0
        self.head_conv = EqualizedConv2d(width[0] + extra, width[0], 3)
        self.head_dense = EqualizedLinear(width[0] * 16, progan_channels(2, base_channels, max_channels))
        self.head_out = EqualizedLinear(progan_channels(2, base_channels, max_channels), 1, gain=1.0)

    def _block(self, level: int, x: Tensor) -> Tensor:
        for conv in self.blocks[level]:
            x = _act(conv(x))
        return F.avg_pool2d(x, 2)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        if images.shape[-1] != self.side or images.shape[-2] != self.side:
            raise ValueError(f"ProGANDiscriminator at level {self.level} takes {self.side}x{self.side} images, got {tuple(images.shape[-2:])}")
        x = _act(self.from_rgb[self.level](images))
        if self.level > 0:
            x = self._block(self.level, x)
            if self.fading:
                x = torch.lerp(_act(self.from_rgb[self.level - 1](F.avg_pool2d(images, 2))), x, self.alpha)
        for level in range(self.level - 1, 0, -1):
            x = self._block(level, x)
        if self.minibatch_std_group > 1:
            x = minibatch_stddev(x, self.minibatch_std_group)
        x = _act(self.head_conv(x))
        x = _act(self.head_dense(x.flatten(1)))
        return self.head_out(x).squeeze(1)


__all__ = ["EqualizedConv2d", "EqualizedLinear", "ProGANDiscriminator", "ProGANGenerator", "minibatch_stddev", "num_levels",
           "pixel_norm", "progan_channels"]
