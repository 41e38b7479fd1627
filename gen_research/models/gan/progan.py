"""``progan``: Progressive Growing of GANs (Karras et al. 2018), after tkarras/progressive_growing_of_gans
(``networks.py``, ``train.py``); the networks are in progan_networks.py, the training is GANBase's (family.py).

Growth, counted in images shown to D (GANBase's ``images_seen``, checkpointed): ``images_per_phase`` at 4x4, then
per resolution a fade-in of ``images_per_fade_in`` images (alpha 0 -> 1, linear) and a stabilization of
``images_per_phase`` images; the paper's 800k each (appendix A.1; the reference's ``train.py`` defaults to 600k).
The state is recomputed from ``images_seen`` at the start of every training iteration, so a resume continues
the exact phase and alpha, also in the middle of a fade-in. Adam's state is reset at every phase change, as the
reference's ``reset_opt_for_new_lod`` (on by default there).

Loss: WGAN-GP (lambda 10, one D step per G step) plus the drift term 0.001 * E[D(real)^2]; Adam lr 0.001,
betas (0, 0.99), eps 1e-8 (the paper). Not reproduced: the paper's per-resolution minibatch sizes (one
``data.init_args.batch_size`` for the whole run) and its label conditioning (``progan`` is unconditional).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.models.common import check_number
from gen_research.models.gan.family import GANBase, Loss
from gen_research.models.gan.progan_networks import ProGANDiscriminator, ProGANGenerator, num_levels
from gen_research.models.gan.regularizers import drift_penalty as drift_term
from gen_research.registry import MODELS
from gen_research.training.optimizers import optimizer_specs

#: Both networks: Adam lr 0.001, betas (0, 0.99) (the paper, appendix A.1; AdamW's eps is torch's 1e-8, the paper's).
PROGAN_OPTIMIZER = {"lr": 1e-3, "betas": [0.0, 0.99]}


def growth_state(images_seen: int, images_per_phase: int, images_per_fade_in: int, max_level: int) -> tuple[int, float]:
    """(level, alpha) after ``images_seen`` images: level 0 (4x4) for the first ``images_per_phase``, then per level
    a fade-in (alpha from 0 at its first image, linearly, to 1 at its end) and a stabilization (alpha 1); after the
    last level's fade-in, ``max_level`` with alpha 1 for good. The same arithmetic as the reference's
    ``TrainingSchedule`` (lod = max_level - level + 1 - alpha), evaluated every batch rather than every 4."""
    if images_per_phase < 0 or images_per_fade_in < 0 or images_per_phase + images_per_fade_in == 0:
        raise ValueError("growth_state: images_per_phase and images_per_fade_in must be >= 0, not both 0")
    if images_seen < images_per_phase or max_level == 0:
        return 0, 1.0
    into_growth = images_seen - images_per_phase
    cycle = images_per_fade_in + images_per_phase
    level = 1 + into_growth // cycle
    if level > max_level:
        return max_level, 1.0
    into_level = into_growth - (level - 1) * cycle
    alpha = min(into_level / images_per_fade_in, 1.0) if images_per_fade_in else 1.0
    return int(level), float(alpha)


def growth_phase(level: int, alpha: float) -> int:
    """The phase's index: 0 the 4x4 stabilization, 2l - 1 the fade-in to level l, 2l its stabilization."""
    return 2 * level - (1 if level > 0 and alpha < 1.0 else 0)


def _check_count(name: str, value: Any, low: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise GenResearchError(f"progan: model.init_args.{name}={value!r} must be an integer >= {low}; set model.init_args.{name} to {hint}")


@MODELS.register("progan", "Progressive Growing of GANs (Karras et al. 2018): 4x4 -> full size with fade-in, equalized lr, pixel norm, minibatch std, WGAN-GP + drift")
class ProGAN(GANBase):
    """ProGAN: G and D grow from 4x4 to ``image_shape``'s power-of-2 side (1 or 3 channels).

    The growth state (``growth_level``, ``growth_alpha``, ``growth_phase``) is kept as buffers of this module, so
    checkpoints carry it, and is set on both networks before each use; not as buffers of the networks: the ``ema``
    callback averages every buffer of its target, which would drag a fade-in's alpha and truncate an integer level.

    ``sample()`` and ``decode()`` return images at the data's full resolution during growth too (the current
    output upsampled, nearest), so the evaluation callback and the sample grids work at every phase; the metrics
    of an early phase therefore measure a low-resolution generator. ``truncation_psi`` scales the normalized
    latent (after the generator's pixel norm, which would undo a scaling of z). D trains on the reals at the
    current resolution, blended during a fade-in as the reference's ``process_reals``; validation does the same.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 32, 32),
        num_classes: int | None = None,
        latent_dim: int = 512,
        base_channels: int = 512,
        max_channels: int = 512,
        minibatch_std_group: int = 4,
        images_per_phase: int = 800_000,
        images_per_fade_in: int = 800_000,
        reset_optimizers_on_growth: bool = True,
        loss: Loss = "wasserstein",
        n_critic: int = 1,
        gradient_penalty: float = 10.0,
        drift_penalty: float = 0.001,
        optimizers: dict[str, dict[str, Any]] | None = None,
        diffaugment: str | None = None,
        ada: dict[str, float] | None = None,
    ) -> None:
        super().__init__(image_shape=image_shape, num_classes=num_classes, latent_dim=latent_dim, loss=loss, n_critic=n_critic,
                         gradient_penalty=gradient_penalty, r1_gamma=0.0, r1_interval=1, class_conditional=False,
                         optimizers=optimizers, diffaugment=diffaugment, ada=ada)
        self.save_hyperparameters()
        _check_count("base_channels", base_channels, 1, "e.g. 512 (the paper) or 16")
        _check_count("max_channels", max_channels, 1, "e.g. 512 (the paper) or 32")
        _check_count("minibatch_std_group", minibatch_std_group, 1, "4 (the paper) or 1 (off)")
        _check_count("images_per_phase", images_per_phase, 0, "800000 (the paper) or a smaller count of images")
        _check_count("images_per_fade_in", images_per_fade_in, 0, "800000 (the paper) or a smaller count of images")
        if images_per_phase + images_per_fade_in == 0:
            raise GenResearchError("progan: images_per_phase and images_per_fade_in are both 0; set images_per_phase to e.g. 800000")
        check_number("progan", "drift_penalty", drift_penalty, low=0.0, hint="0.001 (the paper) or 0 (off)")
        self.max_level = num_levels(self.image_shape)
        self.images_per_phase, self.images_per_fade_in = images_per_phase, images_per_fade_in
        self.reset_optimizers_on_growth, self.drift_weight = reset_optimizers_on_growth, drift_penalty
        # The paper's optimizer where the YAML leaves a setting out (GANBase checked the mapping already).
        self.optimizer_specs = optimizer_specs(optimizers, self.NETWORKS, defaults={n: PROGAN_OPTIMIZER for n in self.NETWORKS})
        self.generator = ProGANGenerator(latent_dim, self.image_shape, base_channels, max_channels)
        self.discriminator = ProGANDiscriminator(self.image_shape, base_channels, max_channels, minibatch_std_group)
        level, alpha = growth_state(0, images_per_phase, images_per_fade_in, self.max_level)
        self.register_buffer("growth_level", torch.zeros((), dtype=torch.long))
        self.register_buffer("growth_alpha", torch.zeros((), dtype=torch.float32))  # float32: MPS has no float64
        self.register_buffer("growth_phase", torch.zeros((), dtype=torch.long))
        self.set_growth(level, alpha)

    # ---- growth ------------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        """The side G generates and D judges now."""
        return self.discriminator.side

    def apply_growth(self) -> None:
        """Set both networks to the checkpointed growth state (after a load: sampling and validation call it)."""
        self.generator.set_growth(int(self.growth_level), float(self.growth_alpha))
        self.discriminator.set_growth(int(self.growth_level), float(self.growth_alpha))

    def set_growth(self, level: int, alpha: float) -> None:
        """Put the model in growth state (``level``, ``alpha``): the buffers and both networks (exact values, whatever
        the buffers' precision). Training sets it from ``images_seen`` every batch; set it by hand to sample a phase."""
        self.generator.set_growth(level, alpha)
        self.discriminator.set_growth(level, alpha)
        self.growth_level.fill_(level)
        self.growth_alpha.fill_(alpha)
        self.growth_phase.fill_(growth_phase(level, alpha))

    def advance_growth(self) -> None:
        """The state for the coming batch, from the images seen before it; Adam restarts when the phase changes."""
        level, alpha = growth_state(int(self.images_seen), self.images_per_phase, self.images_per_fade_in, self.max_level)
        if growth_phase(level, alpha) != int(self.growth_phase) and self.reset_optimizers_on_growth and self._trainer is not None:
            for name in self.optimizer_specs:
                self.network_optimizer(name).optimizer.state.clear()
        self.set_growth(level, alpha)

    def at_resolution(self, images: Tensor) -> Tensor:
        """Full-size images as D sees them now: average-pooled to the current side and, during a fade-in, blended
        with their 2x coarser version by alpha (the reference's ``process_reals``), so reals match the fakes."""
        side, alpha = self.discriminator.side, self.discriminator.alpha
        if images.shape[-1] > side:
            images = F.avg_pool2d(images, images.shape[-1] // side)
        if self.discriminator.fading:
            coarse = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="nearest")
            images = torch.lerp(coarse, images, alpha)
        return images

    def to_full_resolution(self, images: Tensor) -> Tensor:
        """Generated images upsampled (nearest) to the data's side."""
        factor = self.image_shape[-1] // images.shape[-1]
        return F.interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images

    # ---- contract: Generates, LatentPrior ----------------------------------------------------------
    def decode(self, z: Tensor, truncation_psi: float = 1.0) -> Tensor:
        """G(z) in [-1, 1] at the data's full resolution (LatentPrior), truncated as :meth:`sample`."""
        self.apply_growth()
        return self.to_full_resolution(self.generator(z.to(self.device), truncation_psi=truncation_psi)).clamp(-1.0, 1.0)

    @torch.no_grad()
    def sample(self, num_samples: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               truncation_psi: float = 1.0) -> Tensor:
        """``num_samples`` images in [-1, 1] at the data's full resolution, z ~ N(0, I) drawn with ``generator``."""
        if labels is not None:
            raise GenResearchError("ProGAN samples without classes (it is unconditional): drop --class")
        self.apply_growth()
        images = self.generator(self.latents(num_samples, generator), truncation_psi=truncation_psi)
        return self.to_full_resolution(images).clamp(-1.0, 1.0)

    # ---- training ----------------------------------------------------------------------------------
    def training_reals(self, batch: dict[str, Tensor]) -> Tensor:
        return self.at_resolution(batch["image"])

    def training_iteration(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        self.advance_growth()  # before D and G run: the state of the images seen so far
        logged = super().training_iteration(batch, batch_idx)
        self.log_dict({"train/resolution": float(self.resolution), "train/fade_in_alpha": self.discriminator.alpha}, batch_size=len(batch["image"]))
        return logged

    def discriminator_step_loss(self, real: Tensor, fake: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """GANBase's D loss (WGAN-GP) plus the drift term ``drift_penalty * E[D(real)^2]``, logged as ``drift``.
        It costs one more D pass on the reals: GANBase keeps its logits to itself."""
        terms = super().discriminator_step_loss(real, fake, labels)
        if self.drift_weight:
            terms["drift"] = drift_term(self.critic(real, labels))
            terms["total_d"] = terms["total_d"] + self.drift_weight * terms["drift"]
        return terms

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        self.apply_growth()
        return self._eval_step({**batch, "image": self.at_resolution(batch["image"])}, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        self.apply_growth()
        return self._eval_step({**batch, "image": self.at_resolution(batch["image"])}, "test")


__all__ = ["PROGAN_OPTIMIZER", "ProGAN", "growth_phase", "growth_state"]
