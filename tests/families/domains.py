"""A test-only multi-domain translator: tests/families/paired.py's translator with three named target domains.

Written only against public API (the registry decorator and the model contract). It trains on the same
``paired_digits_test`` pairs (L1 to the inverted digit) and adds a learned per-domain bias before its output, so
the three domains give different images; ``tests/configs/tiny_domain_translator.yaml`` runs it through ``fit`` and
``translate``.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from gen_research.errors import GenResearchError
from gen_research.models.contract import ModelFamily
from gen_research.registry import MODELS

from tests.families.paired import PairedDigits  # noqa: F401  (registers paired_digits_test, the data it trains on)

DOMAIN_NAMES = ("A", "B", "C")


@MODELS.register("tiny_domain_translator_test", "test-only: a two-convolution translator into one of three named domains (L1)")
class TinyDomainTranslator(ModelFamily, LightningModule):
    """``translate(source, target)``: two 3x3 convolutions plus the target domain's bias, through tanh.

    Each training item asks for domain ``label % 3``; the biases start apart (-0.5, 0, 0.5) so a few steps leave the
    domains' outputs distinct.

    Args:
        image_shape: (C, H, W) of the images (linked from the data module).
        num_classes: unused; linked from the data module like for every model.
        hidden: channels of the hidden convolution.
        lr: AdamW learning rate.
    """

    BATCH_FIELDS = ("source", "target")
    CHECKPOINT_MONITOR = ("val/loss", "min")
    target_domains: int | None = len(DOMAIN_NAMES)
    domain_names: tuple[str, ...] | None = DOMAIN_NAMES

    def __init__(self, image_shape: tuple[int, int, int] = (1, 8, 8), num_classes: int | None = None, hidden: int = 16, lr: float = 1e-2) -> None:
        super().__init__()
        if hidden < 1 or lr <= 0:
            raise GenResearchError("tiny_domain_translator_test: hidden must be >= 1 and lr > 0; fix model.init_args")
        self.save_hyperparameters()
        channels = int(image_shape[0])
        self.source_channels = channels  # contract (Translates): the images translate() takes
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, channels, 3, padding=1))
        self.domain_bias = nn.Parameter(torch.linspace(-0.5, 0.5, len(DOMAIN_NAMES)).view(-1, 1, 1, 1).repeat(1, channels, 1, 1))

    def translate(self, images: Tensor, target: Tensor | None = None, **options: Any) -> Tensor:
        """Source images [B, C, H, W] in [-1, 1] -> their translation into ``target`` (int64 domain ids [B])."""
        if target is None:
            raise GenResearchError(f"tiny_domain_translator_test translates into one of {len(DOMAIN_NAMES)} domains; pass a target domain")
        if options:
            raise GenResearchError(f"tiny_domain_translator_test takes no translation options; got {', '.join(sorted(options))}")
        if target.dtype != torch.int64 or target.shape != (len(images),) or not bool(((target >= 0) & (target < len(DOMAIN_NAMES))).all()):
            raise GenResearchError(f"tiny_domain_translator_test: target must be int64 domain ids in 0..{len(DOMAIN_NAMES) - 1}, one per image")
        return torch.tanh(self.net(images) + self.domain_bias[target.to(self.domain_bias.device)])

    def l1_loss(self, batch: dict[str, Tensor]) -> Tensor:
        source = batch["source"]
        target = torch.arange(len(source), device=source.device) % len(DOMAIN_NAMES)
        return (self.translate(source, target) - batch["target"]).abs().mean()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.l1_loss(batch)
        self.log("train/loss", loss, batch_size=len(batch["source"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.l1_loss(batch)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(batch["source"]))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.0)


__all__ = ["DOMAIN_NAMES", "TinyDomainTranslator"]
