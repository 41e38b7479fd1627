"""Variational autoencoder with Bernoulli or Gaussian likelihood, beta/KL warm-up and an IWAE NLL estimate."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from gen_research.errors import GenResearchError
from gen_research.models.autoencoder.base import AutoencoderBase
from gen_research.models.common import check_number, check_widths
from gen_research.models.contract import SamplingOption
from gen_research.registry import MODELS
from gen_research.training.optimizers import AdamWImplementation

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, summed over the last dim."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def normal_log_prob(
    z: torch.Tensor, mu: torch.Tensor | float = 0.0, logvar: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over the last dim."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


@MODELS.register("vae", "variational autoencoder (bernoulli/gaussian likelihood, beta, KL warm-up, IWAE nll)")
class VAE(AutoencoderBase):
    """Gaussian-posterior VAE; logs ELBO and the importance-weighted NLL (nats per image) in validation.

    With ``likelihood="bernoulli"`` the decoder gives logits and the targets are (x + 1) / 2. On grey-level
    MNIST those targets are continuous, so the NLL is the standard number reported in papers, not an exactly
    normalised density.
    """

    SAMPLING_OPTIONS = (SamplingOption("temperature", float, "scale of the prior noise: z ~ N(0, T^2 I) (vae)", default=1.0, low=0.0),)
    conditioning_classes = None  # contract: Generates, unconditionally
    latent_prior = "standard_normal"  # contract: LatentPrior (decode(z) for z ~ N(0, I); ppl)
    encoder_outputs_per_latent = 2
    max_decode_batch = 2048  # images decoded at once in the IWAE estimate (bounds memory)

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        latent_dim: int = 16,
        channels: list[int] = (32, 64),
        norm: Literal["batch", "group", "none"] = "batch",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer_implementation: AdamWImplementation = "auto",
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        iw_samples: int = 64,
    ) -> None:
        super().__init__(
            image_shape=image_shape,
            num_classes=num_classes,
            latent_dim=latent_dim,
            channels=channels,
            norm=norm,
            lr=lr,
            weight_decay=weight_decay,
            optimizer_implementation=optimizer_implementation,
            warmup_steps=warmup_steps,
            lr_schedule=lr_schedule,
        )
        check_number("vae", "beta", beta, low=0.0, hint="a KL weight >= 0 (1: the ELBO)")
        check_number("vae", "kl_warmup_steps", kl_warmup_steps, low=0, hint="0 (none) or a number of steps")
        check_widths("vae", "iw_samples", iw_samples)
        self.likelihood = likelihood
        self.beta = beta
        self.kl_warmup_steps = kl_warmup_steps
        self.iw_samples = iw_samples
        if likelihood == "gaussian":
            # Learned global scale; log(0.1) because sigma=1 on [-1, 1] data would let the KL swamp the likelihood.
            self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1)))

    # ---- distributions ---------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x), each [B, latent_dim]."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)  # keeps exp(logvar) finite early in training

    def recon_nll(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) in nats, summed over C, H, W; ``out`` is the raw decoder output (broadcasts against x)."""
        out = out.float()
        x = x.float().expand_as(out)
        if self.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(out, (x + 1) / 2, reduction="none")
        else:
            log_sigma = self.log_sigma.float()
            nll = 0.5 * ((x - out) * torch.exp(-log_sigma)).pow(2) + log_sigma + 0.5 * LOG_2PI
        return nll.flatten(-3).sum(-1)

    def effective_beta(self, step: int) -> float:
        """KL weight at a global step: linear ramp 0 -> beta over kl_warmup_steps, then beta."""
        if self.kl_warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, step / self.kl_warmup_steps)

    def _noise(self, shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        device = generator.device if generator is not None else like.device
        return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)

    # ---- public API ------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return torch.sigmoid(out) * 2 - 1
        return out.clamp(-1.0, 1.0)

    def sample(
        self, num_samples: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """Decode z ~ N(0, temperature^2 I) drawn with ``generator`` (unconditional: ``labels`` must be None)."""
        if labels is not None:
            raise GenResearchError("vae samples without classes; do not pass labels")
        z = self._noise((num_samples, self.latent_dim), next(self.decoder.parameters()), generator)
        return self.decode(temperature * z)

    # ---- losses ----------------------------------------------------------------------------------
    def _terms(self, x: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image single-sample recon NLL and analytic KL."""
        mu, logvar = self.posterior(x)
        z = mu + torch.exp(0.5 * logvar) * self._noise(mu.shape, mu, generator)
        return self.recon_nll(x, self.decoder(z)), gaussian_kl(mu.float(), logvar.float())

    def compute_losses(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        recon, kl = self._terms(x, generator)
        beta = self.effective_beta(self.global_step)
        loss = (recon + beta * kl).mean()
        beta_t = torch.tensor(beta, device=loss.device)
        return {"loss": loss, "recon_loss": recon.mean(), "kl": kl.mean(), "beta": beta_t}

    def eval_metrics(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        recon, kl = self._terms(x, generator)
        return {
            "loss": (recon + self.beta * kl).mean(),  # target beta, so val/loss is comparable across warm-up
            "recon_loss": recon.mean(),
            "kl": kl.mean(),
            "elbo": -(recon + kl).mean(),  # beta = 1: a bound on log p(x)
            "nll_iw": self.nll_iw(x, generator=generator).mean(),
        }

    def nll_iw(
        self, x: torch.Tensor, num_samples: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Importance-weighted estimate of -log p(x), nats per image [B], with k = num_samples (default iw_samples).

        -[logsumexp_k(log p(x|z_k) + log p(z_k) - log q(z_k|x)) - log k]; samples are drawn in chunks of
        [s, B, D] (s * B <= max_decode_batch) so memory stays bounded for large k.
        """
        k = num_samples or self.iw_samples
        mu, logvar = self.posterior(x)
        chunk = max(1, self.max_decode_batch // len(x))
        log_w = []
        for start in range(0, k, chunk):
            s = min(chunk, k - start)
            z = mu + torch.exp(0.5 * logvar) * self._noise((s, *mu.shape), mu, generator)
            out = rearrange(self.decoder(rearrange(z, "s b d -> (s b) d")), "(s b) c h w -> s b c h w", s=s)
            z32, mu32, logvar32 = z.float(), mu.float(), logvar.float()
            log_px = -self.recon_nll(x, out)
            log_w.append(log_px + normal_log_prob(z32) - normal_log_prob(z32, mu32, logvar32))
        log_w64 = torch.cat(log_w).double()  # float64: logsumexp over k terms of size ~ -1e2..-1e3
        return (-(torch.logsumexp(log_w64, dim=0) - math.log(k))).float()
