"""Read-outs of generated captioned digits: which colour and which digit an image shows, and the benchmark's prompts.

The issue's quality claims (issue 16) are "a prompt naming a digit and a colour yields that digit (the shipped MNIST
classifier on the greyscale image) and that colour (hue measured from pixels)". Both read-outs are calibrated on
real ``captioned_digits`` images (tests/benchmarks/test_text2image_readout.py): their agreement with the true
attributes there is the ceiling generated images are judged against.

- :func:`colour_of`: the circular mean hue of the saturated, bright pixels (HSV saturation > 0.5, value > 0.3),
  named by the nearest of captioned_digits' six hues; the backgrounds are grey or desaturated, so only the stroke
  counts. An image with no such pixel reads as ``"none"``.
- :func:`digit_of`: the shipped MNIST classifier (assets/classifier-mnist5k.ckpt) on an MNIST-like greyscale image:
  the stroke map ``saturation * value`` (0 on the black and grey backgrounds, bright on the coloured stroke), then
  MNIST's own normalisation (LeCun et al.: the digit's bounding box scaled so its longer side is 20 px, aspect kept,
  placed in a 28x28 canvas with its centre of mass at the centre), bold strokes thinned towards MNIST's ink
  (thick digits are dilated by the data set, and the classifier only saw MNIST's widths), in [-1, 1] like the
  classifier's training images. Measured on the 1,000 real test-split images: 94.8% (the classifier itself reads
  97.8% of the same MNIST digits; without the thinning 93.5%).
- :func:`prompt_grid`: the easy prompts (every digit x every colour, "a large thick red seven on a black background")
  and a seeded sample of full captions over random attributes (other sizes, thicknesses, positions, backgrounds).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

SATURATION_MIN = 0.5  # the strokes are saturated hues; grey and desaturated textures stay below
VALUE_MIN = 0.3  # dark pixels have unreliable hues
NO_COLOUR = "none"
MNIST_SIDE, MNIST_BOX = 28, 20  # MNIST: the digit's box scaled to 20 px, centred by mass in 28x28
MNIST_INK_CEILING = 120.0  # sum(pixels / 255) of mnist5k digits: median 99, 90th percentile 146
BACKGROUND_QUANTILE = 0.1
BOX_THRESHOLD = 0.2  # stroke-map pixels above this share of the image's maximum make the bounding box
CLASSIFIER_ASSET = "package://classifier-mnist5k.ckpt"


class Prompt(NamedTuple):
    """One benchmark prompt and the digit and colour it names."""

    text: str
    digit: int
    colour: str


def hsv(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hue in degrees [0, 360), saturation and value in [0, 1] of RGB images [N, 3, H, W] in [-1, 1] (each [N, H, W])."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images [N, 3, H, W], got shape {tuple(images.shape)}")
    rgb = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    red, green, blue = rgb.unbind(1)
    value, argmax = rgb.max(1)
    chroma = value - rgb.min(1).values
    saturation = torch.where(value > 0, chroma / value.clamp(min=1e-8), torch.zeros_like(value))
    safe = chroma.clamp(min=1e-8)
    hue_sector = torch.stack([((green - blue) / safe) % 6, (blue - red) / safe + 2, (red - green) / safe + 4], 1)
    hue = hue_sector.gather(1, argmax[:, None])[:, 0] * 60.0
    return torch.where(chroma > 0, hue, torch.zeros_like(hue)) % 360.0, saturation, value


def _default_hues() -> dict[str, float]:
    from gen_research.data.captioned_digits import COLOURS

    return dict(COLOURS)


def colour_of(images: Tensor, hues: Mapping[str, float] | None = None) -> list[str]:
    """The named hue of each image's digit: nearest of ``hues`` (default: captioned_digits' COLOURS, name -> degrees)
    to the circular mean hue of the pixels with saturation > 0.5 and value > 0.3; ``"none"`` when there are none."""
    hues = dict(_default_hues() if hues is None else hues)
    hue, saturation, value = hsv(images)
    mask = ((saturation > SATURATION_MIN) & (value > VALUE_MIN)).float()
    radians = torch.deg2rad(hue)
    sin_sum, cos_sum = (torch.sin(radians) * mask).sum((1, 2)), (torch.cos(radians) * mask).sum((1, 2))
    mean_hue = torch.rad2deg(torch.atan2(sin_sum, cos_sum)) % 360.0
    names = list(hues)
    centres = torch.tensor([float(hues[name]) for name in names])
    distance = (mean_hue[:, None] - centres[None]).abs() % 360.0
    nearest = torch.minimum(distance, 360.0 - distance).argmin(1)
    counts = mask.sum((1, 2))
    return [names[int(index)] if count > 0 else NO_COLOUR for index, count in zip(nearest, counts)]


def stroke_map(images: Tensor) -> Tensor:
    """[N, H, W] in [0, 1]: saturation x value, bright on a coloured stroke and 0 on black or grey backgrounds; the
    greyscale image the MNIST classifier reads. Saturation is counted above the image's 10th percentile (always
    background: a digit never covers 90% of the image), so a generated background's slight tint drops out."""
    _, saturation, value = hsv(images)
    floor = saturation.flatten(1).quantile(BACKGROUND_QUANTILE, dim=1)[:, None, None]
    return ((saturation - floor) / (1 - floor).clamp(min=1e-3)).clamp(0, 1) * value


def mnist_normalise(strokes: Tensor) -> Tensor:
    """MNIST's normalisation (LeCun et al. 1998) of stroke maps [N, H, W] in [0, 1] -> [N, 1, 28, 28] in [-1, 1]: the
    bounding box of the pixels above 0.2 x the image's maximum, scaled (bilinear, antialiased, aspect kept) so its
    longer side is 20 px, pasted into a black 28x28 canvas with its centre of mass at the centre, peak scaled to 1.
    An empty map gives an empty (all -1) canvas. Written by hand: torchvision has no MNIST-style normaliser."""
    out = torch.zeros(len(strokes), 1, MNIST_SIDE, MNIST_SIDE)
    for index, stroke in enumerate(strokes.float()):
        peak = stroke.max()
        if peak <= 0:
            continue
        rows, cols = torch.nonzero(stroke > BOX_THRESHOLD * peak, as_tuple=True)
        box = stroke[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1] / peak
        height, width = box.shape
        scale = MNIST_BOX / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        digit = F.interpolate(box[None, None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1)[0, 0].clamp(0, 1)
        mass = digit.sum().clamp(min=1e-8)
        centre_row = (digit.sum(1) * torch.arange(size[0])).sum() / mass
        centre_col = (digit.sum(0) * torch.arange(size[1])).sum() / mass
        top = int(round((MNIST_SIDE - 1) / 2 - float(centre_row)))
        left = int(round((MNIST_SIDE - 1) / 2 - float(centre_col)))
        top, left = min(max(top, 0), MNIST_SIDE - size[0]), min(max(left, 0), MNIST_SIDE - size[1])
        out[index, 0, top: top + size[0], left: left + size[1]] = digit / digit.max().clamp(min=1e-8)
    return thin_to_mnist_ink(out) * 2 - 1


def thin_to_mnist_ink(canvases: Tensor) -> Tensor:
    """Stroke-width normalisation of [N, 1, 28, 28] canvases in [0, 1]: a canvas with more ink than most MNIST digits
    (bold strokes, scaled up from a thick small digit) is blended with its 3x3 grey erosion so that its ink
    matches :data:`MNIST_INK_CEILING`; thinner ones are kept. The classifier was trained on MNIST's stroke widths."""
    eroded = -F.max_pool2d(-canvases, 3, stride=1, padding=1)
    ink, eroded_ink = canvases.sum((1, 2, 3)), eroded.sum((1, 2, 3))
    blend = ((ink - MNIST_INK_CEILING) / (ink - eroded_ink).clamp(min=1e-6)).clamp(0, 1)[:, None, None, None]
    return canvases + blend * (eroded - canvases)


def load_digit_classifier(weights: str = CLASSIFIER_ASSET) -> Any:
    """The shipped MNIST classifier as gen_research/commands/sample.py loads it: the ``classifier`` feature
    extractor of the checkpoint (its ``["logits"]`` classify [N, 1, 28, 28] images in [-1, 1])."""
    from gen_research.assets import resolve_asset
    from gen_research.registry import FEATURES, load_builtins

    load_builtins()
    return FEATURES.get("classifier")(weights=resolve_asset(weights)).eval()


@torch.no_grad()
def digit_of(images: Tensor, classifier: Callable[[Tensor], Any], batch_size: int = 500) -> Tensor:
    """int64 [N]: the classifier's digit for each RGB image [N, 3, H, W] in [-1, 1], read on its MNIST-normalised
    stroke map (:func:`mnist_normalise` of :func:`stroke_map`); ``classifier`` returns logits or a dict with them."""
    mnist_like = mnist_normalise(stroke_map(images))
    digits = []
    for start in range(0, len(mnist_like), batch_size):
        output = classifier(mnist_like[start: start + batch_size])
        logits = output["logits"] if isinstance(output, Mapping) else output
        digits.append(logits.argmax(1).cpu())
    return torch.cat(digits) if digits else torch.zeros(0, dtype=torch.int64)


def easy_attributes(digit: int, colour: str) -> dict[str, Any]:
    """The easy prompt's attributes: the largest, thickest digit on black, where only the digit and the colour vary."""
    return {"digit": digit, "colour": colour, "size": "large", "thickness": "thick", "position": "center", "background": "black"}


def prompt_grid(num_full: int = 60, seed: int = 0) -> dict[str, list[Prompt]]:
    """The benchmark's prompts, captioned_digits' caption_for of: ``"easy"``, every digit 0-9 x every colour
    (digit-major, the rows of a digit x colour grid: "a large thick red seven on a black background"), and
    ``"full"``, ``num_full`` seeded random attribute draws (large digits centred, as the data set draws them)."""
    from gen_research.data import captioned_digits as data

    colours = list(data.COLOURS)
    easy = [Prompt(data.caption_for(easy_attributes(digit, colour)), digit, colour) for digit in range(10) for colour in colours]
    rng = random.Random(seed)
    full = []
    for _ in range(num_full):
        size = rng.choice(list(data.SIZES))
        attributes = {"digit": rng.randrange(10), "colour": rng.choice(colours), "size": size,
                      "thickness": rng.choice(list(data.THICKNESSES)),
                      "position": rng.choice(list(data.POSITIONS)) if size == "small" else "center",
                      "background": rng.choice(list(data.BACKGROUNDS))}
        full.append(Prompt(data.caption_for(attributes), attributes["digit"], attributes["colour"]))
    return {"easy": easy, "full": full}


def accuracy(predicted: Sequence[Any], expected: Sequence[Any]) -> float:
    """Share of positions where ``predicted`` equals ``expected`` (NaN for none)."""
    if len(predicted) != len(expected):
        raise ValueError(f"{len(predicted)} read-outs for {len(expected)} expected values")
    if not expected:
        return math.nan
    return sum(int(p) == int(e) if isinstance(e, int) else p == e for p, e in zip(predicted, expected)) / len(expected)
