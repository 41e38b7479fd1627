"""The pixels of ``captioned_digits``: an MNIST digit painted in a saturated colour onto a black or grey photo-texture
canvas, the SDXL-style geometry (render at an "original" size, resize, crop) and the depth-like map.

Everything here is deterministic given its arguments (the random choices are made by the caller, from its seeded
attribute draws): the same item always gives the same pixels.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: The part of the 28x28 MNIST frame kept as the "digit box": MNIST centres a 20x20 digit by its centre of mass, so
#: strokes can reach 2 pixels past that box; the central 24x24 keeps them all.
DIGIT_CROP = slice(2, 26)
#: Thick strokes: grey dilation of the 28x28 digit with a 3x3 window (2x2 was hard to see once a digit is shrunk to
#: a 17-pixel box); thin strokes are MNIST's own.
THICK_DILATION = 3
#: Texture intensity range: dark and low-contrast grey, so the saturated strokes are the only colour in the image.
TEXTURE_LOW, TEXTURE_HIGH = 0.05, 0.35
# The photo regions each texture comes from, as (top, bottom, left, right) fractions of the photo, and the photo:
# the flower's packed petals read as cobbles ("stone"); the temple and trees of china.jpg, blurred along rows, as
# wood grain ("wooden"). The plain sky is left out: a crop of it would be flat grey.
_TEXTURE_SOURCES = {"stone": ("flower.jpg", (0.2, 1.0, 0.27, 0.7)), "wooden": ("china.jpg", (0.35, 1.0, 0.0, 1.0))}
# A texture region's shorter side, in multiples of the canvas's longer side: crops show the same amount of the
# photo whatever the canvas resolution (a larger "original" is the same scene at more pixels).
_REGION_SCALE = 1.6
_GRAIN_LENGTH = 0.25  # wood grain: a row blur a quarter of the canvas long


def digit_alphas(digits: np.ndarray, thick: bool) -> np.ndarray:
    """uint8 MNIST digits [N, 28, 28] as stroke alpha in [0, 1] (float32 [N, 24, 24]), dilated when ``thick``."""
    from scipy import ndimage

    if thick:
        digits = ndimage.grey_dilation(digits, size=(1, THICK_DILATION, THICK_DILATION))
    return digits[:, DIGIT_CROP, DIGIT_CROP].astype(np.float32) / 255.0


@functools.lru_cache(maxsize=2)
def _grey_photo(name: str) -> Tensor:
    """One of scikit-learn's sample photos in grey (ITU-R 601 luma), float32 [H, W] in [0, 1]."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    index = [path.rsplit("/", 1)[-1].rsplit("\\", 1)[-1] for path in photos.filenames].index(name)
    rgb = torch.from_numpy(np.array(photos.images[index])).to(torch.float32) / 255.0  # a writable copy
    return rgb @ torch.tensor([0.299, 0.587, 0.114])


@functools.lru_cache(maxsize=32)
def texture_region(background: str, height: int, width: int) -> Tensor:
    """The photo region of ``background`` scaled for a ``height x width`` canvas, grey in [TEXTURE_LOW, TEXTURE_HIGH]:
    float32 [Hr, Wr] with both sides at least the canvas's."""
    name, (top, bottom, left, right) = _TEXTURE_SOURCES[background]
    photo = _grey_photo(name)
    h, w = photo.shape
    region = photo[int(top * h) : int(bottom * h), int(left * w) : int(right * w)]
    scale = _REGION_SCALE * max(height, width) / min(region.shape)
    size = [max(height, round(region.shape[0] * scale)), max(width, round(region.shape[1] * scale))]
    region = F.interpolate(region[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    if background == "wooden":
        length = max(3, round(_GRAIN_LENGTH * max(height, width))) | 1  # odd: the blur stays centred
        region = F.avg_pool2d(region[None, None], (1, length), stride=1, padding=(0, length // 2),
                              count_include_pad=False)[0, 0]
    low, high = region.min(), region.max()
    region = (region - low) / (high - low).clamp_min(1e-6)  # the region's full range, then squeezed: low contrast
    return TEXTURE_LOW + (TEXTURE_HIGH - TEXTURE_LOW) * region


def background_canvas(background: str, height: int, width: int, offset: tuple[float, float]) -> Tensor:
    """A grey canvas float32 [height, width]: black, or the texture crop at ``offset`` (fractions in [0, 1))."""
    if background == "black":
        return torch.zeros(height, width)
    region = texture_region(background, height, width)
    top = int(offset[0] * (region.shape[0] - height + 1))
    left = int(offset[1] * (region.shape[1] - width + 1))
    return region[top : top + height, left : left + width]


def place_box(extent: int, box: int, where: str, jitter: float) -> int:
    """The first pixel of a ``box`` along a canvas side of ``extent``: near the ``start``/``end`` or in the
    ``middle``, moved inwards (or around the middle) by ``jitter`` in [0, 1) times 6% of the side."""
    edge, spread = 0.04 * extent, 0.06 * extent
    if where == "start":
        first = edge + jitter * spread
    elif where == "end":
        first = extent - box - edge - jitter * spread
    else:
        first = (extent - box) / 2 + (jitter - 0.5) * spread
    return int(round(min(max(first, 0), extent - box)))


def paint_digit(alpha: Tensor, colour: Tensor, background: Tensor, box: int, top: int, left: int) -> Tensor:
    """The digit ``alpha`` [24, 24] scaled to ``box`` pixels at (top, left), painted in ``colour`` (RGB [3]) over
    the grey ``background`` [H, W]: float32 [4, H, W] (RGB in [0, 1], then the stroke alpha)."""
    height, width = background.shape
    scaled = F.interpolate(alpha[None, None], size=(box, box), mode="bilinear", antialias=True, align_corners=False)
    canvas_alpha = torch.zeros(height, width)
    canvas_alpha[top : top + box, left : left + box] = scaled[0, 0].clamp(0, 1)
    # Alpha compositing of a saturated colour over grey keeps the colour's hue in every mixed pixel.
    rgb = canvas_alpha * colour[:, None, None] + (1 - canvas_alpha) * background
    return torch.cat([rgb, canvas_alpha[None]])


def resize_and_cut(canvas: Tensor, resized: tuple[int, int], crop: tuple[int, int], out: tuple[int, int]) -> Tensor:
    """SDXL's data geometry: resize [C, H, W] to ``resized`` (antialiased), then cut ``out`` at ``crop`` (top, left)."""
    if tuple(canvas.shape[-2:]) != tuple(resized):
        canvas = F.interpolate(canvas[None], size=resized, mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = crop
    return canvas[:, top : top + out[0], left : left + out[1]].clamp(0, 1)


def depth_map(alpha: np.ndarray) -> np.ndarray:
    """A depth-like map of one stroke alpha [H, W]: the Euclidean distance of each stroke pixel to the background
    (scipy.ndimage.distance_transform_edt), divided by its largest value: float32 in [0, 1], 1 = the strokes'
    centres (near), 0 = background (far). No stroke pixel: all 0."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(alpha > 0.5)
    peak = distance.max()
    return (distance / peak if peak > 0 else distance).astype(np.float32)


def to_uint8(values: Tensor) -> Tensor:
    """[0, 1] floats as uint8 0..255, rounded (+0.5 then truncation: torch's round() is ~50x slower on small tensors)."""
    return values.clamp(0, 1).mul(255).add(0.5).to(torch.uint8)
