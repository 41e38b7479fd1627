"""VQ-VAE (van den Oord et al. 2017): encoder, vector-quantised codebook, decoder; MSE reconstruction + VQ loss."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as L
import torch
from einops import rearrange
from torchmetrics.image import PeakSignalNoiseRatio

from gen_research.models.common import SeededEvaluation, check_number, check_optimizer_settings, check_widths, configure_adamw
from gen_research.models.contract import ModelFamily
from gen_research.models.vqvae.networks import VQDecoder, VQEncoder, latent_grid
from gen_research.nets.quantize import VectorQuantizer, code_histogram, codebook_usage, perplexity
from gen_research.registry import MODELS
from gen_research.training.optimizers import AdamWImplementation


@MODELS.register("vqvae", "VQ-VAE (van den Oord et al. 2017): codebook with EMA updates and dead-code restart; reconstructs, encodes to codes")
class VQVAE(ModelFamily, SeededEvaluation, L.LightningModule):
    """The paper's VQ-VAE. Validation and test log the loss, the reconstruction MSE, PSNR, and the codebook usage
    (fraction of codes used) and perplexity of all the epoch's codes together (one histogram per epoch, summed over
    processes).

    Contract (gen_research/models/contract.py): Reconstructs and Quantizes (``code_grid`` is the image size / 4).
    It generates only through a prior over its codes (the ``vq_prior`` family). It is not a FirstStage: its network is
    the paper's, not a diffusers component."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,  # linked from the data; a VQ-VAE ignores classes
        channels: int = 256,
        residual_channels: int | None = None,
        codebook_size: int = 512,
        embedding_dim: int = 64,
        beta: float = 0.25,
        ema: bool = False,
        decay: float = 0.99,
        restart_unused_after: int = 0,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        optimizer_implementation: AdamWImplementation = "auto",
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
    ) -> None:
        """``channels`` 256, ``codebook_size`` 512, ``embedding_dim`` 64, ``beta`` 0.25, Adam at 2e-4: the paper's
        settings. ``residual_channels`` (the residual blocks' 3x3 width) defaults to ``channels`` ("all having 256 hidden
        units"). ``ema``/``decay``: codebook by EMA (the paper's appendix). ``restart_unused_after``: replace a code
        unused for that many training steps by an encoder output of the batch (0 = never).
        ``optimizer_implementation``: AdamW kernel: auto (fused where the device supports it), fused, foreach or for_loop;
        the same update up to rounding, see docs/results.md (Speed)."""
        super().__init__()
        check_optimizer_settings("vqvae", lr, weight_decay, warmup_steps, optimizer_implementation)
        check_widths("vqvae", "codebook_size", codebook_size)
        check_widths("vqvae", "embedding_dim", embedding_dim)
        check_widths("vqvae", "channels", channels)
        check_number("vqvae", "channels", channels, low=2, hint="e.g. 256 (the paper) or 64: the first convolution has channels // 2")
        if residual_channels is not None:
            check_widths("vqvae", "residual_channels", residual_channels)
        check_number("vqvae", "beta", beta, low=0.0, hint="0.25 (the paper)")
        check_number("vqvae", "decay", decay, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False, hint="0.99 (the paper's EMA)")
        check_number("vqvae", "restart_unused_after", restart_unused_after, low=0, hint="0 (no restart) or a number of training steps, e.g. 100")
        self.save_hyperparameters()
        c, h, w = image_shape
        self.image_shape = (c, h, w)
        self.code_grid = latent_grid((h, w))
        self.codebook_size = codebook_size
        hidden = residual_channels or channels
        self.encoder = VQEncoder(c, channels, hidden, embedding_dim)
        self.quantizer = VectorQuantizer(codebook_size, embedding_dim, beta=beta, ema=ema, decay=decay, restart_unused_after=restart_unused_after)
        self.decoder = VQDecoder(c, channels, hidden, embedding_dim)
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))  # per image, averaged (as the psnr metric)
        self.epoch_histogram = torch.zeros(codebook_size, dtype=torch.long)

    # ---- the contract: Quantizes, Reconstructs -----------------------------------------------------
    def encode_codes(self, images: torch.Tensor) -> torch.Tensor:
        """int64 codes ``[B, h, w]``; never changes the codebook (unlike a training-mode forward)."""
        z = self.encoder(images)
        b, _, h, w = z.shape
        return self.quantizer.nearest_codes(rearrange(z, "b d h w -> (b h w) d")).view(b, h, w)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] of int64 codes ``[B, h, w]``."""
        return self.decoder(self.quantizer.lookup(codes)).clamp(-1.0, 1.0)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode_codes(self.encode_codes(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(images)

    # ---- losses -------------------------------------------------------------------------------------
    def compute_losses(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """(batch-mean ``loss``, ``rec_loss`` (MSE in [-1, 1] units), ``vq_loss``; unclamped reconstructions; codes)."""
        z_q, vq_loss, codes = self.quantizer(self.encoder(x))
        x_hat = self.decoder(z_q)  # unclamped in the loss: clamping would zero the gradient of saturated pixels
        rec_loss = (x_hat.float() - x.float()).pow(2).mean()
        return {"loss": rec_loss + vq_loss, "rec_loss": rec_loss, "vq_loss": vq_loss}, x_hat, codes

    # ---- Lightning hooks ----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch["image"]
        losses, _, codes = self.compute_losses(x)
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(x))
        self.log_dict({"train/rec_loss": losses["rec_loss"], "train/vq_loss": losses["vq_loss"],
                       "train/perplexity": perplexity(code_histogram(codes, self.codebook_size))}, batch_size=len(x))
        return losses["loss"]

    def _start_epoch_histogram(self) -> None:
        self.epoch_histogram = torch.zeros(self.codebook_size, dtype=torch.long, device=self.device)

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        x = batch["image"]
        losses, x_hat, codes = self.compute_losses(x)
        self.epoch_histogram = self.epoch_histogram.to(codes.device) + code_histogram(codes, self.codebook_size)
        self.psnr.update((x_hat.float().clamp(-1, 1) + 1) / 2, (x.float() + 1) / 2)
        self.log_dict({f"{stage}/{name}": value for name, value in losses.items()}, prog_bar=stage == "val",
                      on_epoch=True, sync_dist=True, batch_size=len(x))
        return losses

    def _log_epoch_codes(self, stage: str) -> None:
        histogram = self.trainer.strategy.reduce(self.epoch_histogram.to(self.device), reduce_op="sum")
        self.log_dict({f"{stage}/codebook_usage": codebook_usage(histogram), f"{stage}/perplexity": perplexity(histogram),
                       f"{stage}/psnr": self.psnr.compute()}, sync_dist=False)  # already summed / synced by torchmetrics
        self.psnr.reset()

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._start_epoch_histogram()
        self.psnr.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_codes("val")

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._start_epoch_histogram()
        self.psnr.reset()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_codes("test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        """Codes and reconstructions of a batch (``python -m gen_research predict``)."""
        codes = self.encode_codes(batch["image"])
        return {"codes": codes, "reconstructions": self.decode_codes(codes), "labels": batch.get("label")}

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self)


__all__ = ["VQVAE"]
