"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"): the same random,
differentiable augmentations applied to every image D sees, real and generated, so D cannot memorise a small
training set and G still gets gradients through them.

Written by hand after the authors' reference code (mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py), which
is not a package: the policies ``color`` (brightness, saturation, contrast), ``translation`` (up to 1/8 of the side,
zero fill) and ``cutout`` (a square of half the side), on images in [-1, 1]. Every draw comes from ``generator``
(None: the global RNG, which the training checkpoints save, so a resumed run draws the same augmentations).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gen_research.errors import GenResearchError


def _uniform(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """U(0, 1) per image, shape [B, 1, 1, 1]."""
    device = generator.device if generator is not None else x.device
    return torch.rand(x.size(0), 1, 1, 1, generator=generator, device=device).to(x.device, x.dtype)


def brightness(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    return x + (_uniform(x, generator) - 0.5)


def saturation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform(x, generator) * 2) + mean


def contrast(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_uniform(x, generator) + 0.5) + mean


def _randint(low: int, high: int, count: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randint(low, high, (count, 1, 1), generator=generator, device=device).to(x.device)


def translation(x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ``ratio`` of its side in x and y, filling with zeros (grey in [-1, 1])."""
    b, _, h, w = x.shape
    shift_h, shift_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(-shift_h, shift_h + 1, b, x, generator)
    dx = _randint(-shift_w, shift_w + 1, b, x, generator)
    grid_b, grid_y, grid_x = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                            torch.arange(w, device=x.device), indexing="ij")
    grid_y = torch.clamp(grid_y + dy + 1, 0, h + 1)
    grid_x = torch.clamp(grid_x + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[grid_b, grid_y, grid_x].permute(0, 3, 1, 2).contiguous()


def cutout(x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> Tensor:
    """Zero a square of ``ratio`` of the side at a random centre of each image."""
    b, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = _randint(0, h + (1 - size_h % 2), b, x, generator)
    ox = _randint(0, w + (1 - size_w % 2), b, x, generator)
    grid_b, grid_y, grid_x = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(size_h, device=x.device),
                                            torch.arange(size_w, device=x.device), indexing="ij")
    grid_y = torch.clamp(grid_y + oy - size_h // 2, min=0, max=h - 1)
    grid_x = torch.clamp(grid_x + ox - size_w // 2, min=0, max=w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[grid_b, grid_y, grid_x] = 0
    return x * mask.unsqueeze(1)


POLICIES: dict[str, tuple[Callable[..., Tensor], ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """``"color,translation,cutout"`` -> its parts, checked; None or "" -> no augmentation."""
    parts = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [p for p in parts if p not in POLICIES]
    if unknown:
        raise GenResearchError(f"model.init_args.diffaugment: unknown policy {unknown[0]!r}; use a comma-separated subset of {', '.join(POLICIES)}")
    return parts


def diff_augment(x: Tensor, policy: tuple[str, ...], generator: torch.Generator | None = None) -> Tensor:
    """``x`` through every augmentation of ``policy`` in turn (differentiable in ``x``)."""
    for part in policy:
        for augment in POLICIES[part]:
            x = augment(x, generator)
    return x


__all__ = ["POLICIES", "brightness", "contrast", "cutout", "diff_augment", "parse_policy", "saturation", "translation"]
