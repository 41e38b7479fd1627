"""Image-to-image sets derived from the shipped mnist5k, so every translation family has an offline CPU experiment.

- ``edges2digits`` (paired, pix2pix): the Sobel edge map of a digit -> the digit;
- ``digits2colour`` (unpaired, CycleGAN): grey digits (A) and coloured digits on photo textures (B), drawn from
  disjoint halves of mnist5k, so no B image is a rendering of an A image;
- ``digit_domains`` (multi-domain, StarGAN): every digit rendered in exactly one of K colour/style domains.

The sets are data, not augmentation: they are rendered once per process (lru_cache) from :data:`RENDER_SEED` with
private torch generators (no global RNG), identically on every run; ``split_seed`` only picks their splits. Labels
(digit classes) are kept for evaluation: a translation should keep its source's class.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gen_research.data.base import SPLITS, ImageDataModule, Splits
from gen_research.data.datasets import TensorImageDataset
from gen_research.data.embedded import _mnist5k_arrays
from gen_research.data.translation_datasets import DIRECTIONS, MultiDomainDataset, PairedDataset, UnpairedDataset
from gen_research.registry import DATA

#: Seed of every rendering choice (halves, colours, texture crops, domains); fixed so the sets never change.
RENDER_SEED = 14
#: Bright stroke colours of digits2colour's B domain (RGB in [0, 1]).
PALETTE = torch.tensor([[1.0, 0.25, 0.25], [0.25, 1.0, 0.25], [0.35, 0.55, 1.0], [1.0, 1.0, 0.25],
                        [0.25, 1.0, 1.0], [1.0, 0.35, 1.0], [1.0, 0.65, 0.15], [1.0, 1.0, 1.0]])
#: digit_domains' styles, in domain-id order (``num_domains`` K takes the first K).
STYLES = ("red", "green", "blue_on_white", "yellow_on_texture", "inverted", "cyan_outline")
_TEXTURE_DARKEN = 0.45  # photo backgrounds at under half brightness keep the bright strokes readable
_SIZE = 28


def _generator(offset: int) -> torch.Generator:
    return torch.Generator().manual_seed(RENDER_SEED * 1000 + offset)


def _unit_digits() -> Tensor:
    """mnist5k as float32 [5000, 1, 28, 28] in [0, 1] (the stroke intensity, used as alpha)."""
    return _mnist5k_arrays()[0].to(torch.float32) / 255.0


def _to_uint8(images: Tensor) -> Tensor:
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def sobel_magnitude(images: Tensor) -> Tensor:
    """Sobel gradient magnitude of [N, 1, H, W] images (zero padding: the digits' borders are background)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([kx, kx.T])[:, None]
    return F.conv2d(images, kernels, padding=1).pow(2).sum(1, keepdim=True).sqrt()


def sobel_edges(images: Tensor, threshold: float) -> Tensor:
    """bool [N, 1, H, W]: pixels whose Sobel magnitude exceeds ``threshold`` x that image's largest one."""
    magnitude = sobel_magnitude(images)
    return magnitude > threshold * magnitude.amax(dim=(1, 2, 3), keepdim=True)


@functools.lru_cache(maxsize=4)
def edge_maps(threshold: float = 0.25) -> Tensor:
    """edges2digits' sources: float32 [5000, 1, 28, 28], +1 on edge pixels, -1 elsewhere."""
    return sobel_edges(_unit_digits(), threshold).to(torch.float32) * 2 - 1


@functools.lru_cache(maxsize=1)
def _textures() -> Tensor:
    """scikit-learn's two sample photos (china.jpg, flower.jpg), 3x downscaled: float32 [2, 142, 213, 3] in [0, 1].
    A 28x28 crop of them is an 84x84 crop of the photo shrunk to 28 (at offsets on a 3-pixel grid): visible texture."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    photos = torch.from_numpy(np.stack(load_sample_images().images)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return F.avg_pool2d(photos, 3).permute(0, 2, 3, 1).contiguous()


def texture_patches(count: int, generator: torch.Generator) -> Tensor:
    """``count`` seeded 28x28 crops of the sample photos, darkened: float32 [count, 3, 28, 28] in [0, 1]."""
    textures = _textures()
    _, height, width, _ = textures.shape
    photo = torch.randint(0, len(textures), (count,), generator=generator)
    top = torch.randint(0, height - _SIZE + 1, (count,), generator=generator)
    left = torch.randint(0, width - _SIZE + 1, (count,), generator=generator)
    steps = torch.arange(_SIZE)
    rows, cols = (top[:, None] + steps)[:, :, None], (left[:, None] + steps)[:, None, :]
    return textures[photo[:, None, None], rows, cols].permute(0, 3, 1, 2) * _TEXTURE_DARKEN


def composite(alpha: Tensor, colour: Tensor, background: Tensor) -> Tensor:
    """The stroke ``colour`` over ``background`` with the digit intensity as alpha ([N, 3, H, W] in [0, 1])."""
    return alpha * colour + (1 - alpha) * background


@functools.lru_cache(maxsize=1)
def digit_halves() -> tuple[Tensor, Tensor]:
    """digits2colour's disjoint halves of the mnist5k indices (A, B), each sorted: no image is in both."""
    order = torch.randperm(len(_mnist5k_arrays()[1]), generator=_generator(1))
    half = len(order) // 2
    return order[:half].sort().values, order[half:].sort().values


@functools.lru_cache(maxsize=1)
def colour_digits() -> Tensor:
    """digits2colour's B images: the B half's digits, each stroke a seeded palette colour over a seeded photo
    crop: uint8 [2500, 3, 28, 28]."""
    alpha = _unit_digits()[digit_halves()[1]]
    generator = _generator(2)
    colour = PALETTE[torch.randint(0, len(PALETTE), (len(alpha),), generator=generator)][:, :, None, None]
    return _to_uint8(composite(alpha, colour, texture_patches(len(alpha), generator)))


def _render_style(style: str, alpha: Tensor, generator: torch.Generator) -> Tensor:
    """Digits [N, 1, 28, 28] in [0, 1] drawn in one of :data:`STYLES`: [N, 3, 28, 28] in [0, 1]."""
    black = torch.zeros(len(alpha), 3, _SIZE, _SIZE)
    rgb = {"red": (1.0, 0.15, 0.15), "green": (0.15, 1.0, 0.15), "blue_on_white": (0.1, 0.2, 0.9),
           "yellow_on_texture": (1.0, 1.0, 0.2), "inverted": (0.0, 0.0, 0.0), "cyan_outline": (0.1, 1.0, 1.0)}[style]
    colour = torch.tensor(rgb)[None, :, None, None]
    if style in ("blue_on_white", "inverted"):
        return composite(alpha, colour, black + 1)
    if style == "yellow_on_texture":
        return composite(alpha, colour, texture_patches(len(alpha), generator))
    if style == "cyan_outline":  # the stroke's outline instead of the stroke
        magnitude = sobel_magnitude(alpha)
        return composite((magnitude / magnitude.amax(dim=(1, 2, 3), keepdim=True)).clamp(0, 1), colour, black)
    return composite(alpha, colour, black)


@functools.lru_cache(maxsize=len(STYLES))
def styled_digits(num_domains: int) -> tuple[Tensor, Tensor]:
    """digit_domains' images and domains: every mnist5k digit in exactly one of the first ``num_domains`` styles,
    assigned by a seeded permutation in turn (the domains' sizes differ by at most one): (uint8 [5000, 3, 28, 28],
    int64 [5000])."""
    alpha = _unit_digits()
    order = torch.randperm(len(alpha), generator=_generator(3))
    domains = torch.empty(len(alpha), dtype=torch.int64)
    domains[order] = torch.arange(len(alpha)) % num_domains
    images = torch.empty(len(alpha), 3, _SIZE, _SIZE, dtype=torch.uint8)
    for domain, style in enumerate(STYLES[:num_domains]):
        chosen = domains == domain
        images[chosen] = _to_uint8(_render_style(style, alpha[chosen], _generator(10 + domain)))
    return images, domains


class _DerivedDigits(ImageDataModule):
    """What the derived digit sets share: mnist5k's 10 classes, no resize (28x28), the splits' test fraction."""

    # Spelled out (not **kwargs) so LightningCLI shows and checks every argument of the subclasses.
    def __init__(
        self,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        random_flip: bool = False,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        data_on_device: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__(
            batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed, random_flip=random_flip,
            num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers,
            data_on_device=data_on_device,
        )  # fmt: skip
        self._check_fraction("test_fraction", test_fraction)
        self.test_fraction = test_fraction

    @property
    def num_classes(self) -> int | None:
        return 10

    @property
    def source_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the ``source`` images in a batch."""
        return (1, _SIZE, _SIZE)


@DATA.register("edges2digits", "paired: Sobel edge maps of mnist5k digits -> the digits (1x28x28, pix2pix); offline")
class EdgesToDigits(_DerivedDigits):
    """Paired edges -> digit: the source is the binary Sobel edge map of the digit in [0, 1] (pixels above
    ``edge_threshold`` x the image's largest gradient magnitude are +1, the rest -1), the target the digit.
    Items ``{"source", "target", "image" (= target), "label" (the digit's class)}``. Sobel only: Canny would need
    scikit-image, which is not a dependency.

    Args:
        edge_threshold: fraction of each image's largest Sobel magnitude above which a pixel is an edge.
        test_fraction: share of the 5,000 pairs held out as the test split (seeded by split_seed).
    """

    data_name = "edges2digits"
    batch_fields = ("image", "label", "source", "target")

    def __init__(
        self,
        edge_threshold: float = 0.25,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        random_flip: bool = False,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        data_on_device: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__(
            test_fraction=test_fraction, batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed,
            random_flip=random_flip, num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers,
            data_on_device=data_on_device,
        )  # fmt: skip
        if not 0 < edge_threshold < 1:
            self._fail(f"edge_threshold must be in (0, 1), got {edge_threshold}", "edge_threshold")
        self.edge_threshold = float(edge_threshold)

    def _raw_shape(self) -> tuple[int, int, int]:
        return (1, _SIZE, _SIZE)

    def _build_splits(self) -> Splits:
        digits, labels = _mnist5k_arrays()
        dataset = PairedDataset(TensorImageDataset(edge_maps(self.edge_threshold), labels), TensorImageDataset(digits, labels))
        return self.split_pool(dataset, labels, self.test_fraction)


@DATA.register("digits2colour", "unpaired: grey mnist5k digits (A) and coloured digits on photo textures (B), CycleGAN; offline")
class DigitsToColour(_DerivedDigits):
    """Unpaired grey -> colour digits. Domain A: grey digits (1x28x28); domain B: digits with a seeded bright stroke
    colour over a darkened crop of scikit-learn's sample photos (3x28x28). A and B come from disjoint halves of
    mnist5k (:func:`digit_halves`), so no pairing exists. Items as unpaired_folder's: ``{"source": A, "image": B,
    "label": the source's class, "domain": 0, "target_domain": 1}``; the label is for evaluation only (class
    preservation). Crops and flips draw separately for A and B.

    Args:
        eval_direction: AtoB: validation and test items translate grey -> colour; BtoA: ``{"source": B, "image": A,
            "label": B's class, "domain": 1, "target_domain": 0}``. Training items always have an A source.
        test_fraction: share of each half held out as the test split (seeded by split_seed).
    """

    data_name = "digits2colour"
    batch_fields = ("image", "label", "source", "domain", "target_domain")
    joint_geometry = False
    domain_names = ("A", "B")

    def __init__(
        self,
        eval_direction: str = "AtoB",
        test_fraction: float = 0.1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        random_flip: bool = False,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        data_on_device: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__(
            test_fraction=test_fraction, batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed,
            random_flip=random_flip, num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers,
            data_on_device=data_on_device,
        )  # fmt: skip
        if eval_direction not in DIRECTIONS:
            self._fail(f"eval_direction must be one of {', '.join(DIRECTIONS)}, got {eval_direction!r}", "eval_direction")
        self.eval_direction = eval_direction

    def _raw_shape(self) -> tuple[int, int, int]:
        return (3, _SIZE, _SIZE)

    def _build_splits(self) -> Splits:
        digits, labels = _mnist5k_arrays()
        a_half, b_half = digit_halves()
        colour = colour_digits()
        a_parts = self.seeded_split(len(a_half), self.test_fraction)
        b_parts = self.seeded_split(len(b_half), self.test_fraction)
        splits: Splits = {}
        for offset, (name, a_part, b_part) in enumerate(zip(SPLITS, a_parts, b_parts)):
            a = TensorImageDataset(digits[a_half[a_part]], labels[a_half[a_part]])
            b = TensorImageDataset(colour[b_part], labels[b_half[b_part]])
            reverse = name != "train" and self.eval_direction == "BtoA"
            dataset = UnpairedDataset(a, b, seed=self.split_seed * 3 + offset, reverse=reverse)
            splits[name] = (dataset, torch.zeros(len(dataset), dtype=torch.int64))
        return splits


@DATA.register("digit_domains", "multi-domain: mnist5k digits, each in one of K colour/style domains (3x28x28, StarGAN); offline")
class DigitDomains(_DerivedDigits):
    """mnist5k digits in ``num_domains`` colour/style domains (the first K of :data:`STYLES`: red, green,
    blue_on_white, yellow_on_texture, inverted, cyan_outline), each digit in exactly one (seeded, balanced).
    Items as multidomain_folder's: ``{"image": x, "domain": its style id, "target_domain": every other
    domain in turn, "label": the digit's class}`` (the class is for evaluation: class preservation).

    Args:
        num_domains: how many styles (2 to 6).
        test_fraction: share of the 5,000 images held out as the test split (seeded by split_seed).
    """

    data_name = "digit_domains"
    batch_fields = ("image", "label", "domain", "target_domain")
    multi_label = False

    def __init__(
        self,
        num_domains: int = 3,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        random_flip: bool = False,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        data_on_device: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__(
            test_fraction=test_fraction, batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed,
            random_flip=random_flip, num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers,
            data_on_device=data_on_device,
        )  # fmt: skip
        if not 2 <= num_domains <= len(STYLES):
            self._fail(f"num_domains must be 2 to {len(STYLES)} (the styles {', '.join(STYLES)}), got {num_domains}",
                       "num_domains")
        self.num_domains = num_domains
        self.domain_names: tuple[str, ...] = STYLES[:num_domains]

    @property
    def source_shape(self) -> tuple[int, int, int]:
        return (3, _SIZE, _SIZE)

    def _raw_shape(self) -> tuple[int, int, int]:
        return (3, _SIZE, _SIZE)

    def _build_splits(self) -> Splits:
        images, domains = styled_digits(self.num_domains)
        labels = _mnist5k_arrays()[1]
        splits: Splits = {}
        for name, indices in zip(SPLITS, self.seeded_split(len(labels), self.test_fraction)):
            dataset = MultiDomainDataset(TensorImageDataset(images[indices], labels[indices]), domains[indices],
                                         self.num_domains, multi_label=False)
            splits[name] = (dataset, labels[indices])
        return splits


__all__ = ["DigitDomains", "DigitsToColour", "EdgesToDigits", "PALETTE", "RENDER_SEED", "STYLES", "colour_digits",
           "digit_halves", "edge_maps", "sobel_edges", "styled_digits"]
