"""Shared LightningModule code for the autoencoder family (ae, dae, vae)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import lightning.pytorch as L
import torch
from einops import rearrange
from torchmetrics.classification import BinaryAUROC

from gen_research.models.contract import ModelFamily
from gen_research.nets import ConvDecoder, ConvEncoder
from gen_research.models.common import SeededEvaluation, check_optimizer_settings, check_widths, configure_adamw
from gen_research.training.optimizers import AdamWImplementation


def per_image_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, in [-1, 1] space: [B, C, H, W] -> [B]."""
    return (x_hat.float() - x.float()).pow(2).flatten(1).mean(1)


def update_holdout_auroc(
    metric: BinaryAUROC, scores: torch.Tensor, labels: torch.Tensor, holdout_class: int
) -> None:
    """Add a batch of non-negative anomaly scores with target ``labels == holdout_class``."""
    # BinaryAUROC sigmoids any batch with values outside [0, 1] (taken for logits), which would rank batches
    # inconsistently; s / (1 + s) maps [0, inf) into [0, 1) monotonically, so the AUROC is unchanged.
    scores = scores.float()
    metric.update(scores / (1 + scores), (labels == holdout_class).long())


def holdout_auroc(scores: torch.Tensor, labels: torch.Tensor, holdout_class: int) -> torch.Tensor:
    """AUROC of anomaly ``scores`` for detecting ``labels == holdout_class`` (standalone form of the test path)."""
    metric = BinaryAUROC().to(scores.device)
    update_holdout_auroc(metric, scores, labels, holdout_class)
    return metric.compute()


class AutoencoderBase(ModelFamily, SeededEvaluation, L.LightningModule):
    """Base class: conv encoder/decoder, optimiser, deterministic validation RNG, holdout-class AUROC in test.

    Contract (gen_research/models/contract.py): Reconstructs and Interpolates; the VAE also Generates (from its prior)
    and is a LatentPrior. ae and dae cannot sample: they have no ``sample`` at all, so nothing mistakes them for generators.
    """

    encoder_outputs_per_latent: ClassVar[int] = 1  # VAE: 2 (mean and log-variance)

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        latent_dim: int = 16,
        channels: list[int] = (32, 64),  # tuple default: avoids a shared mutable default; YAML gives a list
        norm: Literal["batch", "group", "none"] = "batch",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer_implementation: AdamWImplementation = "auto",
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
    ) -> None:
        """``optimizer_implementation``: AdamW kernel: auto (fused where the device supports it), fused, foreach or
        for_loop; the same update up to rounding, see docs/results.md (Speed)."""
        super().__init__()
        name = type(self).__name__.lower()
        check_optimizer_settings(name, lr, weight_decay, warmup_steps, optimizer_implementation)
        check_widths(name, "latent_dim", latent_dim)
        check_widths(name, "channels", channels)
        # Collects the concrete subclass's init args too, so load_from_checkpoint rebuilds it.
        self.save_hyperparameters()
        self.hparams.channels = list(channels)  # plain list in hparams.yaml, whatever the caller passed
        c, h, w = image_shape
        self.image_shape = (c, h, w)
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(c, (h, w), list(channels), latent_dim * self.encoder_outputs_per_latent, norm)
        self.decoder = ConvDecoder(latent_dim, c, (h, w), list(channels), norm)
        self.test_auroc = BinaryAUROC()

    # ---- the contract: Reconstructs, Interpolates ------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent code [B, latent_dim] (the posterior mean for a VAE)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from latents [B, latent_dim]."""
        return self.decoder(z).clamp(-1.0, 1.0)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, num_steps: int) -> torch.Tensor:
        """Linear paths in latent space: [len(x_a) * num_steps, C, H, W], row i runs x_a[i] -> x_b[i]."""
        z_a, z_b = self.encode(x_a), self.encode(x_b)
        t = torch.linspace(0.0, 1.0, num_steps, device=z_a.device, dtype=z_a.dtype)[None, :, None]
        z = z_a[:, None] * (1 - t) + z_b[:, None] * t
        return self.decode(rearrange(z, "b s d -> (b s) d"))

    # ---- per-model losses (subclasses) -------------------------------------------------------------
    def compute_losses(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Batch-mean scalars with at least ``loss`` and ``recon_loss``; randomness drawn from ``generator``."""
        raise NotImplementedError

    def eval_metrics(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Metrics logged in validation/test; defaults to the training losses."""
        return self.compute_losses(x, generator)

    # ---- Lightning hooks ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch["image"]
        losses = self.compute_losses(x)  # global RNG: part of the checkpointed training stream
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(x))
        extra = {f"train/{k}": v for k, v in losses.items() if k != "loss"}
        self.log_dict(extra, batch_size=len(x))
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        x = batch["image"]
        metrics = self.eval_metrics(x, self.eval_generator())
        self.log("val/loss", metrics["loss"], prog_bar=True, on_epoch=True, sync_dist=True, batch_size=len(x))
        rest = {f"val/{k}": v for k, v in metrics.items() if k != "loss"}
        self.log_dict(rest, on_epoch=True, sync_dist=True, batch_size=len(x))
        return metrics

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.test_auroc.reset()

    def holdout_class(self) -> int | None:
        """``trainer.datamodule.holdout_class`` when there is one, else None."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        return getattr(datamodule, "holdout_class", None)

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image reconstruction MSE in [-1, 1] space: high = unlike the training classes."""
        return per_image_mse(self.reconstruct(x), x)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        x, labels = batch["image"], batch.get("label")
        metrics = self.eval_metrics(x, self.eval_generator())
        self.log_dict({f"test/{k}": v for k, v in metrics.items()}, on_epoch=True, sync_dist=True, batch_size=len(x))
        holdout = self.holdout_class()
        if holdout is not None:
            update_holdout_auroc(self.test_auroc, self.anomaly_score(x), labels, holdout)
        return metrics

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Latent codes, reconstructions and anomaly scores of a batch (``python -m gen_research predict``)."""
        x, labels = batch["image"], batch.get("label")
        z = self.encode(x)
        reconstructions = self.decode(z)
        return {"latents": z, "reconstructions": reconstructions, "scores": per_image_mse(reconstructions, x), "labels": labels}

    def on_test_epoch_end(self) -> None:
        # Decided by the datamodule, not by batches seen, so every process joins compute()'s gather.
        if self.holdout_class() is not None:
            self.log("test/auroc_holdout", self.test_auroc.compute(), sync_dist=False)
            self.test_auroc.reset()


    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self)


__all__ = ["AutoencoderBase", "holdout_auroc", "per_image_mse", "update_holdout_auroc"]
