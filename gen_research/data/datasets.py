"""Map-style datasets returning ``(image float32 [C, H, W] in [-1, 1], label int)``, and seeded splits."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from gen_research.data.transforms import resize_and_crop, to_signed_unit
from gen_research.errors import GenResearchError

# Resize in chunks so a 60k-image set never needs a second full-size float copy in memory.
_CHUNK = 4096


class TensorImageDataset(Dataset):
    """Images held in memory: uint8 0..255 (converted per item, 4x less memory) or float in [-1, 1]."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dim() != 4 or len(images) != len(labels):
            raise ValueError(f"expected images [N, C, H, W] and N labels, got {tuple(images.shape)} and {len(labels)}")
        self.images = images
        self.labels = labels.to(torch.int64)

    @classmethod
    def build(
        cls, images: Tensor, labels: Tensor, resize: int | None = None, center_crop: int | None = None
    ) -> "TensorImageDataset":
        """Apply the (deterministic) geometry once up front instead of on every access."""
        if resize is not None or center_crop is not None:
            images = torch.cat([resize_and_crop(c, resize, center_crop) for c in images.split(_CHUNK)])
        return cls(images.contiguous(), labels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return to_signed_unit(self.images[index]), self.labels[index]


def load_image(path: str, grayscale: bool) -> Tensor:
    """Read an image file as uint8 [C, H, W] with 1 (grayscale) or 3 channels; GIFs give their first frame.

    A file that cannot be decoded (truncated, not an image) is a one-line error naming it, not a traceback."""
    try:
        with Image.open(path) as img:
            return TF.pil_to_tensor(img.convert("L" if grayscale else "RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as error:
        raise GenResearchError(f"cannot read image {path!r} ({error}); remove or replace the file") from None


class FileImageDataset(Dataset):
    """Images read from disk on access (too many to keep in memory), with deterministic geometry."""

    def __init__(
        self,
        paths: Sequence[str],
        labels: Tensor,
        resize: int | None = None,
        center_crop: int | None = None,
        grayscale: bool = False,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"got {len(paths)} paths but {len(labels)} labels")
        self.paths = list(paths)
        self.labels = labels.to(torch.int64)
        self.resize = resize
        self.center_crop = center_crop
        self.grayscale = grayscale

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = resize_and_crop(load_image(self.paths[index], self.grayscale), self.resize, self.center_crop)
        return to_signed_unit(image), self.labels[index]


class ImageLabelDataset(Dataset):
    """Wrap a dataset yielding PIL images (e.g. torchvision CelebA): apply geometry, scale, constant label."""

    def __init__(self, dataset: Dataset, resize: int | None = None, center_crop: int | None = None, label: int = 0) -> None:
        self.dataset = dataset
        self.resize = resize
        self.center_crop = center_crop
        self.label = label

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.dataset[index][0]
        if isinstance(image, Image.Image):
            image = TF.pil_to_tensor(image.convert("RGB"))
        return to_signed_unit(resize_and_crop(image, self.resize, self.center_crop)), self.label


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[Tensor]:
    """Cut a seeded permutation of ``range(n)`` into parts; ``fractions`` size all parts but the first.

    The first part (train) takes the remainder so rounding never loses an item. Uses its own
    generator: the global RNG is left untouched and the split depends on ``seed`` alone.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [int(round(n * f)) for f in fractions]
    first = n - sum(sizes)
    if first < 0:
        raise ValueError(f"fractions {list(fractions)} leave no items for the first split of {n}")
    parts, start = [], 0
    for size in [first, *sizes]:
        parts.append(perm[start : start + size])
        start += size
    return parts
