"""``caption_folder``: users' own captioned images, with captions as sidecar ``<name>.txt`` files or in a manifest
(CSV with columns ``file,caption``, or JSONL lines ``{"file": ..., "caption": ...}``; ``file`` relative to root).

Without buckets images are resized / centre-cropped as every image module does; with ``buckets`` each image goes to
the bucket nearest its aspect ratio, is resized to cover it and centre-cropped to it (SDXL's bucketing). Either way
``original_size`` is the file's (h, w) and ``crop_coords`` the (top, left) of the crop in the resized image, as
diffusers' examples/text_to_image/train_text_to_image_sdxl.py records them.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from gen_research.data.base import Splits
from gen_research.data.buckets import Bucket, nearest_bucket
from gen_research.data.captioned import CaptionedDataModule
from gen_research.data.datasets import load_image
from gen_research.data.folder import IMAGE_EXTENSIONS, check_image_files, find_images
from gen_research.data.transforms import resize_and_crop, to_signed_unit
from gen_research.errors import GenResearchError
from gen_research.registry import DATA

_ROOT_HINT = "set data.init_args.root to a folder of images with <name>.txt captions (or a data.init_args.manifest)"


def read_manifest(path: str, root: str, data_name: str) -> tuple[list[str], list[str]]:
    """(image paths, captions) from a CSV (``file,caption`` header) or JSONL manifest; one-line errors naming the
    manifest line that is wrong."""
    hint = "set data.init_args.manifest to a .csv with columns file,caption or a .jsonl of {\"file\", \"caption\"} lines"
    if not os.path.isfile(path):
        raise GenResearchError(f"{data_name}: no such manifest {path!r}; {hint}")
    rows: list[tuple[int, Any]] = []
    with open(path, newline="", encoding="utf-8") as handle:
        if path.lower().endswith(".csv"):
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"file", "caption"} <= set(reader.fieldnames):
                raise GenResearchError(f"{data_name}: manifest {path!r} has columns {reader.fieldnames}, not file,caption; {hint}")
            rows = [(reader.line_num, row) for row in reader]
        elif path.lower().endswith((".jsonl", ".json")):
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise GenResearchError(f"{data_name}: manifest {path!r} line {number} is not JSON ({error}); {hint}") from None
        else:
            raise GenResearchError(f"{data_name}: manifest {path!r} is neither .csv nor .jsonl; {hint}")
    paths, captions = [], []
    for number, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("file"), str) or not isinstance(row.get("caption"), str):
            raise GenResearchError(f"{data_name}: manifest {path!r} line {number} needs a file and a caption; {hint}")
        image = os.path.join(root, row["file"])
        if not os.path.isfile(image):
            raise GenResearchError(f"{data_name}: manifest {path!r} line {number} names {row['file']!r}, which is not "
                                   f"a file under {root!r}; fix the line or add the image")
        paths.append(image)
        captions.append(row["caption"].strip())
    if not paths:
        raise GenResearchError(f"{data_name}: manifest {path!r} lists no images; {hint}")
    return paths, captions


def read_sidecars(paths: list[str], data_name: str) -> list[str]:
    """Each image's caption from ``<name>.txt`` beside it; a missing one is a one-line error naming the image."""
    captions = []
    for path in paths:
        sidecar = os.path.splitext(path)[0] + ".txt"
        if not os.path.isfile(sidecar):
            raise GenResearchError(f"{data_name}: image {path!r} has no caption file {os.path.basename(sidecar)!r}; "
                                   "write one beside it or set data.init_args.manifest")
        with open(sidecar, encoding="utf-8") as handle:
            captions.append(handle.read().strip())
    return captions


def image_sizes(paths: list[str], data_name: str) -> list[tuple[int, int]]:
    """(h, w) of every image file, read from headers (verify() catches damaged files at setup)."""
    sizes = []
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes.append((image.size[1], image.size[0]))
                image.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as error:
            raise GenResearchError(f"{data_name}: cannot read image {path!r} ({error}); remove or fix it") from None
    return sizes


def bucket_geometry(height: int, width: int, bucket: Bucket) -> tuple[tuple[int, int], tuple[int, int]]:
    """(resized (h, w), crop (top, left)): the smallest resize covering ``bucket``, then its centred crop."""
    scale = max(bucket[0] / height, bucket[1] / width)
    resized = (max(bucket[0], round(height * scale)), max(bucket[1], round(width * scale)))
    return resized, ((resized[0] - bucket[0]) // 2, (resized[1] - bucket[1]) // 2)


class CaptionFileSet(Dataset):
    """Captioned image files read on access; items are dicts of the captioned batch fields (label 0)."""

    def __init__(self, paths: list[str], captions: list[str], grayscale: bool, resize: int | None,
                 center_crop: int | None, buckets: list[Bucket] | None, bucket_of: list[int] | None) -> None:
        self.paths, self.captions, self.grayscale = paths, captions, grayscale
        self.resize, self.center_crop, self.buckets = resize, center_crop, buckets
        self.bucket_of = bucket_of if bucket_of is not None else [0] * len(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        raw = load_image(self.paths[index], self.grayscale)
        height, width = int(raw.shape[1]), int(raw.shape[2])
        if self.buckets is not None:
            bucket = self.buckets[self.bucket_of[index]]
            resized, (top, left) = bucket_geometry(height, width, bucket)
            image = TF.crop(TF.resize(raw, list(resized), antialias=True), top, left, bucket[0], bucket[1])
        else:
            image = resize_and_crop(raw, self.resize, self.center_crop)
            top = left = 0
            if self.center_crop is not None:  # torchvision's centre-crop corner (negative: it padded)
                scaled = raw.shape[1:] if self.resize is None else TF.resize(raw[:1], [self.resize], antialias=True).shape[1:]
                top = int(round((scaled[0] - self.center_crop) / 2.0))
                left = int(round((scaled[1] - self.center_crop) / 2.0))
        return {"image": to_signed_unit(image), "label": torch.tensor(0), "caption": self.captions[index],
                "original_size": torch.tensor([height, width]), "crop_coords": torch.tensor([top, left])}


@DATA.register("caption_folder", "your own captioned images: <name>.txt captions or a CSV/JSONL manifest")
class CaptionFolder(CaptionedDataModule):
    """Captioned images from a folder (searched recursively); every label is 0 and ``num_classes`` is None.

    Args:
        root: the folder of images.
        manifest: a CSV (``file,caption``) or JSONL manifest (absolute, or relative to root); null: sidecar
            ``<name>.txt`` captions beside the images.
        channels: 3 (RGB) or 1 (grey).
        caption_dropout, buckets: see CaptionedDataModule (with buckets, resize/center_crop are not used).
        test_fraction: share of the images held out as the test split (seeded by split_seed).
    """

    data_name = "caption_folder"

    def __init__(
        self,
        root: str,
        manifest: str | None = None,
        channels: int = 3,
        caption_dropout: float = 0.1,
        buckets: list[list[int]] | None = None,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        resize: int | None = None,
        center_crop: int | None = None,
        random_flip: bool = False,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
    ) -> None:
        super().__init__(
            caption_dropout=caption_dropout, buckets=buckets, batch_size=batch_size, val_fraction=val_fraction,
            split_seed=split_seed, resize=resize, center_crop=center_crop, random_flip=random_flip,
            num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers,
        )  # fmt: skip
        if channels not in (1, 3):
            self._fail(f"channels must be 1 (grey) or 3 (RGB), got {channels}", "channels")
        if self.buckets is not None and (resize is not None or center_crop is not None):
            self._fail("buckets set each image's size; resize and center_crop would be ignored, so leave them null",
                       "resize")
        self._check_fraction("test_fraction", test_fraction)
        self.root = os.path.abspath(os.path.expanduser(root))
        self.manifest, self.channels, self.test_fraction = manifest, channels, test_fraction
        # Scanned now, not in setup(): image_shape must be known when the CLI links it into the model.
        self.paths, self.captions = self._scan()
        self.image_shape  # noqa: B018 - opens one image now, so an unreadable folder fails at construction

    def _scan(self) -> tuple[list[str], list[str]]:
        if not os.path.isdir(self.root):
            raise GenResearchError(f"{self.data_name}: no such folder {self.root!r}; {_ROOT_HINT}")
        if self.manifest is not None:
            return read_manifest(os.path.join(self.root, os.path.expanduser(self.manifest)), self.root, self.data_name)
        paths = find_images(self.root)
        if not paths:
            raise GenResearchError(f"{self.data_name}: no images ({', '.join(IMAGE_EXTENSIONS)}) found under "
                                   f"{self.root!r}; {_ROOT_HINT}")
        return paths, read_sidecars(paths, self.data_name)

    def _raw_shape(self) -> tuple[int, int, int]:
        if self.buckets is not None:
            return (self.channels, *self.buckets[0])  # the first bucket: the default size to sample at
        image = load_image(self.paths[0], self.channels == 1)
        return (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))

    def _build_splits(self) -> Splits:
        bucket_of = None
        if self.buckets is None:
            check_image_files(self.paths, self.resize, self.center_crop, self.data_name, self.root)
        else:
            bucket_of = [nearest_bucket(h, w, self.buckets) for h, w in image_sizes(self.paths, self.data_name)]
        dataset = CaptionFileSet(self.paths, self.captions, self.channels == 1, self.resize, self.center_crop,
                                 self.buckets, bucket_of)
        return self.split_pool(dataset, torch.zeros(len(self.paths), dtype=torch.int64), self.test_fraction)
