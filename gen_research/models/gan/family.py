"""The GAN family's LightningModule: one generator and one discriminator, each with its own optimizer, trained
through the shared multi-network support (gen_research/training/multi_network.py: one batch = one training step).

``GANBase`` holds what every GAN shares: the losses and regularizers (losses.py, regularizers.py), ``n_critic``
discriminator steps per generator step, lazy R1, the truncation option, sampling and validation. ``gan``,
``dcgan`` and ``cgan`` differ only in the networks they build (networks.py).

Defaults follow the references: Adam(2e-4, betas 0.5/0.999) for both networks as in DCGAN (Radford et al. 2016),
the non-saturating loss (Goodfellow et al. 2014), one D step per G step. WGAN-GP (Gulrajani et al. 2017) is
``loss: wasserstein, gradient_penalty: 10, n_critic: 5`` (and betas 0/0.9 in its experiment). D's inputs can be
augmented by DiffAugment (``diffaugment: color,translation,cutout``) or ADA (``ada: {target: 0.6}``, ada.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from gen_research.errors import GenResearchError
from gen_research.models.common import SeededEvaluation, check_number
from gen_research.models.contract import ModelFamily, SamplingOption
from gen_research.models.gan.ada import AdaptiveAugment, check_ada_settings
from gen_research.models.gan.diffaugment import diff_augment, parse_policy
from gen_research.models.gan.losses import check_loss, discriminator_loss, generator_loss
from gen_research.models.gan.regularizers import gradient_penalty, lazy_regularization, r1_gamma_heuristic, r1_penalty
from gen_research.training.multi_network import MultiNetworkTraining
from gen_research.training.optimizers import optimizer_specs

#: Both networks: Adam(2e-4, betas 0.5/0.999), the DCGAN paper's setting, used by most GAN references since.
DEFAULT_OPTIMIZER = {"lr": 2e-4, "betas": [0.5, 0.999]}


class GANBase(ModelFamily, MultiNetworkTraining, SeededEvaluation, L.LightningModule):
    """Shared GAN training: per batch one discriminator step, and a generator step every ``n_critic``-th batch.

    Contract: Generates (class-conditional with ``class_conditional``), LatentPrior (``decode``), option ``truncation_psi`` (z scaled towards
    the mean latent 0: 1 = off, the fair setting for metrics), no checkpoint monitor (a GAN's losses do not rank
    checkpoints; add the evaluation callback and ``checkpoint.monitor: fid/...`` for that).
    """

    NETWORKS: ClassVar[tuple[str, ...]] = ("discriminator", "generator")
    latent_prior = "standard_normal"  # contract: LatentPrior (decode z ~ N(0, I): latent walks in the grids, ppl)
    SAMPLING_OPTIONS = (SamplingOption("truncation_psi", float, "truncation: scale z towards its mean (1 = off; metrics use 1)",
                                       default=1.0, low=0.0, high=1.0),)
    CHECKPOINT_MONITOR = None

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int | None,
        latent_dim: int,
        loss: str,
        n_critic: int,
        gradient_penalty: float,
        r1_gamma: float | Literal["auto"],
        r1_interval: int,
        class_conditional: bool,
        optimizers: dict[str, dict[str, Any]] | None,
        diffaugment: str | None = None,
        ada: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__.lower()
        check_loss(loss)
        check_number(name, "n_critic", n_critic, low=1, hint="1 (one D step per G step) or e.g. 5 (WGAN-GP)")
        check_number(name, "gradient_penalty", gradient_penalty, low=0.0, hint="0 (off) or 10 (WGAN-GP)")
        if r1_gamma != "auto":
            check_number(name, "r1_gamma", r1_gamma, low=0.0, hint="0 (off), e.g. 10, or auto (0.0002 * side^2 / batch)")
        check_number(name, "r1_interval", r1_interval, low=1, hint="1 (every step) or 16 (lazy, as StyleGAN2)")
        if not (isinstance(latent_dim, int) and latent_dim >= 1):
            raise GenResearchError(f"{name}: model.init_args.latent_dim={latent_dim!r} must be a positive integer")
        if class_conditional and not num_classes:
            raise GenResearchError(f"{name}: class_conditional needs num_classes (a labelled data module) or set class_conditional: false")
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.loss_kind = loss
        self.n_critic = n_critic
        self.gp_weight = gradient_penalty
        # "auto": StyleGAN2-ADA's heuristic, resolved in setup once the batch (all ranks) is known.
        self.r1_gamma_auto = r1_gamma == "auto"
        self.r1_gamma = 0.0 if self.r1_gamma_auto else r1_gamma
        self.r1_interval = r1_interval
        self.class_conditional = class_conditional
        self.augment_policy = parse_policy(diffaugment)  # DiffAugment on every image D sees in training (diffaugment.py)
        ada_settings = check_ada_settings(name, ada)
        if ada_settings and self.augment_policy:
            raise GenResearchError(f"{name}: choose one augmentation for D: diffaugment ({diffaugment}) or ada, not both")
        self.ada = AdaptiveAugment(**ada_settings) if ada_settings else None  # ADA (ada.py): p in checkpoints
        self.num_classes = num_classes if class_conditional else None
        if class_conditional:
            self.BATCH_FIELDS = ("image", "label")  # the contract: it trains on labels too
        specs = optimizer_specs(optimizers, self.NETWORKS, defaults={n: DEFAULT_OPTIMIZER for n in self.NETWORKS})
        if (r1_gamma == "auto" or r1_gamma) and r1_interval > 1:  # lazy R1 (StyleGAN2): D's lr and betas adjusted so the regularized run matches
            lr, betas = lazy_regularization(specs["discriminator"].lr, tuple(specs["discriminator"].betas), r1_interval)
            specs["discriminator"] = dataclasses.replace(specs["discriminator"], lr=lr, betas=betas)
        self.optimizer_specs = specs
        # Images D has seen (all ranks): ADA's p schedule, ProGAN's growth phases and the logs count in images, as
        # NVlabs' kimg does; a buffer, so checkpoints carry it and a resumed run continues the same schedule.
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.long))

    def setup(self, stage: str) -> None:
        """Resolve ``r1_gamma: auto`` (NVlabs' 0.0002 * side^2 / batch, the batch over all ranks) and log it."""
        super().setup(stage)
        if not self.r1_gamma_auto or self.r1_gamma:
            return
        batch = getattr(self.trainer.datamodule, "batch_size", None) if self.trainer.datamodule is not None else None
        if not isinstance(batch, int):
            raise GenResearchError(f"{type(self).__name__.lower()}: r1_gamma: auto needs a data module with a batch_size; "
                                   "set model.init_args.r1_gamma to a number")
        self.r1_gamma = r1_gamma_heuristic(int(self.image_shape[-1]), batch * self.trainer.world_size)
        rank_zero_info(f"{type(self).__name__.lower()}: r1_gamma auto = {self.r1_gamma:.6g} "
                       f"(0.0002 * {self.image_shape[-1]}^2 / batch {batch * self.trainer.world_size})")
        for logger in self.trainer.loggers:
            logger.log_hyperparams({"r1_gamma_effective": self.r1_gamma})

    # ---- networks (subclasses) --------------------------------------------------------------------
    generator: nn.Module
    discriminator: nn.Module

    # ---- contract: Generates ----------------------------------------------------------------------
    @property
    def conditioning_classes(self) -> int | None:
        return self.num_classes

    def sampling_network(self) -> nn.Module:
        return self.generator

    def decode(self, z: Tensor, truncation_psi: float = 1.0) -> Tensor:
        """G(psi * z) in [-1, 1]; a conditional GAN draws classes 0, 1, ..., C-1 in turn (LatentPrior)."""
        labels = torch.arange(len(z), device=self.device) % self.num_classes if self.num_classes else None
        return self.generator(z.to(self.device) * truncation_psi, labels).clamp(-1.0, 1.0)

    def latents(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        device = generator.device if generator is not None else self.device
        return torch.randn(count, self.latent_dim, generator=generator, device=device).to(self.device)

    @torch.no_grad()
    def sample(self, num_samples: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               truncation_psi: float = 1.0) -> Tensor:
        """``num_samples`` images in [-1, 1] from z ~ N(0, I) drawn with ``generator``, scaled by ``truncation_psi``.
        A conditional GAN draws ``labels`` (classes 0, 1, ..., C-1 in turn when None)."""
        z = self.latents(num_samples, generator) * truncation_psi
        if self.num_classes:
            labels = torch.arange(num_samples, device=self.device) % self.num_classes if labels is None else labels.to(self.device)
        elif labels is not None:
            raise GenResearchError(f"{type(self).__name__} samples without classes; train with class_conditional: true to pass labels")
        return self.generator(z, labels).clamp(-1.0, 1.0)

    # ---- training -----------------------------------------------------------------------------------
    def _labels(self, batch: dict[str, Tensor]) -> Tensor | None:
        return batch["label"] if self.num_classes else None

    def critic(self, images: Tensor, labels: Tensor | None) -> Tensor:
        """D's logits on ``images`` as the losses see them: through DiffAugment or ADA when set (reals and fakes
        alike, each with its own draws from the checkpointed global RNG); the penalties use raw images."""
        if self.augment_policy:
            images = diff_augment(images, self.augment_policy)
        elif self.ada is not None:
            images = self.ada(images)
        return self.discriminator(images, labels)

    def adapt_augmentation(self, real_logits: Tensor, batch_images: int) -> dict[str, Tensor]:
        """ADA's feedback: record sign(D(real)) and every ``interval`` D steps move p (all ranks alike); the logged values."""
        if self.ada is None or not self.training:
            return {}
        self.ada.observe(real_logits.detach())
        world = self.trainer.world_size if self._trainer is not None else 1
        reduce = (lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")) if world > 1 else (lambda t: t)
        r_t = self.ada.update(batch_images * world, reduce)
        return {"ada_p": self.ada.p.detach().clone(), **({"ada_rt": r_t} if r_t is not None else {})}

    def r1_due(self) -> bool:
        return bool(self.r1_gamma) and self.global_step % self.r1_interval == 0

    def discriminator_step_loss(self, real: Tensor, fake: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """D's loss on a real and a (detached) generated batch, with WGAN-GP and (not lazy) R1; every term is returned."""
        folded_r1 = self.r1_due() and self.r1_interval == 1
        if folded_r1:
            real = real.detach().requires_grad_(True)
        raw_logits = self.discriminator(real, labels) if folded_r1 else None  # R1 is on the raw reals
        real_logits = raw_logits if raw_logits is not None and not self.augment_policy and self.ada is None else self.critic(real, labels)
        terms = {"loss_d": discriminator_loss(self.loss_kind, real_logits, self.critic(fake, labels))}
        terms.update(self.adapt_augmentation(real_logits, len(real)))
        total = terms["loss_d"]
        if self.gp_weight:
            terms["gradient_penalty"] = gradient_penalty(lambda x: self.discriminator(x, labels), real.detach(), fake)
            total = total + self.gp_weight * terms["gradient_penalty"]
        if folded_r1:
            terms["r1"] = r1_penalty(raw_logits, real)
            total = total + 0.5 * self.r1_gamma * terms["r1"]
        terms["total_d"] = total
        return terms  # total_d is the loss; the rest is logged

    def lazy_r1_loss(self, real: Tensor, labels: Tensor | None) -> Tensor:
        """StyleGAN2's lazy R1: a separate D step every ``r1_interval`` batches, weighted by the interval (the
        optimizer's lr and betas were adjusted by interval / (interval + 1) for the extra steps)."""
        real = real.detach().requires_grad_(True)
        return 0.5 * self.r1_gamma * self.r1_interval * r1_penalty(self.discriminator(real, labels), real)

    def training_reals(self, batch: dict[str, Tensor]) -> Tensor:
        """The real images D trains on (ProGAN overrides it: reals at the growing resolution)."""
        return batch["image"]

    def count_images(self, count: int) -> None:
        """Add one training batch (``count`` images per rank) to ``images_seen``."""
        world = self.trainer.world_size if self._trainer is not None else 1
        self.images_seen += count * world

    def training_fakes(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """G's images of ``z`` in a training step (StyleGAN overrides it: styles with mixing, ``w_avg`` tracked)."""
        return self.generator(z, labels)

    def discriminator_steps(self, real: Tensor, labels: Tensor | None, logged: dict[str, Tensor]) -> None:
        """One D step on ``real`` against fresh fakes, then lazy R1 when due; the terms go into ``logged``."""
        z = self.latents(len(real))  # global RNG: the checkpointed training stream

        def d_loss() -> Tensor:
            terms = self.discriminator_step_loss(real, self.training_fakes(z, labels).detach(), labels)
            logged.update({k: v.detach() for k, v in terms.items() if k != "total_d"})
            return terms["total_d"]

        self.step_network("discriminator", d_loss)
        if self.r1_due() and self.r1_interval > 1:
            logged["r1_weighted"] = self.step_network("discriminator", lambda: self.lazy_r1_loss(real, labels))

    def generator_steps(self, count: int, labels: Tensor | None, logged: dict[str, Tensor]) -> None:
        """One G step on ``count`` fresh latents (StyleGAN adds its lazy path-length step)."""
        z = self.latents(count)
        logged["loss_g"] = self.step_network("generator", lambda: generator_loss(self.loss_kind, self.critic(self.training_fakes(z, labels), labels)))

    def training_iteration(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        real, labels = self.training_reals(batch), self._labels(batch)
        self.count_images(len(real))
        logged: dict[str, Tensor] = {}
        self.discriminator_steps(real, labels, logged)
        if (self.global_step + 1) % self.n_critic == 0:  # n_critic D steps (batches) per G step
            self.generator_steps(len(real), labels, logged)
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, prog_bar=True, batch_size=len(real))
        return logged

    def eval_fakes(self, count: int, labels: Tensor | None) -> Tensor:
        """Generated images for the held-out losses, from the seeded evaluation generator (the global, checkpointed
        training stream is never touched); StyleGAN overrides it to draw its noise from the same generator."""
        z = torch.randn(count, self.latent_dim, generator=self.eval_generator(), device=self.device)
        return self.generator(z, labels)

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        real, labels = batch["image"], self._labels(batch)
        real_logits, fake_logits = self.discriminator(real, labels), self.discriminator(self.eval_fakes(len(real), labels), labels)
        metrics = {"loss_d": discriminator_loss(self.loss_kind, real_logits, fake_logits), "loss_g": generator_loss(self.loss_kind, fake_logits)}
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, on_epoch=True, sync_dist=True, batch_size=len(real))
        return metrics

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test")


Loss = Literal["non_saturating", "minimax", "hinge", "least_squares", "wasserstein"]

__all__ = ["DEFAULT_OPTIMIZER", "GANBase", "Loss"]
