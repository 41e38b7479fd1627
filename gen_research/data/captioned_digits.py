"""``captioned_digits``: mnist5k's real digits rendered with varied colour, size, stroke thickness, position and
background, each with a caption generated from those attributes ("a small thick red seven at the top left on a
wooden background"): offline text-to-image data whose prompts can be checked against the pixels.

The set is data, not augmentation: every attribute is drawn from a numpy Generator seeded by (attribute_seed, item
index), so the same arguments always give the same images, captions and attributes (kept for evaluation:
:meth:`CaptionedDigits.attributes`). Pixels: gen_research/data/captioned_render.py.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from gen_research.data.base import Splits
from gen_research.data.buckets import Bucket
from gen_research.data.captioned import CAPTIONED_FIELDS, CaptionedDataModule
from gen_research.data.captioned_render import (background_canvas, depth_map, digit_alphas, paint_digit, place_box,
                                                resize_and_cut, to_uint8)
from gen_research.data.embedded import _mnist5k_arrays
from gen_research.data.transforms import to_signed_unit
from gen_research.errors import GenResearchError
from gen_research.registry import DATA

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Six fully saturated hues 60 degrees apart (name -> hue in degrees); 300 (magenta) is called purple.
COLOURS = {"red": 0, "yellow": 60, "green": 120, "cyan": 180, "blue": 240, "purple": 300}
#: The digit box's side as a share of the canvas's shorter side.
SIZES = {"small": 0.55, "large": 0.9}
THICKNESSES = ("thin", "thick")
#: Where a small digit sits; large digits are always at the center.
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
BACKGROUNDS = ("black", "wooden", "stone")
#: micro_conditioning: each item's "original" resolution, in multiples of its output size (seeded per item).
ORIGINAL_SCALES = (1.0, 1.5, 2.0)
ATTRIBUTE_NAMES = ("digit", "colour", "size", "thickness", "position", "background")
_DRAWS = 13  # uniform draws per item, always all of them, so an option never shifts the other attributes


def colour_rgb(name: str) -> tuple[float, float, float]:
    """The fully saturated, full-value RGB (in [0, 1]) of a colour of :data:`COLOURS`."""
    return colorsys.hsv_to_rgb(COLOURS[name] / 360.0, 1.0, 1.0)


def caption_for(attributes: dict[str, Any]) -> str:
    """The one caption template: "a small thick red seven at the top left on a wooden background"; large digits
    (always centred) name no position, small centred ones say "in the center"."""
    words = f"a {attributes['size']} {attributes['thickness']} {attributes['colour']} {DIGIT_WORDS[attributes['digit']]}"
    if attributes["size"] == "small":
        words += " in the center" if attributes["position"] == "center" else f" at the {attributes['position']}"
    return f"{words} on a {attributes['background']} background"


def _choice(pattern: Any) -> str:
    return "(" + "|".join(re.escape(word) for word in pattern) + ")"


_CAPTION = re.compile(
    rf"a {_choice(SIZES)} {_choice(THICKNESSES)} {_choice(COLOURS)} {_choice(DIGIT_WORDS)}"
    rf"(?: at the {_choice(POSITIONS[:4])}| (in the center))? on a {_choice(BACKGROUNDS)} background"
)


def parse_caption(caption: str) -> dict[str, Any]:
    """The attributes a caption of :func:`caption_for` names (its inverse); ValueError for any other text."""
    match = _CAPTION.fullmatch(caption)
    if match is None:
        raise ValueError(f"not a captioned_digits caption: {caption!r}")
    size, thickness, colour, digit, corner, center, background = match.groups()
    if (size == "large") != (corner is None and center is None):
        raise ValueError(f"a large digit names no position and a small one always does: {caption!r}")
    return {"digit": DIGIT_WORDS.index(digit), "colour": colour, "size": size, "thickness": thickness,
            "position": corner or "center", "background": background}


@dataclass(frozen=True)
class Geometry:
    """How one item is framed (SDXL's micro-conditioning): rendered at ``original_size``, resized to ``resized``,
    cut to ``output`` at ``crop_coords`` (top, left); all (height, width) in pixels."""

    output: Bucket
    original_size: Bucket
    resized: Bucket
    crop_coords: tuple[int, int]


def draw_item(attribute_seed: int, index: int, digit: int, sizes: list[Bucket], micro_conditioning: bool,
              crop_fraction: float) -> tuple[dict[str, Any], Geometry, np.ndarray]:
    """One item's attributes, geometry and layout draws (jitter, texture offset) from its own (attribute_seed,
    index) generator."""
    u = np.random.default_rng([attribute_seed, index]).random(_DRAWS)

    def pick(options: Any, draw: float) -> Any:
        options = list(options)
        return options[int(draw * len(options))]

    size = pick(SIZES, u[1])
    attributes = {"digit": int(digit), "colour": pick(COLOURS, u[0]), "size": size, "thickness": pick(THICKNESSES, u[2]),
                  "position": pick(POSITIONS, u[3]) if size == "small" else "center", "background": pick(BACKGROUNDS, u[4])}
    output = sizes[int(u[9] * len(sizes))]
    margin = crop_fraction if micro_conditioning else 0.0
    resized = (round(output[0] * (1 + margin)), round(output[1] * (1 + margin)))
    scale = pick(ORIGINAL_SCALES, u[10]) if micro_conditioning else 1.0
    original = (round(resized[0] * scale), round(resized[1] * scale))
    crop = (int(u[11] * (resized[0] - output[0] + 1)), int(u[12] * (resized[1] - output[1] + 1)))
    return attributes, Geometry(output, original, resized, crop), u


def render_item(attributes: dict[str, Any], geometry: Geometry, draws: np.ndarray, alpha: Tensor) -> Tensor:
    """The item's pixels at its output size: float32 [4, H, W] in [0, 1] (RGB, then the stroke alpha)."""
    height, width = geometry.original_size
    box = max(1, round(SIZES[attributes["size"]] * min(height, width)))
    vertical, horizontal = {"top left": ("start", "start"), "top right": ("start", "end"), "bottom left": ("end", "start"),
                            "bottom right": ("end", "end"), "center": ("middle", "middle")}[attributes["position"]]
    top, left = place_box(height, box, vertical, draws[5]), place_box(width, box, horizontal, draws[6])
    background = background_canvas(attributes["background"], height, width, (draws[7], draws[8]))
    canvas = paint_digit(alpha, torch.tensor(colour_rgb(attributes["colour"])), background, box, top, left)
    return resize_and_cut(canvas, geometry.resized, geometry.crop_coords, geometry.output)


class CaptionedDigitsSet(Dataset):
    """The rendered items, held as one uint8 tensor per bucket; items are dicts of the batch fields."""

    def __init__(self, images: list[Tensor], depths: list[Tensor] | None, bucket_of: list[int], rows: list[int],
                 labels: Tensor, captions: list[str], original_size: Tensor, crop_coords: Tensor,
                 attributes: list[dict[str, Any]]) -> None:
        self.images, self.depths, self.bucket_of, self.rows = images, depths, bucket_of, rows
        self.labels, self.captions, self.attributes = labels, captions, attributes
        self.original_size, self.crop_coords = original_size, crop_coords

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        bucket, row = self.bucket_of[index], self.rows[index]
        item = {"image": to_signed_unit(self.images[bucket][row]), "label": self.labels[index],
                "caption": self.captions[index], "original_size": self.original_size[index],
                "crop_coords": self.crop_coords[index]}
        if self.depths is not None:
            item["depth"] = to_signed_unit(self.depths[bucket][row])
        return item


def render_set(digits: np.ndarray, labels: np.ndarray, variants_per_digit: int, attribute_seed: int,
               sizes: list[Bucket], micro_conditioning: bool, crop_fraction: float, depth: bool) -> CaptionedDigitsSet:
    """Render variants_per_digit items of every MNIST digit (uint8 [N, 28, 28]); item index = digit * V + variant."""
    alphas = {name: torch.from_numpy(digit_alphas(digits, name == "thick")) for name in THICKNESSES}
    per_bucket: list[list[Tensor]] = [[] for _ in sizes]
    bucket_of, rows, captions, attributes_list, originals, crops = [], [], [], [], [], []
    for index in range(len(digits) * variants_per_digit):
        source = index // variants_per_digit
        attributes, geometry, draws = draw_item(attribute_seed, index, int(labels[source]), sizes,
                                                micro_conditioning, crop_fraction)
        bucket = sizes.index(geometry.output)
        rows.append(len(per_bucket[bucket]))
        per_bucket[bucket].append(to_uint8(render_item(attributes, geometry, draws, alphas[attributes["thickness"]][source])))
        bucket_of.append(bucket)
        captions.append(caption_for(attributes))
        attributes_list.append({**attributes, "mnist_index": source, "bucket": geometry.output,
                                "original_size": geometry.original_size, "crop_coords": geometry.crop_coords})
        originals.append(geometry.original_size)
        crops.append(geometry.crop_coords)
    stacked = [torch.stack(items) if items else torch.zeros(0, 4, *size, dtype=torch.uint8)
               for items, size in zip(per_bucket, sizes)]
    depths = None
    if depth:  # the stroke alpha's distance transform, per image (offline, once)
        depths = [to_uint8(torch.from_numpy(np.stack([depth_map(a) for a in s[:, 3].numpy() / 255.0])))[:, None]
                  if len(s) else torch.zeros(0, 1, *s.shape[-2:], dtype=torch.uint8) for s in stacked]
    images = [s[:, :3].contiguous() for s in stacked]
    labels_out = torch.as_tensor(np.repeat(labels, variants_per_digit), dtype=torch.int64)
    return CaptionedDigitsSet(images, depths, bucket_of, rows, labels_out, captions,
                              torch.tensor(originals, dtype=torch.int64), torch.tensor(crops, dtype=torch.int64),
                              attributes_list)


@DATA.register("captioned_digits", "mnist5k digits in 6 colours, 2 sizes and thicknesses, 5 positions, 3 backgrounds, "
               "with generated captions (3x32x32, text-to-image); offline")
class CaptionedDigits(CaptionedDataModule):
    """Captioned renderings of mnist5k: 3 x image_size x image_size (or each bucket's size), labels = digits.

    Splits are of MNIST digits, not items: every variant of one digit is in the same split, so no test image shares
    its strokes with a training image.

    Args:
        image_size: side of the square images (when ``buckets`` is null).
        variants_per_digit: renderings of each MNIST digit, each with its own attributes (2: 10,000 items).
        attribute_seed: seed of every item's attributes and layout (with the item index).
        limit: use only the first this many of the 5,000 MNIST digits (quick tests).
        depth: also yield ``depth`` [1, H, W] in [-1, 1]: the strokes' distance transform, 1 = stroke centres.
        micro_conditioning: render each item at a seeded "original" size (1, 1.5 or 2 times its output size),
            resize and crop it, and record those as ``original_size``/``crop_coords`` (SDXL). Off: every item is
            rendered at its output size, so original_size is (H, W) and crop_coords (0, 0).
        random_crop_fraction: with micro_conditioning, resize to (1 + this) times the output size and cut a seeded
            output-size window, so crop_coords range over [0, this * side].
        caption_dropout, buckets: see CaptionedDataModule; test_fraction and the rest: see ImageDataModule.
    """

    data_name = "captioned_digits"

    def __init__(
        self,
        image_size: int = 32,
        variants_per_digit: int = 2,
        attribute_seed: int = 0,
        limit: int | None = None,
        depth: bool = False,
        micro_conditioning: bool = False,
        random_crop_fraction: float = 0.0,
        caption_dropout: float = 0.1,
        buckets: list[list[int]] | None = None,
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
            caption_dropout=caption_dropout, buckets=buckets, batch_size=batch_size, val_fraction=val_fraction,
            split_seed=split_seed, random_flip=random_flip, num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=persistent_workers, data_on_device=data_on_device,
        )  # fmt: skip
        if image_size < 8:
            self._fail(f"image_size must be >= 8, got {image_size}", "image_size")
        self._check_positive("variants_per_digit", variants_per_digit)
        if limit is not None and not 1 <= limit <= 5000:
            self._fail(f"limit must be in 1..5000 (mnist5k's digits) or null, got {limit}", "limit")
        if not 0 <= random_crop_fraction <= 0.5:
            self._fail(f"random_crop_fraction must be in [0, 0.5], got {random_crop_fraction}", "random_crop_fraction")
        if random_crop_fraction > 0 and not micro_conditioning:
            self._fail("random_crop_fraction needs micro_conditioning: true (crops are recorded as crop_coords)",
                       "micro_conditioning")
        self._check_fraction("test_fraction", test_fraction)
        self.image_size, self.variants_per_digit, self.attribute_seed = image_size, variants_per_digit, attribute_seed
        self.limit, self.depth, self.micro_conditioning = limit, depth, micro_conditioning
        self.random_crop_fraction, self.test_fraction = random_crop_fraction, test_fraction
        self.batch_fields = CAPTIONED_FIELDS + (("depth",) if depth else ())
        self.dataset: CaptionedDigitsSet | None = None

    @property
    def num_classes(self) -> int | None:
        return 10

    @property
    def sizes(self) -> list[Bucket]:
        """The output sizes (h, w): the buckets, or the one square image_size."""
        return self.buckets if self.buckets is not None else [(self.image_size, self.image_size)]

    def _raw_shape(self) -> tuple[int, int, int]:
        return (3, *self.sizes[0])  # with buckets: the first bucket's (the default size to sample at)

    def _digits(self) -> tuple[np.ndarray, np.ndarray]:
        images, labels = _mnist5k_arrays()
        # mnist5k is sorted by class: an evenly strided subset keeps all ten digits in a limited set.
        chosen = np.arange(self.limit) * len(labels) // self.limit if self.limit is not None else np.arange(len(labels))
        return images[chosen, 0].numpy(), labels[chosen].numpy()

    def _build_splits(self) -> Splits:
        digits, labels = self._digits()
        self.dataset = render_set(digits, labels, self.variants_per_digit, self.attribute_seed, self.sizes,
                                  self.micro_conditioning, self.random_crop_fraction, self.depth)
        parts = self.seeded_split(len(digits), self.test_fraction)
        splits: Splits = {}
        for name, digit_indices in zip(("train", "val", "test"), parts):
            items = (digit_indices.sort().values[:, None] * self.variants_per_digit
                     + torch.arange(self.variants_per_digit)).flatten()
            splits[name] = (Subset(self.dataset, items.tolist()), self.dataset.labels[items])
        return splits

    def attributes(self, index: int) -> dict[str, Any]:
        """The attributes of item ``index`` of the whole set (a split's ``Subset.indices`` name its items): digit,
        colour, size, thickness, position, background, and mnist_index, bucket, original_size, crop_coords."""
        digits, labels = self._digits()
        count = len(digits) * self.variants_per_digit
        if not 0 <= index < count:
            raise GenResearchError(f"{self.data_name}: item {index} does not exist; the set has items 0..{count - 1}")
        if self.dataset is not None:
            return dict(self.dataset.attributes[index])
        source = index // self.variants_per_digit
        attributes, geometry, _ = draw_item(self.attribute_seed, index, int(labels[source]), self.sizes,
                                            self.micro_conditioning, self.random_crop_fraction)
        return {**attributes, "mnist_index": source, "bucket": geometry.output,
                "original_size": geometry.original_size, "crop_coords": geometry.crop_coords}
