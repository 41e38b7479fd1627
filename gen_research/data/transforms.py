"""Deterministic image ops shared by all data modules: geometry, scaling to [-1, 1], seeded flips and crops.

Nothing here touches the global RNG: random flips and crops take an explicit generator so that a resumed run
reproduces the same augmentation regardless of worker count or what else consumed random numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

# Multiplier for mixing (seed, epoch, step) into one generator seed; a large prime keeps nearby
# triples from colliding while staying well inside int64.
_MIX = 1_000_003


def resize_and_crop(images: Tensor, resize: int | None, center_crop: int | None) -> Tensor:
    """Resize the shorter side to ``resize`` then take a square ``center_crop`` ([..., C, H, W]).

    Resize-then-crop makes differently sized images come out the same size; CelebA's usual
    "crop 178, resize 64" is (up to rounding) the same as resize 64 then crop 64.
    """
    if resize is not None:
        images = TF.resize(images, [resize], antialias=True)
        if images.is_floating_point():  # antialiased bilinear is convex, clamp only guards rounding
            images = images.clamp(-1.0, 1.0)
    if center_crop is not None:
        images = TF.center_crop(images, [center_crop, center_crop])
    return images


def output_shape(raw_shape: tuple[int, int, int], resize: int | None, center_crop: int | None) -> tuple[int, int, int]:
    """(C, H, W) that :func:`resize_and_crop` produces for an image of ``raw_shape``."""
    # Run the real ops on a blank image: exact, including torchvision's rounding of the long side.
    c, h, w = resize_and_crop(torch.zeros(raw_shape, dtype=torch.uint8), resize, center_crop).shape
    return int(c), int(h), int(w)


def to_signed_unit(image: Tensor) -> Tensor:
    """uint8 0..255 -> float32 [-1, 1]; float input is taken to be in [-1, 1] already."""
    if image.dtype == torch.uint8:
        return image.to(torch.float32).div_(127.5).sub_(1.0)
    return image.to(torch.float32)


def flip_seed(seed: int, epoch: int, step: int) -> int:
    """One generator seed per (global seed, epoch, batch), so flips never depend on RNG history."""
    return ((seed * _MIX + epoch) * _MIX + step) % (2**63 - 1)


def flip_draw(count: int, generator: torch.Generator) -> Tensor:
    """Which of ``count`` items to flip (bool [count], probability 0.5 each), drawn from ``generator`` only."""
    return torch.rand(count, generator=generator, device=generator.device) < 0.5


def _apply_flip(images: Tensor, flip: Tensor) -> Tensor:
    flip = flip.to(images.device).view(-1, *([1] * (images.dim() - 1)))
    return torch.where(flip, images.flip(-1), images)


def flip_batch(images: Tensor, generator: torch.Generator) -> Tensor:
    """Flip each image of [B, C, H, W] horizontally with probability 0.5, drawing from ``generator`` only."""
    return _apply_flip(images, flip_draw(images.shape[0], generator))


def flip_fields(batch: Mapping[str, Any], fields: Sequence[str], generator: torch.Generator) -> dict[str, Any]:
    """A copy of a dict batch with its image ``fields`` (those present) flipped together: one draw per item, the
    same for all of them, so a source/target pair stays aligned. With one field it flips exactly as
    :func:`flip_batch` does from the same generator (a replayed run sees the flips of the original)."""
    present = [name for name in fields if isinstance(batch.get(name), Tensor)]
    if not present:
        return dict(batch)
    count = batch[present[0]].shape[0]
    if any(batch[name].shape[0] != count for name in present):
        sizes = ", ".join(f"{name} {batch[name].shape[0]}" for name in present)
        raise ValueError(f"image fields of one batch must hold the same number of items; got {sizes}")
    flip = flip_draw(count, generator)
    return {**batch, **{name: _apply_flip(batch[name], flip) for name in present}}


def crop_draw(count: int, height: int, width: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Top and left corners (int64 [count] each) of ``count`` random ``size`` squares inside ``height x width``."""
    top = torch.randint(0, height - size + 1, (count,), generator=generator, device=generator.device)
    left = torch.randint(0, width - size + 1, (count,), generator=generator, device=generator.device)
    return top, left


def _apply_crop(images: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    # One gather for the whole batch (each item its own corner); torchvision's crop takes one corner per call.
    steps = torch.arange(size, device=images.device)
    rows = (top.to(images.device)[:, None] + steps)[:, :, None]
    cols = (left.to(images.device)[:, None] + steps)[:, None, :]
    items = torch.arange(images.shape[0], device=images.device)[:, None, None]
    return images.permute(0, 2, 3, 1)[items, rows, cols].permute(0, 3, 1, 2).contiguous()


def augment_fields(
    batch: Mapping[str, Any],
    fields: Sequence[str],
    generator: torch.Generator,
    crop: int | None = None,
    flip: bool = False,
    joint: bool = True,
) -> dict[str, Any]:
    """A copy of a dict batch with its image ``fields`` (those present) randomly cropped to ``crop`` x ``crop`` and/or
    flipped, drawing from ``generator`` only (crop corners, then flips).

    ``joint``: one draw per item applied to all its fields alike (a source/target pair stays aligned; pix2pix's
    aligned dataset); otherwise each field draws its own, in ``fields`` order (CycleGAN's unaligned dataset
    transforms A and B independently). Joint flips without a crop are exactly :func:`flip_fields`."""
    present = [name for name in fields if isinstance(batch.get(name), Tensor)]
    if not present or (crop is None and not flip):
        return dict(batch)
    count = batch[present[0]].shape[0]
    if any(batch[name].shape[0] != count for name in present):
        sizes = ", ".join(f"{name} {batch[name].shape[0]}" for name in present)
        raise ValueError(f"image fields of one batch must hold the same number of items; got {sizes}")
    out = dict(batch)
    for group in [present] if joint else [[name] for name in present]:
        if crop is not None:
            sizes = {tuple(batch[name].shape[-2:]) for name in group}
            if len(sizes) != 1:
                shown = ", ".join(f"{name} {tuple(batch[name].shape[-2:])}" for name in group)
                raise ValueError(f"a joint crop needs image fields of one size; got {shown}")
            (height, width), = sizes
            if crop > min(height, width):
                raise ValueError(f"cannot crop {crop}x{crop} out of {height}x{width} images")
            top, left = crop_draw(count, height, width, crop, generator)
            out.update({name: _apply_crop(out[name], top, left, crop) for name in group})
        if flip:
            flipped = flip_draw(count, generator)
            out.update({name: _apply_flip(out[name], flipped) for name in group})
    return out


def center_crop_item(item: Any, fields: Sequence[str], size: int) -> Any:
    """A dataset item (dict of fields or ``(image, label)`` tuple) with its images centre-cropped to ``size``."""
    if isinstance(item, Mapping):
        return {name: TF.center_crop(value, [size, size]) if name in fields and isinstance(value, Tensor) else value
                for name, value in item.items()}
    if isinstance(item, (tuple, list)):
        return (TF.center_crop(item[0], [size, size]), *item[1:])
    return TF.center_crop(item, [size, size])
