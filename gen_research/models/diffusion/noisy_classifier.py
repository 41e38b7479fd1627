"""Noisy classifier (Dhariwal & Nichol 2021): p(y | x_t, t) on DDPM-noised images, for classifier guidance.

A ConvEncoder trunk reads x_t; its features are concatenated with a sinusoidal embedding of t and an MLP
maps them to class logits. Training draws t uniformly and noises x with the same DDPMScheduler
(``add_noise``) a DDPM of the same ``num_train_timesteps`` / ``noise_schedule`` uses, so the classifier's
gradient can steer that DDPM's sampler (see :func:`gen_research.sampling.guidance.classifier_guidance`).
"""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from gen_research.errors import GenResearchError
from gen_research.models.diffusion.ddpm import BETA_SCHEDULES
from gen_research.nets.conv import ConvEncoder
from gen_research.models.common import LossSteps, check_optimizer_settings, check_widths
from gen_research.models.contract import ModelFamily
from gen_research.registry import MODELS
from gen_research.training.optimizers import AdamWImplementation


@MODELS.register("noisy_classifier", "time-conditioned classifier of noised images x_t (for diffusion classifier guidance)")
class NoisyClassifier(ModelFamily, LossSteps, L.LightningModule):
    """Classifier p(y | x_t, t) of DDPM-noised images, trained with cross-entropy at uniform timesteps."""

    BATCH_FIELDS = ("image", "label")  # contract: a guidance network for diffusion sampling, not a generator


    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        channels: list[int] = (32, 64),
        feature_dim: int = 128,
        time_embed_dim: int = 64,
        num_train_timesteps: int = 1000,
        noise_schedule: Literal["linear", "cosine", "scaled_linear"] = "linear",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer_implementation: AdamWImplementation = "auto",
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
    ) -> None:
        """``optimizer_implementation``: AdamW kernel: auto (fused where the device supports it), fused, foreach or
        for_loop; the same update up to rounding, see docs/results.md (Speed)."""
        super().__init__()
        check_optimizer_settings("noisy_classifier", lr, weight_decay, warmup_steps, optimizer_implementation)
        check_widths("noisy_classifier", "channels", channels)
        check_widths("noisy_classifier", "feature_dim", feature_dim)
        check_widths("noisy_classifier", "num_train_timesteps", num_train_timesteps)
        if not num_classes:
            raise GenResearchError("noisy_classifier needs labels: use a labelled data module (num_classes is None)")
        if time_embed_dim < 2 or time_embed_dim % 2:
            raise GenResearchError(f"noisy_classifier: time_embed_dim must be an even number >= 2, got {time_embed_dim}")
        self.save_hyperparameters()
        self.hparams.channels = list(channels)
        c, h, w = image_shape
        self.image_shape = (c, h, w)
        # GroupNorm, not BatchNorm: per-sample statistics (the batch mixes all noise levels, and guidance
        # differentiates a single x_t without batch coupling).
        self.encoder = ConvEncoder(c, (h, w), list(channels), feature_dim, norm="group")
        self.head = nn.Sequential(
            nn.SiLU(),
            nn.Linear(feature_dim + time_embed_dim, feature_dim),
            nn.SiLU(),
            nn.Linear(feature_dim, num_classes),
        )
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps, beta_schedule=BETA_SCHEDULES[noise_schedule]
        )

    # ---- model ------------------------------------------------------------------------------------
    def forward(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Class logits [N, num_classes] for noisy images x_t at timesteps t (scalar or [N])."""
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(len(x_t))
        temb = get_timestep_embedding(t, self.hparams.time_embed_dim).to(x_t.dtype)
        return self.head(torch.cat([self.encoder(x_t), temb], dim=1))

    def log_prob(self, x_t: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor) -> torch.Tensor:
        """log p(labels | x_t, t), shape [N]."""
        logp = F.log_softmax(self(x_t, t).float(), dim=1)
        return logp.gather(1, labels.to(x_t.device).long()[:, None]).squeeze(1)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar_t of the training noise schedule (what classifier_guidance takes)."""
        return self.noise_scheduler.alphas_cumprod

    def compute_losses(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy and accuracy at t ~ U{0..T-1}; randomness (t, noise) drawn from ``generator``."""
        gen = {"generator": generator} if generator is not None else {}
        t = torch.randint(0, self.hparams.num_train_timesteps, (len(x),), device=x.device, **gen)
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, **gen)
        x_t = self.noise_scheduler.add_noise(x, noise, t)
        logits = self(x_t, t).float()
        labels = labels.to(x.device)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "acc": acc}


__all__ = ["NoisyClassifier"]
