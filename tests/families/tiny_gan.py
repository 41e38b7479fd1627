"""A test-only adversarial family: a tiny two-network GAN of 8x8 digits, written entirely against the public
contract (gen_research.models.contract) and the shared multi-network training (gen_research.training.multi_network).

It proves that a family with two optimizers, its own sampling option (``truncation``), a class-conditional mode
and no validation loss to rank checkpoints by needs no edit outside its file. Experiments name it
``class_path: tiny_gan_test`` after ``imports: [tests.families.tiny_gan]`` (tests/configs/tiny_gan.yaml).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_research.errors import GenResearchError
from gen_research.models.common import SeededEvaluation
from gen_research.models.contract import ModelFamily, SamplingOption
from gen_research.registry import MODELS
from gen_research.training.multi_network import MultiNetworkTraining
from gen_research.training.optimizers import optimizer_specs

#: Both networks step with Adam(0.5, 0.999) by default, as DCGAN (Radford et al. 2016) does.
DEFAULT_OPTIMIZER = {"lr": 2e-4, "betas": [0.5, 0.999]}


class Generator(nn.Module):
    """z (and a one-hot label when conditional) -> an image in [-1, 1]."""

    def __init__(self, latent_dim: int, hidden: int, image_shape: tuple[int, int, int], num_labels: int) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.num_labels = num_labels
        self.net = nn.Sequential(
            nn.Linear(latent_dim + num_labels, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, math.prod(image_shape)), nn.Tanh(),
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.num_labels:
            z = torch.cat([z, F.one_hot(labels, self.num_labels).to(z.dtype)], dim=1)
        return self.net(z).view(len(z), *self.image_shape)


class Discriminator(nn.Module):
    """An image (and a one-hot label when conditional) -> one logit: real vs generated."""

    def __init__(self, hidden: int, image_shape: tuple[int, int, int], num_labels: int) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.net = nn.Sequential(
            nn.Linear(math.prod(image_shape) + num_labels, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        x = images.flatten(1)
        if self.num_labels:
            x = torch.cat([x, F.one_hot(labels, self.num_labels).to(x.dtype)], dim=1)
        return self.net(x).squeeze(1)


@MODELS.register("tiny_gan_test", "test-only two-network GAN of 8x8 digits (non-saturating loss; truncation; class-conditional mode)")
class TinyGAN(ModelFamily, MultiNetworkTraining, SeededEvaluation, L.LightningModule):
    """A tiny GAN: one discriminator step and one generator step per batch (non-saturating loss), each network
    with its own optimizer (``optimizers: {generator: {...}, discriminator: {...}}``).

    Contract: Generates (class-conditional with ``class_conditional: true``), a ``truncation`` sampling option, no
    checkpoint monitor (a GAN's losses do not rank its checkpoints)."""

    NETWORKS: ClassVar[tuple[str, ...]] = ("discriminator", "generator")  # the order they step in, each batch
    SAMPLING_OPTIONS = (SamplingOption("truncation", float, "scale of the latent noise (truncation trick)", default=1.0, low=0.0, low_inclusive=False),)
    BATCH_FIELDS: ClassVar[tuple[str, ...]] = ("image",)
    CHECKPOINT_MONITOR = None

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        num_classes: int | None = None,
        latent_dim: int = 16,
        hidden: int = 64,
        class_conditional: bool = False,
        optimizers: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if class_conditional and not num_classes:
            raise GenResearchError("tiny_gan_test: class_conditional needs num_classes (a labelled data module) or set class_conditional: false")
        for name, value in (("latent_dim", latent_dim), ("hidden", hidden)):
            if not (isinstance(value, int) and value >= 1):
                raise GenResearchError(f"tiny_gan_test: model.init_args.{name}={value!r} must be a positive integer")
        self.save_hyperparameters()
        self.optimizer_specs = optimizer_specs(optimizers, self.NETWORKS, defaults={name: DEFAULT_OPTIMIZER for name in self.NETWORKS})
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.class_conditional = class_conditional
        self.num_classes = num_classes
        if class_conditional:
            self.BATCH_FIELDS = ("image", "label")  # this model trains on labels too
        num_labels = num_classes if class_conditional else 0
        self.generator = Generator(latent_dim, hidden, self.image_shape, num_labels)
        self.discriminator = Discriminator(hidden, self.image_shape, num_labels)

    # ---- contract: Generates -----------------------------------------------------------------------
    @property
    def conditioning_classes(self) -> int | None:
        return self.num_classes if self.class_conditional else None

    def sampling_network(self) -> nn.Module:
        return self.generator

    @torch.no_grad()
    def sample(self, num_samples: int, labels: Tensor | None = None, generator: torch.Generator | None = None, truncation: float = 1.0) -> Tensor:
        """``num_samples`` images in [-1, 1]; every random number (latents, and classes when conditional and
        ``labels`` is None) comes from ``generator``. ``truncation`` scales the latents (< 1: typical images)."""
        device = generator.device if generator is not None else self.device
        z = torch.randn(num_samples, self.latent_dim, generator=generator, device=device).to(self.device) * truncation
        if self.class_conditional:
            if labels is None:
                labels = torch.randint(self.num_classes, (num_samples,), generator=generator, device=device)
            labels = labels.to(self.device)
        else:
            labels = None
        return self.generator(z, labels).clamp(-1.0, 1.0)

    # ---- training: one discriminator step, one generator step --------------------------------------
    def _labels(self, batch: dict[str, Tensor]) -> Tensor | None:
        return batch["label"] if self.class_conditional else None

    def training_iteration(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        real, labels = batch["image"], self._labels(batch)
        z = torch.randn(len(real), self.latent_dim, device=self.device)  # global RNG: the checkpointed training stream

        def discriminator_loss() -> Tensor:
            fake = self.generator(z, labels).detach()
            return F.softplus(-self.discriminator(real, labels)).mean() + F.softplus(self.discriminator(fake, labels)).mean()

        def generator_loss() -> Tensor:  # non-saturating: maximise log D(G(z))
            return F.softplus(-self.discriminator(self.generator(z, labels), labels)).mean()

        losses = {"loss_d": self.step_network("discriminator", discriminator_loss), "loss_g": self.step_network("generator", generator_loss)}
        self.log_dict({f"train/{name}": value for name, value in losses.items()}, prog_bar=True, batch_size=len(real))
        return losses

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        real, labels = batch["image"], self._labels(batch)
        z = torch.randn(len(real), self.latent_dim, generator=self.eval_generator(), device=self.device)
        real_logits, fake_logits = self.discriminator(real, labels), self.discriminator(self.generator(z, labels), labels)
        metrics = {
            "loss_d": F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean(),
            "loss_g": F.softplus(-fake_logits).mean(),
            "d_real": torch.sigmoid(real_logits).mean(),  # the discriminator's belief that real images are real
        }
        self.log_dict({f"{stage}/{name}": value for name, value in metrics.items()}, on_epoch=True, sync_dist=True, batch_size=len(real))
        return metrics

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test")


__all__ = ["Discriminator", "Generator", "TinyGAN"]
