"""Where evaluation images come from: image folders, a data module's split, or a model's samples.

All yield batches of float images in [-1, 1]. Models are used through their public methods only
(``sample``, ``reconstruct``), so this module imports no model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from gen_research.data.batch import collate_fields
from gen_research.data.datasets import FileImageDataset
from gen_research.files.image_files import folder_images  # noqa: F401  (re-exported: sources.folder_images)
from gen_research.errors import GenResearchError
from gen_research.files.digest import hash_tensor

GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def is_grey(path: str) -> bool:
    with Image.open(path) as image:
        return image.mode in GREY_MODES


def dataset_fingerprint(dataset: Dataset, num_images: int | None = None, batch_size: int = 256) -> str:
    """A content hash of the first ``num_images`` items (all by default) of a reference set, in the order the
    evaluation reads them: part of the reference-cache key, so editing any image (not only the first batch's)
    makes new statistics. Computed before the cache is looked up, without the feature network.

    Exact and cheap for each kind of dataset (Subsets are unwrapped to the items really used):

    - read from files (:class:`FileImageDataset`: image folders): each file's path and the sha256 of its bytes,
      plus the resize/crop/grey settings. The decoded image is a function of exactly these, and hashing bytes
      costs far less than decoding and resizing them (let alone the features). Modification times are left out:
      a touched or copied but unchanged folder still hits; a same-size edit within the same second still misses.
    - held in memory (:class:`TensorImageDataset`): the stored tensor rows themselves.
    - anything else: one pass over the items as the evaluation sees them (decoded, no feature network), hashing
      every tensor's dtype, shape and bytes.

    Labels are hashed in every case (class-conditional metrics use them).
    """
    from gen_research.data.datasets import TensorImageDataset

    count = len(dataset) if num_images is None else num_images
    if count > len(dataset):
        raise GenResearchError(f"--num-images {count} is more than the {len(dataset)} reference images available; lower it")
    indices: list[int] = list(range(count))
    base = dataset
    while isinstance(base, Subset):
        indices = [int(base.indices[i]) for i in indices]
        base = base.dataset
    digest = hashlib.sha256(f"{type(base).__qualname__}|{count}\n".encode())
    if isinstance(base, FileImageDataset):
        digest.update(f"resize={base.resize}|crop={base.center_crop}|grey={base.grayscale}\n".encode())
        for index in indices:
            with open(base.paths[index], "rb") as handle:
                content = hashlib.file_digest(handle, "sha256").hexdigest()
            digest.update(f"{base.paths[index]}|{content}|{int(base.labels[index])}\n".encode())
        return digest.hexdigest()[:32]
    if isinstance(base, TensorImageDataset):
        chosen = torch.tensor(indices, dtype=torch.int64)
        for part in chosen.split(4096):
            hash_tensor(digest, base.images[part])
            hash_tensor(digest, base.labels[part])
        return digest.hexdigest()[:32]
    loader = DataLoader(Subset(dataset, range(count)), batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate_fields)
    for batch in loader:
        for item in batch.values():  # the named fields in item order: (image, label) tuples hash as before
            if isinstance(item, Tensor):
                hash_tensor(digest, item)
            else:
                digest.update(repr(item).encode())
    return digest.hexdigest()[:32]


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


def field_batches(dataset: Dataset, batch_size: int, num_images: int | None = None) -> Iterator[dict[str, Any]]:
    """The items of a dataset in order (first ``num_images``), as dict batches of named fields (data/batch.py)."""
    if num_images is not None:
        if num_images > len(dataset):
            raise GenResearchError(f"--num-images {num_images} is more than the {len(dataset)} reference images available; lower it")
        dataset = Subset(dataset, range(num_images))
    try:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate_fields)
    except RuntimeError as error:
        if "stack expects each tensor to be equal size" in str(error):
            raise GenResearchError("images of different sizes in one set; pass --image-size N to resize and center-crop them") from None
        raise


def reference_image_shape(dataset: Dataset) -> tuple[int, int, int]:
    """(C, H, W) of a reference set's ``image`` field (for a translator evaluated B -> A, the A images: not
    necessarily the data module's training ``image_shape``)."""
    from gen_research.data.batch import as_fields

    if len(dataset) == 0:  # type: ignore[arg-type]
        raise GenResearchError("the reference split has no images; lower val_fraction/test_fraction or use another split")
    return tuple(int(s) for s in as_fields(dataset[0])["image"].shape)  # type: ignore[return-value]


def image_batches(dataset: Dataset, batch_size: int, num_images: int | None = None, with_labels: bool = False) -> Iterator[Any]:
    """Images of a dataset in order (first ``num_images``), in batches; (images, labels) with ``with_labels``."""
    for batch in field_batches(dataset, batch_size, num_images):
        yield (batch["image"], batch["label"]) if with_labels else batch["image"]


