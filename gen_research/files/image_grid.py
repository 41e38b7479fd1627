"""Turning image batches in [-1, 1] into grids: PNG files in the run folder and uint8 arrays for loggers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torchvision.utils import make_grid


def to_grid_uint8(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> one HxWx3 (or HxW) uint8 grid; W&B wants 0..255, not floats in [0, 1]."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(len(images)))))
    grid = make_grid(images.detach().float().cpu().clamp(-1, 1), nrow=nrow, padding=padding, normalize=True, value_range=(-1, 1))
    array = (rearrange(grid, "c h w -> h w c").numpy() * 255.0).round().astype(np.uint8)
    return array[..., 0] if images.shape[1] == 1 else array


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = to_grid_uint8(images, nrow, padding)
    Image.fromarray(grid).save(path)
    return grid
