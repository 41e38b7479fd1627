"""A test-only paired family: 8x8 digits paired with their colour inversion, and a tiny translator that learns it.

Written only against public API: the registries' decorators, ``ImageDataModule`` and the model contract
(gen_research/models/contract.py). ``tests/configs/tiny_translator.yaml`` runs it through ``fit`` and ``evaluate``.

- ``paired_digits_test``: batches ``{"source": digit, "target": -digit, "image": target, "label": class}`` (in [-1, 1],
  ``-digit`` is the digit with black and white swapped). The target is a fixed, known, pixel-wise function of the
  source, so a translator can learn it and a misaligned pair (one image flipped, the other not) is visible: after
  ``random_flip`` every batch still has ``target == -source``.
- ``tiny_translator_test``: two 3x3 convolutions, L1 loss, AdamW; ``translate(source)`` -> target.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.utils.data import Dataset

from gen_research.data import ImageDataModule
from gen_research.data.base import Splits
from gen_research.errors import GenResearchError
from gen_research.models.contract import ModelFamily
from gen_research.registry import DATA, MODELS


def invert(images: Tensor) -> Tensor:
    """The paired target of a source image in [-1, 1]: black and white swapped."""
    return -images


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 digits as (float32 [N, 1, 8, 8] in [-1, 1], int64 [N]), the grey levels kept exact."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.data).to(torch.float32).div(8.0).sub(1.0).view(-1, 1, 8, 8)
    return images, torch.from_numpy(digits.target).to(torch.int64)


class PairedDigitsDataset(Dataset):
    """Dict items ``{"image", "label", "source", "target"}``: image is the target (what a model should produce)."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        source = self.images[index]
        target = invert(source)
        return {"image": target, "label": self.labels[index], "source": source, "target": target}


@DATA.register("paired_digits_test", "test-only: 8x8 digits (source) paired with their colour inversion (target)")
class PairedDigits(ImageDataModule):
    """8x8 digit pairs: source = the digit, target = its colour inversion; ``random_flip`` flips both alike.

    Args:
        test_fraction: share of the images held out as the test split (seeded by split_seed).
    """

    data_name = "paired_digits_test"
    batch_fields = ("image", "label", "source", "target")

    def __init__(
        self,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        random_flip: bool = False,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed, random_flip=random_flip,
                         num_workers=num_workers)
        self._check_fraction("test_fraction", test_fraction)
        self.test_fraction = test_fraction

    @property
    def num_classes(self) -> int | None:
        return 10

    def _raw_shape(self) -> tuple[int, int, int]:
        return (1, 8, 8)

    def _build_splits(self) -> Splits:
        images, labels = _digits()
        return self.split_pool(PairedDigitsDataset(images, labels), labels, self.test_fraction)


@MODELS.register("tiny_translator_test", "test-only: a two-convolution paired image-to-image translator (L1)")
class TinyTranslator(ModelFamily, LightningModule):
    """Learns source -> target from paired batches with an L1 loss.

    It has one fixed direction (``target_domains = None``). ``reconstruct`` equals ``translate``: for a paired
    model the image it is given is a source and what it "reconstructs" is that source's target, which is what
    ssim/psnr/lpips compare against.

    Args:
        image_shape: (C, H, W) of the images (linked from the data module).
        num_classes: unused; linked from the data module like for every model.
        hidden: channels of the hidden convolution.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    BATCH_FIELDS = ("source", "target")
    CHECKPOINT_MONITOR = ("val/loss", "min")
    target_domains: int | None = None
    domain_names: tuple[str, ...] | None = None

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        num_classes: int | None = None,
        hidden: int = 16,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if hidden < 1 or lr <= 0 or weight_decay < 0:
            raise GenResearchError("tiny_translator_test: hidden must be >= 1, lr > 0 and weight_decay >= 0; fix model.init_args")
        self.save_hyperparameters()
        channels = int(image_shape[0])
        self.source_channels = channels  # contract (Translates): the images translate() takes
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, channels, 3, padding=1))

    # ---- the contract: Translates and Reconstructs ----------------------------------------------------
    def translate(self, images: Tensor, target: Tensor | None = None, **options: Any) -> Tensor:
        """Source images [B, C, H, W] in [-1, 1] -> their translation in [-1, 1] (one direction: no ``target``)."""
        if target is not None:
            raise GenResearchError("tiny_translator_test translates in one fixed direction; do not pass a target domain")
        if options:
            raise GenResearchError(f"tiny_translator_test takes no translation options; got {', '.join(sorted(options))}")
        return torch.tanh(self.net(images))

    def reconstruct(self, images: Tensor) -> Tensor:
        """The translation of ``images`` (a paired model's reconstruction of a source is its target)."""
        return self.translate(images)

    # ---- training ------------------------------------------------------------------------------------
    def l1_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return (self.translate(batch["source"]) - batch["target"]).abs().mean()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.l1_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["source"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.l1_loss(batch)
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=len(batch["source"]))
        return loss

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.l1_loss(batch)
        self.log("test/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(batch["source"]))
        return loss

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"translations": self.translate(batch["source"]), "targets": batch["target"]}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


__all__ = ["PairedDigits", "PairedDigitsDataset", "TinyTranslator", "invert"]
