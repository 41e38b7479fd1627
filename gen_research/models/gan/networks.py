"""Generators and discriminators of the plain GAN family: MLP (Goodfellow et al.) and DCGAN (Radford et al.).

Both come unconditional or class-conditional. Conditioning is either by concatenating a one-hot label
(Mirza & Osindero) or, for DCGAN, the projection discriminator (Miyato & Koyama 2018) paired with class-conditional
BatchNorm in the generator. Plain torch modules; the family's LightningModule owns losses and optimizers.

The DCGAN layout follows the paper and pytorch/examples' dcgan/main.py (no conv biases where BatchNorm follows; the
output transposed conv has none either), so at 64x64x3, base 64, latent 100 the generator has the reference's
3,576,704 parameters and the discriminator its 2,765,568.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from gen_research.errors import GenResearchError

Conditioning = Literal["concat", "projection"]
CONDITIONINGS = ("concat", "projection")

#: The DCGAN paper's slope for the discriminator's LeakyReLU (also used in the MLP networks).
LEAKY_SLOPE = 0.2


#: Sides the first transposed conv may project z to (and D's head convolves from): 4 as in the DCGAN paper, and
#: 7 so that 28x28 digits (7 -> 14 -> 28, as in PyTorch's MNIST DCGANs) need no resize and stay comparable with
#: 28x28 evaluation features (the shipped classifier).
START_SIDES = (4, 7)


def dcgan_layout(image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(start side, number of stride-2 stages): the side must be square, start * 2**stages with start in START_SIDES
    and at least one stage (8, 16, 32, 64, ... or 14, 28, 56, ...); otherwise a one-line error saying what to resize to."""
    _check_image_shape(image_shape)
    _, h, w = image_shape
    for start in START_SIDES:
        stages = round(math.log2(h / start)) if h >= 2 * start else 0
        if h == w and stages >= 1 and start * 2**stages == h:
            return start, stages
    side = 2 ** max(3, math.ceil(math.log2(max(h, w))))
    raise GenResearchError(
        f"DCGAN needs square images with side 4 * 2**k or 7 * 2**k (8, 16, 32, ... or 14, 28, 56, ...), got {h}x{w}: "
        f"set data.init_args.resize (or data.init_args.center_crop) to {side}"
    )


def dcgan_num_stages(image_shape: tuple[int, int, int]) -> int:
    """Number of stride-2 stages between the start side and the image side (see :func:`dcgan_layout`)."""
    return dcgan_layout(image_shape)[1]


def _check_image_shape(image_shape: Sequence[int]) -> None:
    if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
        raise GenResearchError(f"image_shape must be (channels, height, width) of positive sizes, got {image_shape}")


def _check_conditioning(conditioning: str) -> None:
    if conditioning not in CONDITIONINGS:
        raise GenResearchError(f"unknown conditioning {conditioning!r}: use one of {', '.join(CONDITIONINGS)}")


def _labels_or_none(labels: Tensor | None, num_classes: int) -> Tensor | None:
    """The labels a conditional network needs; an unconditional one ignores them (labelled data, plain GAN)."""
    if num_classes == 0:
        return None
    if labels is None:
        raise GenResearchError(
            f"this network is class-conditional (num_classes={num_classes}) but got no labels: use a labelled data "
            "module or set model.init_args.num_classes to 0"
        )
    return labels.long()


def _one_hot(labels: Tensor, num_classes: int, like: Tensor) -> Tensor:
    return F.one_hot(labels, num_classes).to(dtype=like.dtype, device=like.device)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap every conv, linear and embedding weight in ``module`` with spectral normalization (in place)."""
    for child in list(module.modules()):
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            if not parametrize.is_parametrized(child, "weight"):
                _spectral_norm(child)
    return module


def _raw_weight(module: nn.Module) -> Tensor:
    """The trainable weight: the original under a parametrization (spectral norm), else the weight itself."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine, then a per-class gamma (init 1) and beta (init 0) looked up from embeddings.

    The generator's side of the projection discriminator setup (Miyato & Koyama 2018): the class modulates every
    normalized feature map instead of being concatenated once to z.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise GenResearchError(f"ConditionalBatchNorm2d needs num_classes >= 1, got {num_classes}")
        self.num_features = num_features
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        gamma = self.gamma(labels.long())[:, :, None, None]
        beta = self.beta(labels.long())[:, :, None, None]
        return gamma * self.bn(x) + beta


def init_dcgan_weights(module: nn.Module) -> None:
    """The DCGAN paper's init, from the global RNG: conv/linear weights N(0, 0.02), BatchNorm weights N(1, 0.02),
    biases 0. Embeddings outside ConditionalBatchNorm2d (the projection head) get N(0, 0.02) too; a
    ConditionalBatchNorm2d keeps gamma 1 and beta 0. Spectral-normalized layers are initialized through their
    original weight."""
    conditional_embeddings = {
        id(emb) for m in module.modules() if isinstance(m, ConditionalBatchNorm2d) for emb in (m.gamma, m.beta)
    }
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            with torch.no_grad():
                _raw_weight(m).normal_(0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding) and id(m) not in conditional_embeddings:
            with torch.no_grad():
                _raw_weight(m).normal_(0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class MLPGenerator(nn.Module):
    """z (+ one-hot label) -> LeakyReLU(0.2) MLP -> tanh images [B, C, H, W] in [-1, 1]."""

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        hidden: Sequence[int] = (256, 512),
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        _check_image_shape(image_shape)
        self.latent_dim = latent_dim
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        prev = latent_dim + num_classes
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.LeakyReLU(LEAKY_SLOPE)]
            prev = width
        layers += [nn.Linear(prev, math.prod(self.image_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        z = z.flatten(1)
        labels = _labels_or_none(labels, self.num_classes)
        if labels is not None:
            z = torch.cat([z, _one_hot(labels, self.num_classes, z)], dim=1)
        return self.net(z).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """Flattened image (+ one-hot label) -> LeakyReLU(0.2) MLP -> logits [B]."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        hidden: Sequence[int] = (512, 256),
        num_classes: int = 0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_image_shape(image_shape)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        prev = math.prod(self.image_shape) + num_classes
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.LeakyReLU(LEAKY_SLOPE)]
            prev = width
        layers.append(nn.Linear(prev, 1))
        self.net = nn.Sequential(*layers)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        x = images.flatten(1)
        labels = _labels_or_none(labels, self.num_classes)
        if labels is not None:
            x = torch.cat([x, _one_hot(labels, self.num_classes, x)], dim=1)
        return self.net(x).squeeze(1)


class _GeneratorBlock(nn.Module):
    """Transposed conv (no bias: BatchNorm follows), BatchNorm or class-conditional BatchNorm, ReLU."""

    def __init__(self, c_in: int, c_out: int, first: bool, num_classes: int, start: int = 4) -> None:
        super().__init__()
        # The first block projects 1x1 -> start x start (k=start s1 p0: 4x4 in the paper); the others double the side (k4 s2 p1).
        kernel, stride, padding = (start, 1, 0) if first else (4, 2, 1)
        self.conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, bias=False)
        self.norm: nn.Module = ConditionalBatchNorm2d(c_out, num_classes) if num_classes else nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        x = self.conv(x)
        x = self.norm(x, labels) if isinstance(self.norm, ConditionalBatchNorm2d) else self.norm(x)
        return self.act(x)


class DCGANGenerator(nn.Module):
    """z -> 4x4 (7x7 for 28-pixel sides) by a transposed conv -> stride-2 transposed convs doubling the side -> tanh image (DCGAN rules).

    Channels are ``base_channels * 2**k``, halving each stage down to ``base_channels`` at the last hidden layer.
    BatchNorm + ReLU everywhere except the output (transposed conv then tanh).
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        base_channels: int = 64,
        num_classes: int = 0,
        conditioning: Conditioning = "concat",
    ) -> None:
        super().__init__()
        _check_conditioning(conditioning)
        start, stages = dcgan_layout(image_shape)
        self.latent_dim = latent_dim
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = num_classes
        self.conditioning = conditioning
        concat = num_classes > 0 and conditioning == "concat"
        norm_classes = num_classes if conditioning == "projection" else 0
        widths = [base_channels * 2**k for k in reversed(range(stages))]
        ins = [latent_dim + (num_classes if concat else 0)] + widths[:-1]
        self.blocks = nn.ModuleList(
            _GeneratorBlock(c_in, c_out, first=i == 0, num_classes=norm_classes, start=start)
            for i, (c_in, c_out) in enumerate(zip(ins, widths))
        )
        self.output = nn.ConvTranspose2d(widths[-1], self.image_shape[0], 4, 2, 1, bias=False)
        self.output_activation = nn.Tanh()
        init_dcgan_weights(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        x = z.flatten(1)
        labels = _labels_or_none(labels, self.num_classes)
        if labels is not None and self.conditioning == "concat":
            x = torch.cat([x, _one_hot(labels, self.num_classes, x)], dim=1)
        x = x[:, :, None, None]
        for block in self.blocks:
            x = block(x, labels)
        return self.output_activation(self.output(x))


class DCGANDiscriminator(nn.Module):
    """Stride-2 convs halving the side down to 4x4 (7x7) with LeakyReLU(0.2) -> logit [B] (DCGAN rules).

    BatchNorm on every conv but the input one; none at all under spectral norm (SN-GAN practice, where the convs get
    biases instead). The head is a 4x4 conv, or with projection conditioning logit = psi(h) + <embed(y), h> on the
    final features summed over space (Miyato & Koyama 2018).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        base_channels: int = 64,
        num_classes: int = 0,
        conditioning: Conditioning = "concat",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_conditioning(conditioning)
        start, stages = dcgan_layout(image_shape)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = num_classes
        self.conditioning = conditioning
        self.concat = num_classes > 0 and conditioning == "concat"
        self.projection = num_classes > 0 and conditioning == "projection"
        layers: list[nn.Module] = []
        prev = self.image_shape[0] + (num_classes if self.concat else 0)
        for k in range(stages):
            width = base_channels * 2**k
            layers.append(nn.Conv2d(prev, width, 4, 2, 1, bias=spectral_norm))
            if k > 0 and not spectral_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE))
            prev = width
        self.features = nn.Sequential(*layers)
        self.feature_dim = prev
        if self.projection:
            self.psi = nn.Linear(prev, 1)
            self.embed = nn.Embedding(num_classes, prev)
        else:
            self.head = nn.Conv2d(prev, 1, start, 1, 0, bias=spectral_norm)  # start x start -> 1x1
        init_dcgan_weights(self)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        labels = _labels_or_none(labels, self.num_classes)
        x = images
        if labels is not None and self.concat:
            maps = _one_hot(labels, self.num_classes, x)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, maps], dim=1)
        h = self.features(x)
        if not self.projection:
            return self.head(h).flatten()
        pooled = h.sum(dim=(2, 3))
        return self.psi(pooled).squeeze(1) + (self.embed(labels) * pooled).sum(dim=1)
