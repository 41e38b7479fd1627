"""A folder of image files, optionally with one subfolder per class."""

from __future__ import annotations

import os
from collections import Counter

import torch
from PIL import Image, UnidentifiedImageError

from gen_research.data.base import ImageDataModule, Splits
from gen_research.data.datasets import FileImageDataset, load_image
from gen_research.data.transforms import output_shape
from gen_research.errors import GenResearchError
from gen_research.files.image_files import IMAGE_EXTENSIONS, _visible, find_images  # noqa: F401  (re-exported)
from gen_research.registry import DATA

_ROOT_HINT = "set data.init_args.root to a folder of images (class subfolders become labels)"


def check_image_files(paths: list[str], resize: int | None, center_crop: int | None, data_name: str, root: str) -> None:
    """Every file is a readable image, and batches need one size: without center_crop, every image must come
    out like the first (one-line errors naming the file or the sizes found under ``root``)."""
    out_size: dict[tuple[int, int], tuple[int, int]] = {}  # raw (h, w) -> size after resize
    sizes: Counter[tuple[int, int]] = Counter()
    for path in paths:
        try:
            with Image.open(path) as img:
                w, h = img.size
                # Reads the file without decoding pixels: for PNG every chunk's CRC up to IEND, so a truncated
                # or damaged PNG is reported here, at setup, not as a traceback mid-training. Other formats'
                # damage that verify() cannot see fails on first read, naming the file (data/datasets.py).
                img.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as err:
            raise GenResearchError(f"{data_name}: cannot read image {path!r} ({err}); remove or fix it") from None
        if (h, w) not in out_size:  # few distinct sizes: run the real resize once per size
            out_size[(h, w)] = output_shape((1, h, w), resize, None)[1:]
        sizes[out_size[(h, w)]] += 1
    if len(sizes) > 1 and center_crop is None:  # a square crop gives every image the same size (padding small ones)
        common = ", ".join(f"{h}x{w} ({n} images)" for (h, w), n in sizes.most_common(3))
        raise GenResearchError(
            f"{data_name}: images under {os.path.abspath(root)!r} come out in different sizes"
            f" ({common}); set data.init_args.resize and data.init_args.center_crop to one square size"
        )


@DATA.register("image_folder", "your own images from a folder; class subfolders become labels")
class ImageFolderData(ImageDataModule):
    """Images from a folder (searched recursively). If the folder holds only subfolders with images,
    their sorted names are the classes; otherwise every label is 0 and ``num_classes`` is None.

    Args:
        root: the folder of images.
        grayscale: load images with 1 channel instead of 3 (RGB).
        test_fraction: share of the images held out as the test split (seeded by split_seed).
    """

    data_name = "image_folder"

    def __init__(
        self,
        root: str,
        grayscale: bool = False,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        resize: int | None = None,
        center_crop: int | None = None,
        random_flip: bool = False,
        holdout_class: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed, resize=resize,
            center_crop=center_crop, random_flip=random_flip, holdout_class=holdout_class,
            num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers,
        )  # fmt: skip
        self._check_fraction("test_fraction", test_fraction)
        self.root = root
        self.grayscale = grayscale
        self.test_fraction = test_fraction
        # Scanned now, not in setup(): image_shape and num_classes must be known when the CLI
        # links them into the model, which happens before any setup().
        self.paths, labels, self.class_names = self._scan(root)
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.image_shape  # noqa: B018 - opens one image now, so an unreadable folder fails at construction

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names else None

    def _scan(self, root: str) -> tuple[list[str], list[int], list[str]]:
        shown = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(shown):
            raise GenResearchError(f"{self.data_name}: no such folder {shown!r}; {_ROOT_HINT}")
        entries = sorted(e for e in os.listdir(shown) if _visible(e))
        top_files = [e for e in entries if os.path.isfile(os.path.join(shown, e)) and e.lower().endswith(IMAGE_EXTENSIONS)]
        per_class = {d: find_images(os.path.join(shown, d)) for d in entries if os.path.isdir(os.path.join(shown, d))}
        per_class = {d: files for d, files in per_class.items() if files}  # empty subfolders are not classes
        if per_class and not top_files:
            class_names = sorted(per_class)
            paths = [p for name in class_names for p in per_class[name]]
            labels = [i for i, name in enumerate(class_names) for _ in per_class[name]]
            return paths, labels, class_names
        paths = find_images(shown)
        if not paths:
            raise GenResearchError(
                f"{self.data_name}: no images ({', '.join(IMAGE_EXTENSIONS)}) found under {shown!r}; {_ROOT_HINT}"
            )
        return paths, [0] * len(paths), []

    def _raw_shape(self) -> tuple[int, int, int]:
        image = self._open(self.paths[0])
        return (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))

    def _open(self, path: str) -> torch.Tensor:
        try:
            return load_image(path, self.grayscale)
        except (OSError, UnidentifiedImageError) as err:
            raise GenResearchError(f"{self.data_name}: cannot read image {path!r} ({err}); remove or fix it") from None

    def _check_sizes(self) -> None:
        check_image_files(self.paths, self.resize, self.center_crop, self.data_name, self.root)

    def _build_splits(self) -> Splits:
        self._check_sizes()
        dataset = FileImageDataset(self.paths, self.labels, self.resize, self.center_crop, self.grayscale)
        return self.split_pool(dataset, self.labels, self.test_fraction)

