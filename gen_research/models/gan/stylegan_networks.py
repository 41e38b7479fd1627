"""StyleGAN2's networks (Karras et al. 2020), written by hand after NVlabs' stylegan2-ada-pytorch
``training/networks.py`` (no library ships them): the mapping network, the skip-architecture synthesis network with
modulated/demodulated convolutions and noise inputs, and the residual (or ``orig``) discriminator with minibatch std.

Every weight uses the equalized learning rate as NVlabs do: parameters are drawn from N(0, 1) (divided by the lr
multiplier) and scaled at run time by ``lr_multiplier / sqrt(fan_in)``, so the mapping network's 0.01 multiplier
is part of its layers, not a separate optimizer group. Leaky ReLU (0.2) outputs are multiplied by sqrt(2) (NVlabs'
``bias_act`` gain).

Differences from NVlabs, on purpose: resampling is plain bilinear upsampling (``F.interpolate``) and 2x2 average
pooling instead of upfirdn2d's [1, 3, 3, 1] FIR filter (no custom CUDA kernels; D downsamples before its strided
3x3 conv rather than blurring at full resolution); no fp16 blocks or ``conv_clamp`` (bf16 autocast has fp32's
range); the minibatch-std group is the largest divisor of the batch not above ``group_size`` (NVlabs needs the
batch to divide by it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_GAIN = math.sqrt(2.0)  # NVlabs bias_act: leaky ReLU 0.2 with gain sqrt(2) keeps activations' scale


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Pixel norm of the latent (StyleGAN's mapping input): unit mean square along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def channel_widths(resolutions: list[int], channel_base: int, channel_max: int) -> dict[int, int]:
    """NVlabs' width rule: ``min(channel_base // resolution, channel_max)`` channels at each resolution."""
    return {res: max(1, min(channel_base // res, channel_max)) for res in resolutions}


class FullyConnectedLayer(nn.Module):
    """Equalized-lr linear layer (NVlabs FullyConnectedLayer): ``lr_multiplier`` scales weight and bias at run time."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear", lr_multiplier: float = 1.0,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activation == "lrelu" else x


class Conv2dLayer(nn.Module):
    """Equalized-lr convolution with optional 2x downsampling (average pool, then the conv) and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: bool = False) -> None:
        super().__init__()
        self.activation, self.down, self.padding = activation, down, kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        return x * gain if gain != 1.0 else x


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True, fused: bool = True) -> Tensor:
    """StyleGAN2's modulated convolution (Karras et al. 2020, eq. 1-3; NVlabs ``modulated_conv2d``).

    Each image's weights are ``weight * styles`` along the input channels, then (``demodulate``) divided by their
    L2 norm per output channel, so unit-variance inputs give unit-variance outputs. ``fused``: one grouped
    convolution over per-image weights (NVlabs' inference path); otherwise the styles and demodulation
    coefficients scale the activations around one shared convolution (NVlabs' training path; the same numbers).
    """
    batch, in_channels = styles.shape
    out_channels, _, kh, kw = weight.shape
    modulated = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)  # [N, O, I, k, k]
    dcoefs = (modulated.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None  # [N, O]
    if not fused:
        x = F.conv2d(x * styles.reshape(batch, in_channels, 1, 1), weight, padding=kh // 2)
        return x * dcoefs.reshape(batch, out_channels, 1, 1) if dcoefs is not None else x
    if dcoefs is not None:
        modulated = modulated * dcoefs.reshape(batch, out_channels, 1, 1, 1)
    x = F.conv2d(x.reshape(1, batch * in_channels, *x.shape[2:]), modulated.reshape(batch * out_channels, in_channels, kh, kw),
                 padding=kh // 2, groups=batch)
    return x.reshape(batch, out_channels, *x.shape[2:])


class MappingNetwork(nn.Module):
    """z (pixel-normalized) [+ the embedded, normalized one-hot class] -> w through ``num_layers`` leaky-ReLU FC
    layers with lr multiplier 0.01; tracks ``w_avg`` (beta 0.995) for the truncation trick (NVlabs MappingNetwork).

    ``num_ws`` None returns [N, w_dim] (the discriminator's label embedding); otherwise w broadcast to
    [N, num_ws, w_dim]."""

    def __init__(self, z_dim: int, num_classes: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995) -> None:
        super().__init__()
        self.z_dim, self.num_classes, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, num_classes, w_dim, num_ws, w_avg_beta
        embed_features = w_dim if num_classes else 0
        if num_classes:
            self.embed = FullyConnectedLayer(num_classes, embed_features)
        features = [z_dim + embed_features] + [w_dim] * num_layers
        self.layers = nn.ModuleList(FullyConnectedLayer(features[i], features[i + 1], "lrelu", lr_multiplier) for i in range(num_layers))
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor | None, labels: Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_w_avg: bool = True) -> Tensor:
        parts = []
        if self.z_dim:
            parts.append(normalize_2nd_moment(z.float()))
        if self.num_classes:
            one_hot = F.one_hot(labels.long(), self.num_classes).float()
            parts.append(normalize_2nd_moment(self.embed(one_hot)))
        x = torch.cat(parts, dim=1)
        for layer in self.layers:
            x = layer(x)
        if self.w_avg_beta is not None and self.training and update_w_avg:  # NVlabs: every G forward in training
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            truncated = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
            x = torch.cat([truncated, x[:, cutoff:]], dim=1)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally after 2x bilinear upsampling) + noise (learned strength, zero at start) + bias
    + leaky ReLU. ``noise_const`` is one fixed noise image per layer, for ``noise_mode="const"``."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False) -> None:
        super().__init__()
        self.resolution, self.up = resolution, up
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)  # styles start at 1 (NVlabs)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "random", generator: torch.Generator | None = None) -> Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = modulated_conv2d(x, self.weight, self.affine(w), demodulate=True, fused=not self.training)
        if noise_mode == "random":
            device = generator.device if generator is not None else x.device
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, generator=generator, device=device).to(x.device)
            x = x + noise * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return F.leaky_relu(x + self.bias.reshape(1, -1, 1, 1), 0.2) * LRELU_GAIN


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, not demodulated, styles scaled by 1/sqrt(fan_in) (NVlabs ToRGBLayer)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False, fused=not self.training)
        return x + self.bias.reshape(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: the 4x4 block starts from a learned constant with one conv; later blocks
    upsample with two convs. Each adds its toRGB output to the upsampled image so far."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, image_channels: int) -> None:
        super().__init__()
        self.first = in_channels == 0
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGBLayer(out_channels, image_channels, w_dim)
        self.num_conv = 1 if self.first else 2

    def forward(self, x: Tensor | None, image: Tensor | None, ws: Tensor, noise_mode: str,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        styles = iter(ws.unbind(dim=1))
        if self.first:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, next(styles), noise_mode, generator)
        x = self.conv1(x, next(styles), noise_mode, generator)
        rgb = self.torgb(x, next(styles))
        image = rgb if image is None else F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False) + rgb
        return x, image


class SynthesisNetwork(nn.Module):
    """4x4 constant -> ``resolution`` (a power of 2 >= 4) in skip blocks; ``num_ws`` styles: each conv takes one, the
    last toRGB one more (each block's toRGB shares the next block's first style, as NVlabs split ws)."""

    def __init__(self, w_dim: int, resolution: int, image_channels: int, channel_base: int, channel_max: int) -> None:
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"StyleGAN synthesis: resolution {resolution} must be a power of 2 >= 4")
        self.w_dim, self.resolution = w_dim, resolution
        self.resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        widths = channel_widths(self.resolutions, channel_base, channel_max)
        self.blocks = nn.ModuleList(
            SynthesisBlock(widths[res // 2] if res > 4 else 0, widths[res], w_dim, res, image_channels) for res in self.resolutions
        )
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def forward(self, ws: Tensor, noise_mode: str = "random", generator: torch.Generator | None = None) -> Tensor:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode {noise_mode!r} must be one of random, const, none")
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"StyleGAN synthesis takes ws of shape [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        x = image = None
        index = 0
        for block in self.blocks:
            x, image = block(x, image, ws.narrow(1, index, block.num_conv + 1), noise_mode, generator)
            index += block.num_conv
        return image


class StyleGANGenerator(nn.Module):
    """Mapping + synthesis. ``generator(z, labels)`` is what GANBase's steps call: random noise, w_avg updated in
    training mode (NVlabs Generator.forward)."""

    def __init__(self, latent_dim: int, num_classes: int, w_dim: int, image_shape: tuple[int, int, int], mapping_layers: int,
                 mapping_lr_multiplier: float, w_avg_beta: float, channel_base: int, channel_max: int) -> None:
        super().__init__()
        channels, height, _ = image_shape
        self.synthesis = SynthesisNetwork(w_dim, height, channels, channel_base, channel_max)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(latent_dim, num_classes, w_dim, self.num_ws, mapping_layers, mapping_lr_multiplier, w_avg_beta)

    def forward(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: str = "random", generator: torch.Generator | None = None) -> Tensor:
        ws = self.mapping(z, labels, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, generator=generator)


class MinibatchStdLayer(nn.Module):
    """Appends the mean (over features and pixels) of the per-group standard deviation as ``num_channels`` extra
    channels (Karras et al. 2018; NVlabs MinibatchStdLayer: group members are strided, sample i in group i % n)."""

    def __init__(self, group_size: int, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        group = next(g for g in range(min(self.group_size, n), 0, -1) if n % g == 0)
        features = self.num_channels
        y = x.reshape(group, -1, features, c // features, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n / group, F]
        y = y.reshape(-1, features, 1, 1).repeat(group, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """One resolution of D: (fromRGB at the top block), 3x3 conv, 3x3 conv with 2x downsampling; ``resnet`` adds a
    1x1 downsampled skip, both branches scaled by sqrt(1/2) (NVlabs DiscriminatorBlock)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, image_channels: int, architecture: str) -> None:
        super().__init__()
        self.residual = architecture == "resnet"
        self.fromrgb = Conv2dLayer(image_channels, tmp_channels, 1, activation="lrelu") if in_channels == 0 else None
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu")
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=True)
        if self.residual:
            self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        if self.residual:
            return self.skip(x, gain=math.sqrt(0.5)) + self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return self.conv1(self.conv0(x))


class StyleGANDiscriminator(nn.Module):
    """Blocks from the image resolution down to 8x8, then the 4x4 epilogue: minibatch std, 3x3 conv, FC, output.
    Class-conditional through a projection on a mapped label embedding (NVlabs ``cmap``)."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, channel_base: int, channel_max: int,
                 architecture: str = "resnet", mbstd_group_size: int = 4, mbstd_num_channels: int = 1) -> None:
        super().__init__()
        channels, height, _ = image_shape
        if height < 4 or height & (height - 1):
            raise ValueError(f"StyleGAN discriminator: resolution {height} must be a power of 2 >= 4")
        resolutions = [2**i for i in range(int(math.log2(height)), 2, -1)]
        widths = channel_widths(resolutions + [4], channel_base, channel_max)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(0 if res == height else widths[res], widths[res], widths[res // 2], channels, architecture) for res in resolutions
        )
        width = widths[4]
        # No block at 4x4: the epilogue reads the image through its own fromRGB.
        self.fromrgb = Conv2dLayer(channels, width, 1, activation="lrelu") if height == 4 else None
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels else None
        self.conv = Conv2dLayer(width + mbstd_num_channels, width, 3, activation="lrelu")
        self.fc = FullyConnectedLayer(width * 16, width, activation="lrelu")
        self.cmap_dim = width if num_classes else 0
        self.out = FullyConnectedLayer(width, self.cmap_dim or 1)
        if num_classes:  # NVlabs: the label mapping keeps its defaults (8 layers, lr multiplier 0.01)
            self.mapping = MappingNetwork(0, num_classes, self.cmap_dim, num_ws=None, w_avg_beta=None)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        x = self.fromrgb(images) if self.fromrgb is not None else images
        for block in self.blocks:
            x = block(x)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim:
            x = (x * self.mapping(None, labels)).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x


__all__ = [
    "Conv2dLayer", "FullyConnectedLayer", "MappingNetwork", "MinibatchStdLayer", "StyleGANDiscriminator", "StyleGANGenerator",
    "SynthesisNetwork", "channel_widths", "modulated_conv2d", "normalize_2nd_moment",
]
