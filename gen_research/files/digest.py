"""Content digests of tensors: what the evaluation reference cache and the latent cache key their files by."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def hash_tensor(digest: Any, tensor: Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes into a hashlib digest (no copy of the bytes)."""
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}|{list(tensor.shape)}\n".encode())
    if tensor.numel():
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())


__all__ = ["hash_tensor"]
