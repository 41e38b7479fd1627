"""Latents of the training images, encoded once and kept on disk, so the diffusion stage does not re-encode every
epoch (CompVis' latent-diffusion, and diffusers' training scripts, run the frozen encoder on every batch).

What is cached is the encoder's posterior, mean and std, not one sample of it: every epoch still draws a fresh
``z = mean + std * noise`` exactly as an uncached run does, so caching changes the cost, not the training signal.
The file is named by a digest of everything it depends on: the first stage's weights and the training images
and labels in dataset order. A retrained first stage or other data never reads a stale cache.

Random flips and crops are applied to batches after loading (gen_research/data/base.py); an encoding made once
cannot follow them, so caching is refused for data that augments.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gen_research.data.batch import collate_fields
from gen_research.errors import GenResearchError
from gen_research.files.atomic import atomic_write_with
from gen_research.files.digest import hash_tensor

CACHE_ENV = "GEN_RESEARCH_CACHE"  # the evaluation reference cache's root too (gen_research/evaluation/cache.py)
DEFAULT_ROOT = "~/.cache/gen_research"
FORMAT_VERSION = 2  # 2: tensors hashed by files/digest.py, as the reference cache does


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_ROOT).expanduser() / "latents"


class CachedLatents(Dataset):
    """Training items ``{"latent_mean", "latent_std", "label"}`` in the order of the image dataset they encode."""

    def __init__(self, mean: Tensor, std: Tensor, labels: Tensor | None) -> None:
        self.mean, self.std, self.labels = mean, std, labels

    def __len__(self) -> int:
        return len(self.mean)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = {"latent_mean": self.mean[index], "latent_std": self.std[index]}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item


def _items(dataset: Dataset, batch_size: int) -> DataLoader:
    # A private generator: a loader without one draws its base seed from the global RNG, which would shift the
    # training stream of a cached run away from an uncached one's.
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fields, generator=torch.Generator())


def cache_key(first_stage: torch.nn.Module, dataset: Dataset, batch_size: int = 256) -> str:
    """Digest of the first stage's weights and of every training image and label, in order."""
    digest = hashlib.sha256(f"gen_research latent cache v{FORMAT_VERSION}".encode())
    for name, tensor in sorted(first_stage.state_dict().items()):
        digest.update(name.encode())
        hash_tensor(digest, tensor)
    for batch in _items(dataset, batch_size):
        hash_tensor(digest, batch["image"])
        if "label" in batch:
            hash_tensor(digest, batch["label"])
    return digest.hexdigest()[:32]


def encode_dataset(encode_moments: Callable[[Tensor], tuple[Tensor, Tensor]], dataset: Dataset, device: torch.device,
                   batch_size: int = 256) -> dict[str, Tensor]:
    means, stds, labels = [], [], []
    with torch.no_grad():
        for batch in _items(dataset, batch_size):
            mean, std = encode_moments(batch["image"].to(device))
            means.append(mean.float().cpu())
            stds.append(std.float().cpu())
            if "label" in batch:
                labels.append(batch["label"])
    return {"mean": torch.cat(means), "std": torch.cat(stds), "label": torch.cat(labels) if labels else None}


def check_cacheable(datamodule: Any) -> None:
    if getattr(datamodule, "random_flip", False) or getattr(datamodule, "random_crop", None) is not None:
        raise GenResearchError("ldm: cache_latents encodes each training image once, so random flips and crops cannot apply; "
                               "set data.init_args.random_flip=false and random_crop=null, or model.init_args.cache_latents=false")


def cached_latents(first_stage: torch.nn.Module, dataset: Dataset, device: torch.device, cache_dir: Path,
                   is_writer: bool, barrier: Callable[[], None], log: Callable[[str], None]) -> CachedLatents:
    """The dataset's cached encodings, computed and written first when no cache file matches. Under DDP only the
    writer (rank 0) encodes; the others wait at ``barrier`` and read the file it wrote."""
    key = cache_key(first_stage, dataset)
    path = cache_dir / f"latents-{key}.pt"
    if is_writer and not path.is_file():
        log(f"ldm: encoding {len(dataset)} training images once into {path}")
        payload = encode_dataset(first_stage.encode_moments, dataset, device)  # type: ignore[attr-defined]
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_with(path, lambda tmp: torch.save(payload, tmp))
    elif is_writer:
        log(f"ldm: training latents read from {path}")
    barrier()
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file: say which, never train on part of it
        raise GenResearchError(f"ldm: latent cache {path} cannot be read ({type(error).__name__}); delete it and run again") from None
    if len(payload["mean"]) != len(dataset):
        raise GenResearchError(f"ldm: latent cache {path} holds {len(payload['mean'])} items for {len(dataset)} training images; delete it and run again")
    return CachedLatents(payload["mean"], payload["std"], payload["label"])


__all__ = ["CACHE_ENV", "CachedLatents", "cache_key", "cached_latents", "check_cacheable", "default_cache_dir", "encode_dataset"]
