"""Standard datasets through torchvision: MNIST, Fashion-MNIST, CIFAR-10 (in memory) and CelebA (from disk)."""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Callable, Literal

import torch
import torchvision.datasets as tvd
from torch.utils.data import Dataset

from gen_research.data.base import ImageDataModule, Splits
from gen_research.data.datasets import ImageLabelDataset, TensorImageDataset
from gen_research.errors import GenResearchError
from gen_research.registry import DATA


def _short_reason(err: BaseException) -> str:
    """The last line of an exception message (torchvision's are multi-line), trimmed for a one-line error."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(err).__name__
    return reason if len(reason) <= 160 else reason[:157] + "..."


class _TorchvisionData(ImageDataModule):
    """Shared loading: open the torchvision dataset under ``root``, downloading only when it is missing."""

    raw_shape: tuple[int, int, int]
    classes: int | None
    layout: str  # what a copy under root looks like, for the error message

    def __init__(self, root: str = "data", download: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.download = download

    @property
    def num_classes(self) -> int | None:
        return self.classes

    def _raw_shape(self) -> tuple[int, int, int]:
        return self.raw_shape

    def _make(self, root: str, download: bool, **kwargs: Any) -> Dataset:
        raise NotImplementedError

    def _open(self, **kwargs: Any) -> Dataset:
        """The torchvision dataset for one split; a GenResearchError (one line) when it cannot be had."""
        where = os.path.abspath(os.path.expanduser(self.root))
        try:
            with _silenced():
                return self._make(where, download=False, **kwargs)
        except (RuntimeError, OSError):  # torchvision's "Dataset not found or corrupted"
            if not self.download:
                raise GenResearchError(
                    f"{self.data_name}: not found under {where!r}; set data.init_args.download to true, or"
                    f" data.init_args.root to an existing copy ({self.layout})"
                ) from None
        try:
            with _silenced():  # no progress bars or "Failed to download" chatter, and no traceback
                return self._make(where, download=True, **kwargs)
        except Exception as err:  # noqa: BLE001 - any failure here means the same fix for the user
            raise GenResearchError(
                f"{self.data_name}: not found under {where!r} and the download failed ({_short_reason(err)}; no network?);"
                f" put a copy there ({self.layout}) or set data.init_args.root to an existing copy"
            ) from None

    def prepare_data(self) -> None:
        # Runs on one process per node: download here so the other processes only read in setup().
        self._open(**self._prepare_split())

    def _prepare_split(self) -> dict[str, Any]:
        return {"train": True}


def _silenced() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


class _InMemoryTorchvision(_TorchvisionData):
    """Small datasets (MNIST-sized): official train -> seeded train/val, official test -> test."""

    tv_class: Callable[..., Any]

    # Spelled out (not **kwargs) so LightningCLI shows and checks every argument of the subclasses.
    def __init__(
        self,
        root: str = "data",
        download: bool = True,
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
            root=root, download=download, batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed,
            resize=resize, center_crop=center_crop, random_flip=random_flip, holdout_class=holdout_class,
            num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers,
            data_on_device=data_on_device,
        )  # fmt: skip

    def _make(self, root: str, download: bool, **kwargs: Any) -> Dataset:
        return self.tv_class(root, download=download, **kwargs)

    def _tensors(self, train: bool) -> TensorImageDataset:
        ds: Any = self._open(train=train)
        images = torch.as_tensor(ds.data)
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)  # -> [N, C, H, W]
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        return TensorImageDataset.build(images, labels, self.resize, self.center_crop)

    def _build_splits(self) -> Splits:
        splits = self.split_pool(train_pool := self._tensors(train=True), train_pool.labels, test_fraction=0.0)
        test = self._tensors(train=False)
        splits["test"] = (test, test.labels)
        return splits


@DATA.register("mnist", "MNIST via torchvision (1x28x28, 10 classes; official test split)")
class MNISTData(_InMemoryTorchvision):
    """MNIST handwritten digits (torchvision): 60k train (seeded train/val) and the official 10k test.

    Args:
        root: folder holding (or receiving) the torchvision copy, i.e. root/MNIST/raw.
        download: download when missing.
    """

    data_name, raw_shape, classes = "mnist", (1, 28, 28), 10
    layout, tv_class = "torchvision layout: <root>/MNIST/raw/*-ubyte", tvd.MNIST


@DATA.register("fashion_mnist", "Fashion-MNIST via torchvision (1x28x28, 10 classes; official test split)")
class FashionMNISTData(_InMemoryTorchvision):
    """Fashion-MNIST clothing images (torchvision): 60k train (seeded train/val) and the official 10k test.

    Args:
        root: folder holding (or receiving) the torchvision copy, i.e. root/FashionMNIST/raw.
        download: download when missing.
    """

    data_name, raw_shape, classes = "fashion_mnist", (1, 28, 28), 10
    layout, tv_class = "torchvision layout: <root>/FashionMNIST/raw/*-ubyte", tvd.FashionMNIST


@DATA.register("cifar10", "CIFAR-10 via torchvision (3x32x32, 10 classes; official test split)")
class CIFAR10Data(_InMemoryTorchvision):
    """CIFAR-10 (torchvision): 50k train (seeded train/val) and the official 10k test.

    Args:
        root: folder holding (or receiving) the torchvision copy, i.e. root/cifar-10-batches-py.
        download: download when missing.
    """

    data_name, raw_shape, classes = "cifar10", (3, 32, 32), 10
    layout, tv_class = "torchvision layout: <root>/cifar-10-batches-py/", tvd.CIFAR10


@DATA.register("celeba", "CelebA aligned faces via torchvision (3x64x64 by default, no labels; official splits)")
class CelebAData(_TorchvisionData):
    """CelebA aligned faces (torchvision), read from disk; official train/valid/test splits, labels all 0.

    ``val_fraction`` and ``split_seed`` are unused (the official split is kept). The default resize 64
    then center_crop 64 matches the usual "crop 178, resize 64" up to rounding.

    Args:
        root: folder holding (or receiving) the torchvision copy, i.e. root/celeba.
        download: download when missing (needs the gdown package and Google Drive access).
    """

    data_name, raw_shape, classes = "celeba", (3, 218, 178), None
    layout = "torchvision layout: <root>/celeba/img_align_celeba/ and the celeba/*.txt files"

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        resize: int | None = 64,
        center_crop: int | None = 64,
        random_flip: bool = False,
        holdout_class: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
    ) -> None:
        super().__init__(
            root=root, download=download, batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed,
            resize=resize, center_crop=center_crop, random_flip=random_flip, holdout_class=holdout_class,
            num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers,
        )  # fmt: skip

    def _make(self, root: str, download: bool, **kwargs: Any) -> Dataset:
        return tvd.CelebA(root, download=download, target_type=[], **kwargs)  # attributes are out of scope

    def _prepare_split(self) -> dict[str, Any]:
        return {"split": "train"}  # checks (and downloads) every file, whatever the split

    def _build_splits(self) -> Splits:
        splits: Splits = {}
        for name, split in (("train", "train"), ("val", "valid"), ("test", "test")):
            dataset = ImageLabelDataset(self._open(split=split), self.resize, self.center_crop)
            splits[name] = (dataset, torch.zeros(len(dataset), dtype=torch.int64))
        return splits
