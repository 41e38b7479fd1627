"""The image-to-image networks: pix2pix's U-Net and PatchGAN, CycleGAN's ResNet generator, StarGAN's G and D.

Written by hand: diffusers and torchvision have none of these. Layer for layer they follow the reference code,
junyanz/pytorch-CycleGAN-and-pix2pix models/networks.py and yunjey/stargan model.py, with the same module nesting
(``model``/``conv_block``/``main``/``conv1``/``conv2``) so the references' state_dict keys load unchanged; the in-place
activations are kept too, as they change what the U-Net's skips carry. What the references leave to the user (sizes
that fit, depths from the image size) is computed here: :func:`unet_depth`, :func:`padded_size`,
:func:`patch_receptive_field`, :func:`patch_map_size`, :func:`resnet_blocks_for`, :func:`stargan_depth`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_research.errors import GenResearchError

Norm = Literal["batch", "instance", "none"]
NORMS = ("batch", "instance", "none")
Padding = Literal["reflect", "replicate", "zero"]
PADDINGS = ("reflect", "replicate", "zero")


def _check_int(owner: str, name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GenResearchError(f"{owner}: {name}={value!r} must be an integer >= {minimum}")


def _check_choice(owner: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise GenResearchError(f"{owner}: {name}={value!r} must be one of {', '.join(choices)}")


def _check_input(owner: str, x: Tensor, channels: int, multiple: int, minimum: int = 1) -> None:
    """A one-line error for inputs the layer arithmetic cannot take back to the same size."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{owner} takes [B, {channels}, H, W] images, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple or min(h, w) < minimum:
        raise ValueError(f"{owner} needs height and width multiples of {multiple} (at least {max(minimum, multiple)}), "
                         f"got {h}x{w}: pad to {padded_size(h, multiple)}x{padded_size(w, multiple)}")


def padded_size(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that holds ``size`` (the family pads inputs to it)."""
    return -(-size // multiple) * multiple


def init_weights_normal(module: nn.Module, gain: float = 0.02) -> None:
    """The references' ``init_weights(net, 'normal', 0.02)`` for ``net.apply``: conv and linear weights
    N(0, gain) with zero biases, BatchNorm2d weights N(1, gain) with zero biases; other layers keep theirs."""
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, gain)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, gain)
        nn.init.zeros_(module.bias)


def norm_layer(kind: Norm) -> Callable[[int], nn.Module]:
    """The reference's ``get_norm_layer``: affine BatchNorm with running statistics, InstanceNorm without affine
    parameters or running statistics, or none (an Identity, so layer indices, and state_dict keys, do not move)."""
    _check_choice("norm_layer", "kind", kind, NORMS)
    if kind == "batch":
        return lambda channels: nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if kind == "instance":
        return lambda channels: nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return lambda channels: nn.Identity()


def uses_bias(kind: Norm) -> bool:
    """Convs followed by a norm get a bias only when that norm does not subtract one (the reference's
    ``use_bias = norm_layer.func == nn.InstanceNorm2d``). The reference gives none to "none" either; here a conv
    with no norm after it keeps its bias, which nothing else would supply."""
    _check_choice("norm_layer", "kind", kind, NORMS)
    return kind != "batch"


# ---------------------------------------------------------------------------------------------------- pix2pix U-Net

def unet_depth(height: int, width: int) -> int:
    """num_downs from the image size: enough halvings to bring the shorter side to 1x1 at the bottleneck
    (256 -> 8 as the reference's unet_256, 128 -> 7 as unet_128, 28 -> 5 after padding to 32)."""
    _check_int("unet_depth", "height", height, 1)
    _check_int("unet_depth", "width", width, 1)
    return max(1, math.ceil(math.log2(min(height, width))))


class UnetSkipConnectionBlock(nn.Module):
    """The reference's ``UnetSkipConnectionBlock``: down (LeakyReLU 0.2, conv k4 s2, norm), the inner block, up
    (ReLU, transposed conv k4 s2, norm), its input concatenated to its output; the outermost ends in Tanh and has
    no skip. A block that is both outermost and innermost (num_downs 1) is down conv, ReLU, up conv, Tanh."""

    def __init__(self, outer_channels: int, inner_channels: int, input_channels: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm: Norm = "batch", use_dropout: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        make_norm, bias = norm_layer(norm), uses_bias(norm)
        input_channels = outer_channels if input_channels is None else input_channels
        up_in = inner_channels if innermost else inner_channels * 2
        downconv = nn.Conv2d(input_channels, inner_channels, kernel_size=4, stride=2, padding=1, bias=bias)
        # In-place as in the reference: the LeakyReLU also rewrites the skip this block concatenates.
        downrelu, uprelu = nn.LeakyReLU(0.2, True), nn.ReLU(True)
        inner = [] if submodule is None else [submodule]
        if outermost:
            upconv = nn.ConvTranspose2d(up_in, outer_channels, kernel_size=4, stride=2, padding=1)
            layers = [downconv, *inner, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(up_in, outer_channels, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [downrelu, downconv, uprelu, upconv, make_norm(outer_channels)]
        else:
            upconv = nn.ConvTranspose2d(up_in, outer_channels, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [downrelu, downconv, make_norm(inner_channels), *inner, uprelu, upconv, make_norm(outer_channels)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """The reference's ``UnetGenerator`` (pix2pix's netG unet_256 / unet_128): ``num_downs`` halvings with
    widths ngf, 2ngf, 4ngf, then 8ngf; the 8ngf blocks between the three outer ones and the innermost get
    Dropout(0.5) when ``use_dropout`` (pix2pix's default, its only noise). For num_downs >= 5 the blocks are the
    reference's exactly; shallower nets (small images) drop the inner end of the width ladder."""

    def __init__(self, in_channels: int, out_channels: int, num_downs: int, ngf: int = 64, norm: Norm = "batch",
                 use_dropout: bool = True) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("num_downs", num_downs),
                            ("ngf", ngf)):
            _check_int("UnetGenerator", name, value, 1)
        _check_choice("UnetGenerator", "norm", norm, NORMS)
        self.in_channels, self.num_downs = in_channels, num_downs
        # Level i (0 = outermost) maps ngf * min(2**(i-1), 8) channels to ngf * min(2**i, 8).
        width = [ngf * min(2**level, 8) for level in range(num_downs)]
        block: nn.Module | None = None
        for level in reversed(range(num_downs)):
            block = UnetSkipConnectionBlock(
                out_channels if level == 0 else width[level - 1], width[level],
                input_channels=in_channels if level == 0 else None, submodule=block,
                outermost=level == 0, innermost=level == num_downs - 1, norm=norm,
                use_dropout=use_dropout and level >= 4)
        self.model = block

    def forward(self, x: Tensor) -> Tensor:
        _check_input("UnetGenerator", x, self.in_channels, 2**self.num_downs)
        return self.model(x)


# ------------------------------------------------------------------------------------------------ PatchGAN discriminator

def _patchgan_convs(n_layers: int) -> list[tuple[int, int, int]]:
    """(kernel, stride, padding) of the PatchGAN's convs in order: n_layers stride-2, then two stride-1."""
    return [(4, 2, 1)] * n_layers + [(4, 1, 1)] * 2


def patch_receptive_field(n_layers: int) -> int:
    """The side of the input window one output of ``NLayerDiscriminator(n_layers=...)`` sees, walked back
    through its convs (70 for n_layers 3, the paper's 70x70 PatchGAN; 34 for 2; 16 for 1)."""
    _check_int("patch_receptive_field", "n_layers", n_layers, 1)
    field = 1
    for kernel, stride, _ in reversed(_patchgan_convs(n_layers)):
        field = (field - 1) * stride + kernel
    return field


def n_layers_for_receptive_field(receptive_field: int) -> int:
    """The smallest n_layers whose patch covers ``receptive_field`` pixels (16 -> 1, 34 -> 2, 70 -> 3)."""
    _check_int("n_layers_for_receptive_field", "receptive_field", receptive_field, 1)
    n_layers = 1
    while patch_receptive_field(n_layers) < receptive_field:
        n_layers += 1
    return n_layers


def patch_map_size(size: int, n_layers: int) -> int:
    """The side of the PatchGAN's output map for an input side (256 -> 30 at n_layers 3); below 1, the input is
    too small for that depth."""
    for kernel, stride, padding in _patchgan_convs(n_layers):
        size = (size + 2 * padding - kernel) // stride + 1
    return size


class NLayerDiscriminator(nn.Module):
    """The reference's ``NLayerDiscriminator`` (PatchGAN): conv k4 s2 + LeakyReLU 0.2, n_layers - 1 more stride-2
    conv-norm-LeakyReLU with widths ndf * min(2**n, 8), a stride-1 one, and a stride-1 conv to a 1-channel map of
    logits, one per overlapping patch (no sigmoid: the losses take logits)."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: Norm = "batch") -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("ndf", ndf), ("n_layers", n_layers)):
            _check_int("NLayerDiscriminator", name, value, 1)
        _check_choice("NLayerDiscriminator", "norm", norm, NORMS)
        self.in_channels, self.n_layers = in_channels, n_layers
        make_norm, bias = norm_layer(norm), uses_bias(norm)
        convs = _patchgan_convs(n_layers)
        widths = [in_channels] + [ndf * min(2**n, 8) for n in range(n_layers + 1)] + [1]
        layers: list[nn.Module] = []
        for index, (kernel, stride, padding) in enumerate(convs):
            first, last = index == 0, index == len(convs) - 1
            layers.append(nn.Conv2d(widths[index], widths[index + 1], kernel_size=kernel, stride=stride,
                                    padding=padding, bias=bias or first or last))
            if not (first or last):
                layers.append(make_norm(widths[index + 1]))
            if not last:
                layers.append(nn.LeakyReLU(0.2, True))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"NLayerDiscriminator takes [B, {self.in_channels}, H, W] images, got {tuple(x.shape)}")
        if min(patch_map_size(side, self.n_layers) for side in x.shape[-2:]) < 1:
            raise ValueError(f"NLayerDiscriminator with n_layers={self.n_layers} needs larger images than "
                             f"{x.shape[-2]}x{x.shape[-1]}: lower n_layers or enlarge the images")
        return self.model(x)


# ---------------------------------------------------------------------------------------- CycleGAN ResNet generator

def resnet_blocks_for(image_size: int) -> int:
    """CycleGAN's block count: resnet_9blocks above 128 px, resnet_6blocks at 128 and below (the paper's rule)."""
    _check_int("resnet_blocks_for", "image_size", image_size, 1)
    return 9 if image_size > 128 else 6


def _padded_conv3(channels: int, padding: Padding, bias: bool) -> list[nn.Module]:
    if padding == "zero":
        return [nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=bias)]
    pad = nn.ReflectionPad2d(1) if padding == "reflect" else nn.ReplicationPad2d(1)
    return [pad, nn.Conv2d(channels, channels, kernel_size=3, padding=0, bias=bias)]


class ResnetBlock(nn.Module):
    """The reference's ``ResnetBlock``: x + (pad, conv3, norm, ReLU, [Dropout 0.5], pad, conv3, norm)."""

    def __init__(self, channels: int, padding: Padding, norm: Norm, use_dropout: bool) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), uses_bias(norm)
        layers = [*_padded_conv3(channels, padding, bias), make_norm(channels), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [*_padded_conv3(channels, padding, bias), make_norm(channels)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """The reference's ``ResnetGenerator`` (Johnson et al.'s, CycleGAN's netG): c7s1-ngf with ReflectionPad2d(3),
    two stride-2 conv3 downsamplings, n_blocks ResnetBlocks at 4ngf, two ConvTranspose2d(k3, s2, p1,
    output_padding 1) upsamplings, ReflectionPad2d(3) + conv7 to out_channels, Tanh."""

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, norm: Norm = "instance",
                 use_dropout: bool = False, n_blocks: int = 9, padding: Padding = "reflect") -> None:
        super().__init__()
        for name, value, minimum in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                     ("ngf", ngf, 1), ("n_blocks", n_blocks, 0)):
            _check_int("ResnetGenerator", name, value, minimum)
        _check_choice("ResnetGenerator", "norm", norm, NORMS)
        _check_choice("ResnetGenerator", "padding", padding, PADDINGS)
        self.in_channels = in_channels
        make_norm, bias = norm_layer(norm), uses_bias(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, kernel_size=7, padding=0, bias=bias),
                                   make_norm(ngf), nn.ReLU(True)]
        for i in range(2):
            width = ngf * 2**i
            layers += [nn.Conv2d(width, width * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                       make_norm(width * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, padding, norm, use_dropout) for _ in range(n_blocks)]
        for i in range(2):
            width = ngf * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(width, width // 2, kernel_size=3, stride=2, padding=1, output_padding=1,
                                          bias=bias),
                       make_norm(width // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        # Reflection padding and the norms need more than one pixel at the 1/4-size bottleneck.
        _check_input("ResnetGenerator", x, self.in_channels, 4, minimum=8)
        return self.model(x)


# ----------------------------------------------------------------------------------------------------------- StarGAN

def stargan_depth(image_size: int) -> int:
    """The discriminator's repeat_num from the image size: floor(log2(size)) - 1, at least 1, so the last feature
    map is 2x2 or 3x3 (128 -> 6 as the paper, 28 -> 3)."""
    _check_int("stargan_depth", "image_size", image_size, 1)
    return max(1, math.floor(math.log2(image_size)) - 1)


class PerImageInstanceNorm2d(nn.InstanceNorm2d):
    """yunjey/stargan's ``InstanceNorm2d(affine=True, track_running_stats=True)``, normalising by each image's own
    statistics in eval mode too. The reference never calls ``eval()`` (its solver tests and samples in training
    mode), so its running statistics are tracked but never used; torch's eval mode would switch to them, and an
    average over every training image and target domain is not what any one translation was trained with. The
    buffers stay (state_dict keys as the reference's); eval-mode calls leave them untouched."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return super().forward(x)
        return F.instance_norm(x, None, None, self.weight, self.bias, use_input_stats=True, eps=self.eps)


class StarGANResidualBlock(nn.Module):
    """yunjey/stargan's ``ResidualBlock``: x + (conv3, IN, ReLU, conv3, IN), no biases, affine IN with running stats."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=False),
            PerImageInstanceNorm2d(channels, affine=True, track_running_stats=True), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=False),
            PerImageInstanceNorm2d(channels, affine=True, track_running_stats=True))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.main(x)


class StarGANGenerator(nn.Module):
    """yunjey/stargan's ``Generator``: the target domain vector tiled as extra input channels, conv7, two k4 s2
    downsamplings, repeat_num residual blocks, two k4 s2 transposed-conv upsamplings, conv7, Tanh; no biases,
    InstanceNorm2d(affine=True, track_running_stats=True) throughout, per image in eval mode as the reference's use
    (:class:`PerImageInstanceNorm2d`)."""

    def __init__(self, image_channels: int = 3, num_domains: int = 5, conv_dim: int = 64, repeat_num: int = 6) -> None:
        super().__init__()
        for name, value, minimum in (("image_channels", image_channels, 1), ("num_domains", num_domains, 1),
                                     ("conv_dim", conv_dim, 1), ("repeat_num", repeat_num, 0)):
            _check_int("StarGANGenerator", name, value, minimum)
        self.image_channels, self.num_domains = image_channels, num_domains

        def norm(channels: int) -> nn.Module:
            return PerImageInstanceNorm2d(channels, affine=True, track_running_stats=True)

        layers: list[nn.Module] = [nn.Conv2d(image_channels + num_domains, conv_dim, kernel_size=7, stride=1, padding=3,
                                             bias=False), norm(conv_dim), nn.ReLU(inplace=True)]
        width = conv_dim
        for _ in range(2):
            layers += [nn.Conv2d(width, width * 2, kernel_size=4, stride=2, padding=1, bias=False), norm(width * 2),
                       nn.ReLU(inplace=True)]
            width *= 2
        layers += [StarGANResidualBlock(width) for _ in range(repeat_num)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(width, width // 2, kernel_size=4, stride=2, padding=1, bias=False),
                       norm(width // 2), nn.ReLU(inplace=True)]
            width //= 2
        layers += [nn.Conv2d(width, image_channels, kernel_size=7, stride=1, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """``c``: float [B, num_domains], one-hot for single-label domains, 0/1 attributes for multi-label ones."""
        _check_input("StarGANGenerator", x, self.image_channels, 4)
        if c.shape != (x.shape[0], self.num_domains):
            raise ValueError(f"StarGANGenerator takes target domains [B, {self.num_domains}] = "
                             f"[{x.shape[0]}, {self.num_domains}], got {tuple(c.shape)}")
        c = c.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return self.main(torch.cat([x, c], dim=1))


class StarGANDiscriminator(nn.Module):
    """yunjey/stargan's ``Discriminator``: repeat_num k4 s2 convs (width doubling from conv_dim, LeakyReLU 0.01),
    then ``conv1`` (3x3 to one channel: a PatchGAN map of real/fake scores) and ``conv2`` (kernel = the last map's
    size: num_domains logits). The kernel comes from the conv arithmetic (floor), so sizes that are not powers of
    two work (28 at repeat_num 3: 14, 7, 3); the reference's int(size / 2**repeat_num) agrees on powers of two."""

    def __init__(self, image_size: int | tuple[int, int], image_channels: int = 3, num_domains: int = 5,
                 conv_dim: int = 64, repeat_num: int = 6) -> None:
        super().__init__()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        for side in size:
            _check_int("StarGANDiscriminator", "image_size", side, 2)
        for name, value in (("image_channels", image_channels), ("num_domains", num_domains),
                            ("conv_dim", conv_dim), ("repeat_num", repeat_num)):
            _check_int("StarGANDiscriminator", name, value, 1)
        final = tuple(side // 2**repeat_num for side in size)  # floor((s + 2 - 4) / 2) + 1 == s // 2, repeated
        if min(final) < 1:
            raise GenResearchError(f"StarGANDiscriminator: repeat_num={repeat_num} halves {size[0]}x{size[1]} images "
                                   f"below 1x1; use repeat_num <= {stargan_depth(min(size))}")
        self.image_size, self.image_channels = size, image_channels
        layers: list[nn.Module] = [nn.Conv2d(image_channels, conv_dim, kernel_size=4, stride=2, padding=1),
                                   nn.LeakyReLU(0.01)]
        width = conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(width, width * 2, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            width *= 2
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(width, 1, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(width, num_domains, kernel_size=final, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(out_src [B, 1, h, w] real/fake scores, out_cls [B, num_domains] domain logits)."""
        if x.dim() != 4 or x.shape[1] != self.image_channels or tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"StarGANDiscriminator was built for [B, {self.image_channels}, {self.image_size[0]}, "
                             f"{self.image_size[1]}] images, got {tuple(x.shape)}")
        h = self.main(x)
        return self.conv1(h), self.conv2(h).flatten(1)
