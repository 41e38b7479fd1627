"""The registered GANs: ``gan`` (MLPs, Goodfellow et al. 2014), ``dcgan`` (Radford et al. 2016) and ``cgan``
(class-conditional DCGAN: concatenation, Mirza & Osindero 2014, or a projection discriminator with conditional
BatchNorm in G, Miyato & Koyama 2018). All the training is GANBase's (family.py); each builds its two networks."""

from __future__ import annotations

from typing import Any, Literal

from gen_research.models.gan.family import GANBase, Loss
from gen_research.models.gan.networks import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, init_dcgan_weights
from gen_research.registry import MODELS


@MODELS.register("gan", "GAN with MLP generator and discriminator (Goodfellow et al. 2014); non-saturating or minimax loss")
class GAN(GANBase):
    """The original GAN: MLP G and D. ``loss: minimax`` is the paper's formulation (its vanishing generator
    gradient is the reason for the non-saturating default)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        latent_dim: int = 100,
        generator_hidden: list[int] = (256, 512),
        discriminator_hidden: list[int] = (512, 256),
        loss: Loss = "non_saturating",
        n_critic: int = 1,
        gradient_penalty: float = 0.0,
        r1_gamma: float | Literal["auto"] = 0.0,
        r1_interval: int = 1,
        spectral_norm: bool = False,
        class_conditional: bool = False,
        optimizers: dict[str, dict[str, Any]] | None = None,
        diffaugment: str | None = None,
        ada: dict[str, float] | None = None,
    ) -> None:
        super().__init__(image_shape, num_classes, latent_dim, loss, n_critic, gradient_penalty, r1_gamma, r1_interval,
                         class_conditional, optimizers, diffaugment, ada)
        self.save_hyperparameters()
        self.hparams.generator_hidden, self.hparams.discriminator_hidden = list(generator_hidden), list(discriminator_hidden)
        labels = self.num_classes or 0
        self.generator = MLPGenerator(latent_dim, self.image_shape, list(generator_hidden), labels)
        self.discriminator = MLPDiscriminator(self.image_shape, list(discriminator_hidden), labels, spectral_norm=spectral_norm)


@MODELS.register("dcgan", "DCGAN (Radford et al. 2016): strided convs, BatchNorm, N(0, 0.02) init, Adam 2e-4 / 0.5; power-of-2 sizes")
class DCGAN(GANBase):
    """DCGAN's architecture rules (networks.py); images must be square with a power-of-2 side (resize 28x28 digits
    to 32 in the data module). ``conditioning`` only matters when ``class_conditional`` (see ``cgan``)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        latent_dim: int = 100,
        base_channels: int = 64,
        loss: Loss = "non_saturating",
        n_critic: int = 1,
        gradient_penalty: float = 0.0,
        r1_gamma: float | Literal["auto"] = 0.0,
        r1_interval: int = 1,
        spectral_norm: bool = False,
        class_conditional: bool = False,
        conditioning: Literal["concat", "projection"] = "concat",
        optimizers: dict[str, dict[str, Any]] | None = None,
        diffaugment: str | None = None,
        ada: dict[str, float] | None = None,
    ) -> None:
        super().__init__(image_shape, num_classes, latent_dim, loss, n_critic, gradient_penalty, r1_gamma, r1_interval,
                         class_conditional, optimizers, diffaugment, ada)
        self.save_hyperparameters()
        labels = self.num_classes or 0
        self.generator = DCGANGenerator(latent_dim, self.image_shape, base_channels, labels, conditioning)
        self.discriminator = DCGANDiscriminator(self.image_shape, base_channels, labels, conditioning, spectral_norm=spectral_norm)
        init_dcgan_weights(self)  # N(0, 0.02) (the DCGAN paper); drawn under the run's seed


@MODELS.register("cgan", "class-conditional DCGAN: label concatenation (Mirza & Osindero) or projection D + conditional BatchNorm (Miyato & Koyama)")
class CGAN(DCGAN):
    """A DCGAN that is class-conditional by default (the signature is repeated, not **kwargs: LightningCLI reads each
    class's own signature for YAML checks and --help); ``conditioning: projection`` with ``loss: hinge`` and
    ``spectral_norm: true`` is the SN-GAN/projection setup of Miyato & Koyama (2018)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        latent_dim: int = 100,
        base_channels: int = 64,
        loss: Loss = "non_saturating",
        n_critic: int = 1,
        gradient_penalty: float = 0.0,
        r1_gamma: float | Literal["auto"] = 0.0,
        r1_interval: int = 1,
        spectral_norm: bool = False,
        class_conditional: bool = True,
        conditioning: Literal["concat", "projection"] = "concat",
        optimizers: dict[str, dict[str, Any]] | None = None,
        diffaugment: str | None = None,
        ada: dict[str, float] | None = None,
    ) -> None:
        super().__init__(image_shape, num_classes, latent_dim, base_channels, loss, n_critic, gradient_penalty, r1_gamma,
                         r1_interval, spectral_norm, class_conditional, conditioning, optimizers, diffaugment, ada)


__all__ = ["CGAN", "DCGAN", "GAN"]
