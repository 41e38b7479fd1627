"""``pix2pix`` (Isola et al. 2017): paired translation with a U-Net generator and a conditional PatchGAN.

Defaults are junyanz/pytorch-CycleGAN-and-pix2pix's ``pix2pix_model.py`` and ``base_options``/``train_options``:
netG unet (its depth from the image size: 8 halvings at 256, ``unet_256``), ngf 64, batch norm, dropout 0.5 in the
inner decoder blocks (``no_dropout`` False: pix2pix's only noise), netD ``basic`` = 70x70 PatchGAN (n_layers 3, ndf 64)
on the concatenated (source, image) pair, ``gan_mode vanilla``, lambda_L1 100, D's objective halved, N(0, 0.02)
initialisation, Adam(2e-4, 0.5/0.999) for both networks, constant then linear decay (100 + 100 epochs).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.models.common import check_number
from gen_research.models.translation.family import REFERENCE_OPTIMIZER, TranslationBase, match_channels, patchgan_depth
from gen_research.models.translation.losses import check_gan_mode, discriminator_loss, gan_loss
from gen_research.models.translation.networks import NLayerDiscriminator, UnetGenerator, init_weights_normal, patch_receptive_field, unet_depth
from gen_research.registry import MODELS
from gen_research.training.optimizers import optimizer_specs


@MODELS.register("pix2pix", "Pix2Pix (Isola et al. 2017): paired translation, U-Net G + conditional 70x70 PatchGAN, L1 x 100")
class Pix2Pix(TranslationBase):
    """Paired image-to-image translation ``source -> target`` in the one direction of its data.

    Args:
        image_shape: (C, H, W) of the target images (linked from the data module).
        num_classes: unused (linked from the data module like for every model).
        source_channels: channels of the source images (None: as the targets); checked against the data.
        ngf: the generator's base width.
        ndf: the discriminator's base width.
        num_downs: U-Net halvings (None: from the image size, ceil(log2(min side)): 8 at 256; 28 is padded to 32).
        n_layers_d: PatchGAN depth (3: 70x70 receptive field; 2: 34x34; 1: 16x16).
        receptive_field: instead of n_layers_d, the smallest PatchGAN whose receptive field covers this many pixels.
        norm: batch (the reference) or instance or none, for both networks.
        use_dropout: dropout 0.5 in the U-Net's inner decoder blocks (also at train time only: translate is deterministic).
        gan_mode: vanilla (BCE, the reference) or lsgan.
        lambda_l1: weight of the L1 distance to the target (100).
        lambda_gan: weight of the adversarial term; 0 trains the generator on L1 alone (no discriminator steps), the
            baseline that shows what the adversarial term adds.
        optimizers: per network (``generator``, ``discriminator``) settings, e.g. ``{generator: {lr: 2.0e-4}}``.
    """

    NETWORKS = ("discriminator", "generator")  # the reference steps D, then G, on the same generated batch
    BATCH_FIELDS = ("source", "target")
    CHECKPOINT_MONITOR = ("val/l1", "min")

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 256, 256),
        num_classes: int | None = None,
        source_channels: int | None = None,
        ngf: int = 64,
        ndf: int = 64,
        num_downs: int | None = None,
        n_layers_d: int = 3,
        receptive_field: int | None = None,
        norm: Literal["batch", "instance", "none"] = "batch",
        use_dropout: bool = True,
        gan_mode: Literal["vanilla", "lsgan"] = "vanilla",
        lambda_l1: float = 100.0,
        lambda_gan: float = 1.0,
        optimizers: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        check_gan_mode(gan_mode)
        d_layers = patchgan_depth("pix2pix", ngf, ndf, n_layers_d, receptive_field)  # hparams keep what was given
        check_number("pix2pix", "lambda_l1", lambda_l1, low=0.0, hint="100 (the reference)")
        check_number("pix2pix", "lambda_gan", lambda_gan, low=0.0, hint="1, or 0 for the L1-only baseline")
        if not lambda_l1 and not lambda_gan:
            raise GenResearchError("pix2pix: lambda_l1 and lambda_gan are both 0, so nothing trains the generator; set model.init_args.lambda_l1: 100")
        self.save_hyperparameters()
        channels, height, width = (int(s) for s in image_shape)
        self.image_shape = (channels, height, width)
        self.source_channels = int(source_channels or channels)
        depth = num_downs if num_downs is not None else unet_depth(height, width)
        self.size_multiple = 2**depth
        self.receptive_field = patch_receptive_field(d_layers)
        self.lambda_l1, self.lambda_gan, self.gan_mode = float(lambda_l1), float(lambda_gan), gan_mode
        self.generator = UnetGenerator(self.source_channels, channels, depth, ngf, norm, use_dropout)
        self.discriminator = NLayerDiscriminator(self.source_channels + channels, ndf, d_layers, norm)
        for network in (self.generator, self.discriminator):
            network.apply(init_weights_normal)
        defaults = {name: REFERENCE_OPTIMIZER for name in self.NETWORKS}
        self.optimizer_specs = optimizer_specs(optimizers, self.NETWORKS, defaults=defaults)

    def check_data(self, datamodule: Any, data_name: str) -> None:
        self.check_source_channels(datamodule, data_name, self.source_channels)

    def _translate(self, images: Tensor, target: Tensor | None) -> Tensor:
        return self.generator(match_channels(images, self.source_channels))

    # ---- training ------------------------------------------------------------------------------------
    def critic(self, source: Tensor, image: Tensor) -> Tensor:
        """The conditional PatchGAN's logits map of (source, image) pairs (the reference's torch.cat((real_A, x), 1))."""
        return self.discriminator(torch.cat([source, image], dim=1))

    def training_iteration(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        source, target = batch["source"], batch["target"]
        fake = self.padded(self.generator, source)  # once, as the reference: D's step sees it detached, G's step through it
        logged: dict[str, Tensor] = {}
        if self.lambda_gan:
            logged["loss_d"] = self.step_network("discriminator", lambda: discriminator_loss(
                self.gan_mode, self.critic(source, target), self.critic(source, fake.detach())))

        def generator_loss() -> Tensor:
            l1 = (fake - target).abs().mean()
            logged["loss_g_l1"] = l1.detach()
            total = self.lambda_l1 * l1
            if self.lambda_gan:
                adversarial = gan_loss(self.gan_mode, self.critic(source, fake), True)
                logged["loss_g_gan"] = adversarial.detach()
                total = total + self.lambda_gan * adversarial
            return total

        logged["loss_g"] = self.step_network("generator", generator_loss)
        self.log_losses("train", logged, len(source))
        return logged

    def held_out_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """L1 of the (deterministic, eval-mode) translation to the paired target: the checkpoint monitor."""
        return {"l1": (self.translate(batch["source"]) - batch["target"]).abs().mean()}


__all__ = ["Pix2Pix"]
