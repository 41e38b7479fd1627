"""CAS, the Classification Accuracy Score (Ravuri & Vinyals 2019): train on generated, test on real.

A classifier is trained only on *generated* labelled images (each with the class it was conditioned on)
and its accuracy is measured on *real* labelled images. A high score needs samples that are both
recognisably of their intended class and diverse enough to cover what the real class looks like; it
penalises mode dropping and class leakage that FID/IS can miss.

The number depends on the classifier recipe, not on the evaluation extractor (which CAS ignores): a
small conv net (:class:`~gen_research.nets.conv.ConvEncoder`, 1-2 stride-2 blocks of width 32/64 and a
linear head, GroupNorm) trained with Adam (lr 1e-3, batch 128) for ``GEN_RESEARCH_CAS_EPOCHS`` (default
10) epochs. Results are therefore keyed ``cas/small-convnet`` and are comparable only with each other.
Training runs inside ``seeded(options.seed)`` (global RNG untouched) and is deterministic on CPU given the
seed (on GPU up to cuDNN's non-deterministic kernels).
"""

from __future__ import annotations

import os
from typing import ClassVar

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.specs._common import Spec, autograd_enabled, seeded
from gen_research.nets.conv import ConvEncoder
from gen_research.registry import METRICS

EPOCHS_ENV = "GEN_RESEARCH_CAS_EPOCHS"
FEATURE_NAME = "small-convnet"
_BATCH = 128
_LR = 1e-3


def cas_epochs() -> int:
    value = os.environ.get(EPOCHS_ENV, "10")
    try:
        epochs = int(value)
    except ValueError:
        epochs = 0
    if epochs < 1:
        raise GenResearchError(f"{EPOCHS_ENV}={value!r} is not a positive integer: set it to e.g. 10, or unset it")
    return epochs


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] float -> [0, 255] uint8 (what is stored)."""
    return ((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def from_uint8(images: Tensor) -> Tensor:
    return images.float() / 127.5 - 1.0


def stride_blocks(height: int, width: int, limit: int = 2) -> int:
    """How many stride-2 halvings both sides allow (at most ``limit``)."""
    n = 0
    while n < limit and height % (2 ** (n + 1)) == 0 and width % (2 ** (n + 1)) == 0:
        n += 1
    return n


def small_convnet(in_channels: int, image_size: tuple[int, int], num_classes: int) -> nn.Module:
    """The CAS classifier: ConvEncoder with [32] or [32, 64] stride-2 blocks and a linear head to the classes."""
    blocks = stride_blocks(*image_size)
    if blocks == 0:  # odd side: one stride-1 conv block instead
        h, w = image_size
        return nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
                             nn.Flatten(), nn.Linear(32 * h * w, num_classes))
    return ConvEncoder(in_channels, image_size, [32, 64][:blocks], num_classes, norm="group")


class _CASState(Metric):
    """Real and generated images (uint8) with their labels (int64), concatenated across batches and processes."""

    full_state_update = False

    def __init__(self, num_classes: int | None, seed: int) -> None:
        super().__init__()
        self.num_classes, self.seed = num_classes, seed
        for kind in ("real", "fake"):
            self.add_state(f"{kind}_images", [], dist_reduce_fx="cat")
            self.add_state(f"{kind}_labels", [], dist_reduce_fx="cat")

    def update(self, images: Tensor, labels: Tensor, real: bool) -> None:  # type: ignore[override]
        if images.ndim != 4 or labels.shape != images.shape[:1]:
            raise GenResearchError(f"cas: expected images [N, C, H, W] with N labels, got {tuple(images.shape)} and {tuple(labels.shape)}")
        kind = "real" if real else "fake"
        getattr(self, f"{kind}_images").append(to_uint8(images))
        getattr(self, f"{kind}_labels").append(labels.detach().to(device=images.device, dtype=torch.long))

    def _cat(self, name: str) -> Tensor:
        value = getattr(self, name)
        if isinstance(value, list):
            return torch.cat(value) if value else torch.empty(0)
        return value

    def compute(self) -> Tensor:
        fake_x, fake_y = self._cat("fake_images"), self._cat("fake_labels")
        real_x, real_y = self._cat("real_images"), self._cat("real_labels")
        if not len(fake_x) or not len(real_x):
            raise GenResearchError("cas needs both generated and real labelled images; evaluate a class-conditional model against labelled reals")
        if fake_x.shape[1:] != real_x.shape[1:]:
            raise GenResearchError(f"cas: generated images {tuple(fake_x.shape[1:])} and real images {tuple(real_x.shape[1:])} differ in shape; resize one to match")
        labels = torch.cat([fake_y, real_y])
        num_classes = self.num_classes or int(labels.max()) + 1
        if labels.min() < 0 or labels.max() >= num_classes:
            raise GenResearchError(f"cas: class labels must lie in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}; fix num_classes")
        with autograd_enabled():
            return self._train_and_test(fake_x, fake_y, real_x, real_y, num_classes)

    def _train_and_test(self, fake_x: Tensor, fake_y: Tensor, real_x: Tensor, real_y: Tensor, num_classes: int) -> Tensor:
        device = fake_x.device
        epochs = cas_epochs()
        with seeded(self.seed):
            net = small_convnet(fake_x.shape[1], tuple(fake_x.shape[2:]), num_classes).to(device)
            optimiser = torch.optim.Adam(net.parameters(), lr=_LR)
            shuffle = torch.Generator().manual_seed(self.seed)
            net.train()
            n = len(fake_x)
            for _ in range(epochs):
                order = torch.randperm(n, generator=shuffle).to(device)
                for start in range(0, n, _BATCH):
                    idx = order[start : start + _BATCH]
                    loss = nn.functional.cross_entropy(net(from_uint8(fake_x[idx])), fake_y[idx].clone())
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
            net.eval()
            correct = torch.zeros((), dtype=torch.long, device=device)
            with torch.no_grad():
                for start in range(0, len(real_x), 1024):
                    pred = net(from_uint8(real_x[start : start + 1024])).argmax(dim=1)
                    correct += (pred == real_y[start : start + 1024]).sum()
        return correct.double() / len(real_x)


class CAS(Spec):
    """Classification Accuracy Score: a small conv net trained on generated labelled images, accuracy on real ones."""

    name = "cas"
    needs_reals: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = True
    needs_images: ClassVar[bool] = True
    needs_generator: ClassVar[bool] = False
    paired: ClassVar[bool] = False

    def feature_name(self, extractor: FeatureExtractor) -> str:
        return FEATURE_NAME

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        return _CASState(options.num_classes, options.seed)

    def update(self, metric: Metric, outputs: dict[str, Tensor], real: bool) -> None:
        """Extractor outputs are not used (CAS reads raw images through update_images)."""

    def update_images(self, metric: Metric, images: Tensor, labels: Tensor | None, texts: list[str] | None, real: bool) -> None:
        if labels is None:
            raise GenResearchError(
                "metric 'cas' needs the class of every image: a class-conditional model, "
                "and real data with labels (a labelled data module or --real folders with one subfolder per class)"
            )
        metric.update(images, labels, real=real)

    def compute(self, metric: Metric) -> dict[str, float]:
        return {"cas": float(metric.compute())}


METRICS.add("cas", CAS, "classification accuracy score: train a small conv net on generated labelled images, test on reals")
