"""Where evaluation images come from: image folders, a data module's split, or a model's samples.

All yield batches of float images in [-1, 1]. Models are used through their public methods only
(``sample``, ``reconstruct``), so this module imports no model.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from gen_research.data.datasets import FileImageDataset
from gen_research.data.folder import find_images
from gen_research.errors import GenResearchError

GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def folder_images(folder: str, what: str) -> list[str]:
    if not Path(folder).is_dir():
        raise GenResearchError(f"{what} folder not found: {folder}; pass an existing folder of images")
    paths = find_images(folder)
    if not paths:
        raise GenResearchError(f"{what} folder {folder} holds no images (png, jpg, jpeg, bmp, webp, gif)")
    return paths


def is_grey(path: str) -> bool:
    with Image.open(path) as image:
        return image.mode in GREY_MODES


def folder_listing_hash(paths: list[str]) -> str:
    """Names, sizes and modification times of a folder's images: a changed folder gets a new cache key."""
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def folder_classes(root: str, paths: list[str]) -> list[str]:
    """Class of each image: its first subfolder under ``root`` (``real/3/img.png`` -> "3"); error if some have none."""
    classes = []
    for path in paths:
        parts = Path(path).relative_to(root).parts
        if len(parts) < 2:
            raise GenResearchError(f"class-conditional metrics need one subfolder per class under {root}; {path} is not in one")
        classes.append(parts[0])
    return classes


def folder_dataset(paths: list[str], image_size: int | None, grayscale: bool, labels: list[int] | None = None) -> Dataset:
    label_tensor = torch.tensor(labels, dtype=torch.int64) if labels is not None else torch.zeros(len(paths), dtype=torch.int64)
    return FileImageDataset(paths, label_tensor, resize=image_size, center_crop=image_size, grayscale=grayscale)


def image_batches(dataset: Dataset, batch_size: int, num_images: int | None = None, with_labels: bool = False) -> Iterator[Any]:
    """Images of a dataset in order (first ``num_images``), in batches; (images, labels) with ``with_labels``."""
    if num_images is not None:
        if num_images > len(dataset):
            raise GenResearchError(f"--num-images {num_images} is more than the {len(dataset)} reference images available; lower it")
        dataset = Subset(dataset, range(num_images))
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
            if with_labels:
                yield batch[0], batch[1]
            else:
                yield batch[0] if isinstance(batch, (tuple, list)) else batch
    except RuntimeError as error:
        if "stack expects each tensor to be equal size" in str(error):
            raise GenResearchError("images of different sizes in one set; pass --image-size N to resize and center-crop them") from None
        raise


def samples_by_class(model: Any) -> bool:
    """Whether ``model.sample`` takes the classes to draw (``labels=``): a class-conditional model."""
    try:
        return bool(getattr(model, "num_classes", None)) and "labels" in inspect.signature(model.sample).parameters
    except (TypeError, ValueError):
        return False


def generated_batches(model: Any, num_images: int, batch_size: int, seed: int, sampler: Any | None = None,
                      with_labels: bool = False, first_label: int = 0) -> Iterator[Any]:
    """``num_images`` samples from a model's prior, drawn with a generator seeded by ``seed``.

    With ``with_labels`` the model must be class-conditional; classes are drawn in turn (``first_label``, then
    the next, ... modulo C) so every class gets the same share, and batches are (images, labels).
    """
    if not getattr(model, "has_prior", False):
        raise GenResearchError(f"{type(model).__name__} cannot generate new images (no prior); evaluate its reconstructions instead")
    if with_labels and not samples_by_class(model):
        raise GenResearchError(f"class-conditional metrics need a model that samples given classes; {type(model).__name__} does not")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    done = 0
    with torch.no_grad():
        while done < num_images:
            count = min(batch_size, num_images - done)
            if with_labels:
                labels = torch.arange(first_label + done, first_label + done + count, device=device) % int(model.num_classes)
                yield model.sample(count, generator=generator, labels=labels).float().clamp(-1, 1), labels
            else:
                images = sampler(model, count, generator=generator) if sampler is not None else model.sample(count, generator=generator)
                yield images.float().clamp(-1, 1)
            done += count


def reconstructed_batches(model: Any, batches: Iterator[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
    """(reconstruction, original) pairs for models that reconstruct (autoencoders)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for images in batches:
            images = images.to(device)
            yield model.reconstruct(images).float().clamp(-1, 1), images
