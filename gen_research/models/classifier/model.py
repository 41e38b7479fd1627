"""``classifier``: a small conv classifier trained on the data's labels, used as a domain feature extractor.

MNIST-scale papers report FID/KID on a classifier trained on the domain rather than on ImageNet's
InceptionV3. Train one with ``python -m gen_research fit --config experiments/classifier_mnist5k.yaml`` and
pass its checkpoint to the ``classifier`` feature extractor; metric keys then read
``<metric>/<feature_name>`` (e.g. ``fid/classifier-mnist5k``).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from gen_research.errors import GenResearchError
from gen_research.models.common import check_optimizer_settings, check_widths, configure_adamw
from gen_research.models.contract import ModelFamily
from gen_research.nets import ConvEncoder
from gen_research.registry import MODELS
from gen_research.training.optimizers import AdamWImplementation


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image translated by its own random (dy, dx) in [-max_shift, max_shift], edge pixels replicated."""
    n, c, h, w = x.shape
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1), device=x.device, generator=generator) - max_shift
    # Clamped source indices = replicate padding without building a padded copy.
    rows = (torch.arange(h, device=x.device)[None] - dy).clamp(0, h - 1)  # [N, H]
    cols = (torch.arange(w, device=x.device)[None] - dx).clamp(0, w - 1)  # [N, W]
    x = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))


@MODELS.register("classifier", "small conv classifier (cross-entropy); its penultimate features are the `classifier` feature extractor")
class Classifier(ModelFamily, L.LightningModule):
    """Stride-2 conv trunk -> linear to ``feature_dim`` -> SiLU (the features) -> dropout -> linear to the logits.

    Args:
        channels: widths of the stride-2 conv stages (the image size must divide by 2**len(channels)).
        feature_dim: width of the penultimate layer, i.e. of the extracted features.
        dropout: dropout before the two linear layers (training only).
        optimizer_implementation: AdamW kernel: auto (fused where the device supports it), fused, foreach or for_loop;
            the same update up to rounding, see docs/results.md (Speed).
        shift_augment: training images are shifted by up to this many pixels (random per image, edges
            replicated); 0 turns it off. Digits must not be flipped, but small translations are label-preserving.
        feature_name: the name its features carry in metric keys (``fid/<feature_name>``).
        label_field: the batch field it learns to predict: ``label`` (the class) or ``domain`` (a multi-domain data
            module's domain id: a domain classifier, e.g. StarGAN's "is it in the requested domain" check). The
            extractor built from it hands metrics that field (for translations: the requested ``target_domain``).
        num_domains: how many domains there are, with ``label_field: domain`` (checked against the data).
    """

    BATCH_FIELDS = ("image", "label")  # contract: it trains on labelled images and neither generates nor reconstructs

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        channels: list[int] = (32, 64),  # tuple default: avoids a shared mutable default; YAML gives a list
        feature_dim: int = 128,
        dropout: float = 0.25,
        norm: Literal["batch", "group", "none"] = "batch",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer_implementation: AdamWImplementation = "auto",
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        shift_augment: int = 0,
        feature_name: str = "classifier",
        label_field: Literal["label", "domain"] = "label",
        num_domains: int | None = None,
    ) -> None:
        super().__init__()
        if label_field not in ("label", "domain"):
            raise GenResearchError(f"model.init_args.label_field={label_field!r} must be label (classes) or domain (domain ids)")
        if label_field == "domain":
            if not (isinstance(num_domains, int) and num_domains >= 2):
                raise GenResearchError("a domain classifier (label_field: domain) needs model.init_args.num_domains: the data's number of domains (>= 2)")
            num_classes = num_domains
            self.BATCH_FIELDS = ("image", "domain")  # the contract: it trains on domain ids
        if num_classes is None:
            raise GenResearchError(
                "the classifier needs labelled data (num_classes is None): use a data module with labels, e.g. data/mnist5k"
            )
        if num_classes < 2:
            raise GenResearchError(f"the classifier needs at least 2 classes, the data has num_classes={num_classes}")
        check_optimizer_settings("classifier", lr, weight_decay, warmup_steps, optimizer_implementation)
        check_widths("classifier", "channels", channels)
        check_widths("classifier", "feature_dim", feature_dim)
        if not 0.0 <= dropout < 1.0:
            raise GenResearchError(f"model.init_args.dropout={dropout} must be in [0, 1)")
        if shift_augment < 0:
            raise GenResearchError(f"model.init_args.shift_augment={shift_augment} must be >= 0")
        if not feature_name or any(ch in feature_name for ch in "/\\ "):
            raise GenResearchError(f"model.init_args.feature_name={feature_name!r} must be non-empty, without '/', '\\' or spaces")
        self.save_hyperparameters()
        self.hparams.channels = list(channels)  # plain list in hparams.yaml
        self.hparams.image_shape = tuple(int(s) for s in image_shape)
        c, h, w = image_shape
        self.image_shape = (int(c), int(h), int(w))
        self.num_classes = num_classes
        self.feature_name = feature_name
        self.label_field = label_field
        self.trunk = ConvEncoder(c, (h, w), list(channels), feature_dim, norm)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    # ---- public API ------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, feature_dim] (after the activation) of images in [-1, 1]."""
        h = self.dropout(self.trunk.features(x))
        return F.silu(self.trunk.head(h))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits [N, num_classes] from :meth:`features`."""
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, num_classes]."""
        return self.classify(self.features(x))

    # ---- Lightning hooks ---------------------------------------------------------------------------
    def _step(self, batch: dict[str, torch.Tensor], stage: str, accuracy: MulticlassAccuracy) -> torch.Tensor:
        x, y = batch["image"], batch[self.label_field]
        if stage == "train" and self.hparams.shift_augment > 0:
            x = random_shift(x, self.hparams.shift_augment)  # global RNG: part of the checkpointed training stream
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y)
        accuracy(logits.detach(), y)
        on_step = stage == "train"
        sync = stage != "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=not on_step, sync_dist=sync, batch_size=len(x))
        self.log(f"{stage}/acc", accuracy, prog_bar=True, on_step=on_step, on_epoch=not on_step, batch_size=len(x))
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_acc)

    # No randomness in evaluation: dropout is off in eval mode, so validation never touches the global RNG.
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val", self.val_acc)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test", self.test_acc)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Features, logits, predicted and true labels of a batch (``python -m gen_research predict``)."""
        x, labels = batch["image"], batch[self.label_field]
        features = self.features(x)
        logits = self.classify(features)
        return {"features": features, "logits": logits, "predictions": logits.argmax(1), "labels": labels}

    def check_data(self, datamodule: Any, data_name: str) -> None:
        """A domain classifier's number of domains must be the data's (single-label domains: cross-entropy)."""
        if self.label_field != "domain":
            return
        if getattr(datamodule, "multi_label", False):
            raise GenResearchError(f"{data_name} has multi-label domains (attributes); the classifier learns one domain per image (cross-entropy)")
        domains = getattr(datamodule, "num_domains", None)
        if domains != self.num_classes:
            raise GenResearchError(f"{data_name} has {domains} domains but model.init_args.num_domains={self.num_classes}; set it to {domains}")

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self)


__all__ = ["Classifier", "random_shift"]
