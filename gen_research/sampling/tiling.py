"""Translating images larger than a network likes in overlapping tiles, blended without seams.

None of the reference implementations (junyanz/pytorch-CycleGAN-and-pix2pix, yunjey/stargan) tile: they resize
or crop to the training size. A fully convolutional translator can take any size, but memory grows with it, so
``translate --tile N --overlap M`` cuts an image into tiles of N x N that overlap by at least M pixels, translates
them in batches and blends them with weights that fade in from each inner tile edge (written by hand: no library
offers blending that is exact for a network of known receptive field).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

MIN_TILE = 8
MIN_TILED_OVERLAP = 4  # overlap // 4 >= 1: at least one pixel of every inner edge is left out


def check_tiling(tile: int, overlap: int, height: int | None = None, width: int | None = None) -> None:
    """ValueError unless ``tile`` >= 8 and 0 <= ``overlap`` <= tile // 2, and, when an image of ``height`` x
    ``width`` is cut into several tiles, ``overlap`` >= 4 (the blend needs a margin and a ramp)."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < MIN_TILE:
        raise ValueError(f"tile {tile!r} is too small: tiles must be an integer of at least {MIN_TILE} pixels")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap {overlap!r} must be an integer in [0, tile // 2 = {tile // 2}]")
    tiled = (height is not None and height > tile) or (width is not None and width > tile)
    if tiled and overlap < MIN_TILED_OVERLAP:
        raise ValueError(f"overlap {overlap} is too small to blend the tiles of a {width}x{height} image (tiles of {tile}): "
                         f"tiling needs overlap >= {MIN_TILED_OVERLAP}")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles of one axis start: one tile when ``length`` <= ``tile``, else the fewest tiles whose
    neighbours overlap by at least ``overlap``, spread evenly (the first at 0, the last ending at ``length``)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def edge_profile(size: int, overlap: int, inner_start: bool, inner_end: bool) -> Tensor:
    """Blend weight along one axis of a tile of ``size``: on an inner side (one inside the image, where another
    tile overlaps), 0 for the first overlap // 4 pixels, then a linear rise to 1 over overlap // 2 pixels; a side at
    the image border weighs 1 throughout."""
    margin, ramp = overlap // 4, max(overlap // 2, 1)
    position = torch.arange(size, dtype=torch.float64)
    weight = torch.ones(size, dtype=torch.float64)
    if inner_start:
        weight = torch.minimum(weight, ((position - margin + 1) / ramp).clamp(0, 1))
    if inner_end:
        weight = torch.minimum(weight, ((size - 1 - position - margin + 1) / ramp).clamp(0, 1))
    return weight


def blend_weights(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, Tensor]]:
    """(top, left, weight [h, w]) of every tile of a ``height`` x ``width`` image: outer products of the axes' profiles."""
    tiles = []
    rows, columns = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    tile_height, tile_width = min(tile, height), min(tile, width)
    for top in rows:
        vertical = edge_profile(tile_height, overlap, top > 0, top + tile_height < height)
        for left in columns:
            horizontal = edge_profile(tile_width, overlap, left > 0, left + tile_width < width)
            tiles.append((top, left, torch.outer(vertical, horizontal)))
    return tiles


def translate_tiled(translate_fn: Callable[[Tensor], Tensor], images: Tensor, tile: int, overlap: int, batch_size: int = 16) -> Tensor:
    """``translate_fn`` applied to ``images`` [N, C, H, W] tile by tile: output [N, C', H, W].

    ``translate_fn`` maps [B, C, h, w] -> [B, C', h, w]. Each axis longer than ``tile`` is cut into the fewest
    evenly spread tiles that overlap their neighbours by at least ``overlap`` pixels (an axis of at most ``tile``
    is one tile, so ``tile`` >= H and W gives exactly the untiled result); the tiles go through ``translate_fn`` in
    batches of ``batch_size`` and output = sum(weight * tile output) / sum(weight), with the weights of
    :func:`edge_profile` (0 near an inner tile edge, rising linearly, 1 in the middle and at the image border).

    Why this blend: a tile's output is exact (equal to the untiled output) wherever the pixels it sees all lie
    inside the tile, i.e. from the network's receptive radius on from an inner edge. So when overlap // 4 >= that
    radius and the network uses no image-wide statistics (no instance norm over the whole image, no attention over
    all pixels), every pixel is a weighted mean of exact values and the tiled result equals the untiled one up to
    float rounding. Otherwise the tiles disagree a little; the weights are continuous, so the blend fades from one
    tile to the next and leaves no seam, and a constant image gives a constant output for a translation-equivariant
    network (each tile's output is the same constant). Pure torch, no random numbers.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W]; got shape {tuple(images.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size {batch_size!r} must be a positive integer")
    count, _, height, width = images.shape
    check_tiling(tile, overlap, height, width)
    if height <= tile and width <= tile:  # one tile per image: the untiled result, bit for bit
        return torch.cat([translate_fn(images[start : start + batch_size]) for start in range(0, count, batch_size)])
    tiles = blend_weights(height, width, tile, overlap)
    tile_height, tile_width = min(tile, height), min(tile, width)
    jobs = [(index, top, left, weight) for index in range(count) for top, left, weight in tiles]
    total: Tensor | None = None
    weight_sum = torch.zeros(height, width, dtype=torch.float64, device=images.device)
    for top, left, weight in tiles:
        weight_sum[top : top + tile_height, left : left + tile_width] += weight.to(images.device)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        crops = torch.stack([images[index, :, top : top + tile_height, left : left + tile_width] for index, top, left, _ in chunk])
        outputs = translate_fn(crops)
        if outputs.shape[0] != len(chunk) or outputs.shape[-2:] != crops.shape[-2:]:
            raise ValueError(f"translate_fn must keep the batch and the tile size: {tuple(crops.shape)} -> {tuple(outputs.shape)}")
        if total is None:
            total = torch.zeros(count, outputs.shape[1], height, width, dtype=torch.float64, device=outputs.device)
        for (index, top, left, weight), output in zip(chunk, outputs):
            total[index, :, top : top + tile_height, left : left + tile_width] += weight.to(output.device) * output.to(torch.float64)
    assert total is not None
    # every pixel lies in the inner part of some tile (neighbours overlap by >= 4 x the margin), so weight_sum > 0
    return (total / weight_sum.to(total.device)).to(outputs.dtype)


__all__ = ["blend_weights", "check_tiling", "edge_profile", "tile_starts", "translate_tiled"]
