"""``cyclegan`` (Zhu et al. 2017): unpaired translation between domains A and B with two generators, two PatchGANs
and cycle consistency.

Defaults are junyanz/pytorch-CycleGAN-and-pix2pix's ``cycle_gan_model.py``: ResNet generators (9 blocks above
128 px, 6 at 128 and below, ngf 64, instance norm, reflection padding, no dropout), 70x70 PatchGANs (n_layers 3,
ndf 64, instance norm), ``gan_mode lsgan``, lambda_A = lambda_B = 10 (cycle A -> B -> A and B -> A -> B),
identity loss 0.5 x lambda, image pools of 50 generated images for each discriminator, N(0, 0.02) initialisation,
one Adam(2e-4, 0.5/0.999) over both generators and one over both discriminators (the reference's itertools.chain),
constant then linear decay. Per batch, as the reference's ``optimize_parameters``: the generators step first, then
the discriminators on pooled fakes. The pools are buffers: checkpoints carry them (the reference's are Python lists,
empty again after a resume).

Domain ids (``translate``'s target, the data's ``domain``/``target_domain``): 0 = A (the data's sources), 1 = B.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from gen_research.errors import GenResearchError
from gen_research.models.common import check_number
from gen_research.models.translation.family import REFERENCE_OPTIMIZER, TranslationBase, match_channels, patchgan_depth
from gen_research.models.translation.image_pool import ImagePool
from gen_research.models.translation.losses import check_gan_mode, discriminator_loss, gan_loss
from gen_research.models.translation.networks import NLayerDiscriminator, ResnetGenerator, init_weights_normal, resnet_blocks_for
from gen_research.registry import MODELS
from gen_research.training.optimizers import optimizer_specs


@MODELS.register("cyclegan", "CycleGAN (Zhu et al. 2017): unpaired A <-> B, two ResNet G + two PatchGAN D, LSGAN, cycle x 10, image pools")
class CycleGAN(TranslationBase):
    """Unpaired translation A <-> B (``target`` 1 translates A images into B, 0 translates B images into A).

    Args:
        image_shape: (C, H, W) of domain B's images (the data's ``image``; linked from the data module).
        num_classes: unused (linked from the data module like for every model).
        source_channels: channels of domain A (the data's sources; None: as B's); checked against the data.
        ngf: the generators' base width.
        ndf: the discriminators' base width.
        n_blocks: ResNet blocks per generator (None: 9 above 128 px, 6 at 128 and below).
        n_layers_d: PatchGAN depth (3: 70x70 receptive field).
        receptive_field: instead of n_layers_d, the smallest PatchGAN covering this many pixels.
        norm: instance (the reference), batch or none.
        use_dropout: dropout 0.5 in the ResNet blocks (the reference's CycleGAN: off).
        gan_mode: lsgan (the reference) or vanilla.
        lambda_a: weight of the cycle loss A -> B -> A.
        lambda_b: weight of the cycle loss B -> A -> B.
        lambda_identity: identity loss weight as a fraction of lambda (G_AB(b) ~ b, G_BA(a) ~ a); needs both domains
            to have the same channels (the reference asserts this too).
        pool_size: generated images each discriminator's pool keeps (0: none).
        optimizers: settings of ``generators`` and ``discriminators`` (one optimizer each, as the reference).
    """

    NETWORKS = ("generators", "discriminators")  # the reference's order: G step, then D step
    BATCH_FIELDS = ("source", "image")
    target_domains = 2
    domain_names = ("A", "B")

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 256, 256),
        num_classes: int | None = None,
        source_channels: int | None = None,
        ngf: int = 64,
        ndf: int = 64,
        n_blocks: int | None = None,
        n_layers_d: int = 3,
        receptive_field: int | None = None,
        norm: Literal["instance", "batch", "none"] = "instance",
        use_dropout: bool = False,
        gan_mode: Literal["lsgan", "vanilla"] = "lsgan",
        lambda_a: float = 10.0,
        lambda_b: float = 10.0,
        lambda_identity: float = 0.5,
        pool_size: int = 50,
        optimizers: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        check_gan_mode(gan_mode)
        d_layers = patchgan_depth("cyclegan", ngf, ndf, n_layers_d, receptive_field)  # hparams keep what was given
        for name, value in (("lambda_a", lambda_a), ("lambda_b", lambda_b), ("lambda_identity", lambda_identity)):
            check_number("cyclegan", name, value, low=0.0, hint="10 (lambda_a, lambda_b) or 0.5 (lambda_identity)")
        check_number("cyclegan", "pool_size", pool_size, low=0, hint="50 (the reference) or 0 (no pool)")
        self.save_hyperparameters()
        channels_b, height, width = (int(s) for s in image_shape)
        channels_a = int(source_channels or channels_b)
        if lambda_identity and channels_a != channels_b:
            raise GenResearchError(f"cyclegan: the identity loss compares G_AB(b) with b, which needs both domains to have the same "
                                   f"channels (A {channels_a}, B {channels_b}); set model.init_args.lambda_identity: 0")
        self.image_shape, self.channels = (channels_b, height, width), {"A": channels_a, "B": channels_b}
        self.source_channels = max(channels_a, channels_b)  # translate() takes either domain: the wider reads both
        self.size_multiple = 4
        blocks = n_blocks if n_blocks is not None else resnet_blocks_for(min(height, width))
        self.gan_mode, self.lambda_a, self.lambda_b, self.lambda_identity = gan_mode, float(lambda_a), float(lambda_b), float(lambda_identity)
        self.generators = nn.ModuleDict({
            "ab": ResnetGenerator(channels_a, channels_b, ngf, norm, use_dropout, blocks),  # the reference's netG_A
            "ba": ResnetGenerator(channels_b, channels_a, ngf, norm, use_dropout, blocks),  # netG_B
        })
        self.discriminators = nn.ModuleDict({
            "b": NLayerDiscriminator(channels_b, ndf, d_layers, norm),  # netD_A: real B vs G_AB(a)
            "a": NLayerDiscriminator(channels_a, ndf, d_layers, norm),  # netD_B: real A vs G_BA(b)
        })
        for network in (self.generators, self.discriminators):
            network.apply(init_weights_normal)
        self.fake_b_pool = ImagePool(pool_size, (channels_b, height, width))
        self.fake_a_pool = ImagePool(pool_size, (channels_a, height, width))
        self.optimizer_specs = optimizer_specs(optimizers, self.NETWORKS, defaults={name: REFERENCE_OPTIMIZER for name in self.NETWORKS})

    def check_data(self, datamodule: Any, data_name: str) -> None:
        self.check_source_channels(datamodule, data_name, self.channels["A"])
        shape = getattr(datamodule, "source_shape", None)
        if shape is not None and tuple(int(s) for s in shape[1:]) != self.image_shape[1:]:
            raise GenResearchError(f"{data_name}: domain A's images are {shape[1]}x{shape[2]} and B's {self.image_shape[1]}x{self.image_shape[2]}; "
                                   "set data.init_args.resize and random_crop (or center_crop) so both domains share one size")

    # ---- contract: Translates ------------------------------------------------------------------------
    def _translate(self, images: Tensor, target: Tensor | None) -> Tensor:
        assert target is not None  # check_target refused None
        ids = target.long()
        wanted = {int(i) for i in ids.unique()}
        out_channels = self.channels["B" if wanted == {1} else "A"] if len(wanted) == 1 else max(self.channels.values())
        out: Tensor | None = None
        for domain, generator, source in ((1, "ab", "A"), (0, "ba", "B")):
            chosen = ids == domain
            if bool(chosen.any()):
                translated = match_channels(self.generators[generator](match_channels(images[chosen], self.channels[source])), out_channels)
                if out is None:  # the generators' dtype (bf16 under autocast)
                    out = translated.new_empty(len(images), *translated.shape[1:])
                out[chosen] = translated
        assert out is not None
        return out

    # ---- training ------------------------------------------------------------------------------------
    def generator_losses(self, real_a: Tensor, real_b: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The reference's ``backward_G`` terms (unweighted adversarial, weighted cycle/identity), fake B and fake A."""
        g_ab, g_ba = (lambda x: self.padded(self.generators["ab"], x)), (lambda x: self.padded(self.generators["ba"], x))
        fake_b, fake_a = g_ab(real_a), g_ba(real_b)
        losses = {
            "g_ab_gan": gan_loss(self.gan_mode, self.discriminators["b"](fake_b), True),
            "g_ba_gan": gan_loss(self.gan_mode, self.discriminators["a"](fake_a), True),
            "cycle_a": (g_ba(fake_b) - real_a).abs().mean() * self.lambda_a,
            "cycle_b": (g_ab(fake_a) - real_b).abs().mean() * self.lambda_b,
        }
        if self.lambda_identity:
            losses["identity_a"] = (g_ba(real_a) - real_a).abs().mean() * self.lambda_a * self.lambda_identity
            losses["identity_b"] = (g_ab(real_b) - real_b).abs().mean() * self.lambda_b * self.lambda_identity
        return losses, fake_b, fake_a

    def training_iteration(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        real_a, real_b = batch["source"], batch["image"]
        logged: dict[str, Tensor] = {}
        fakes: dict[str, Tensor] = {}

        def generators_loss() -> Tensor:
            losses, fakes["b"], fakes["a"] = self.generator_losses(real_a, real_b)
            logged.update({k: v.detach() for k, v in losses.items()})
            return sum(losses.values())  # type: ignore[return-value]

        logged["loss_g"] = self.step_network("generators", generators_loss)
        # The pools draw from the global RNG (checkpointed) and their contents are buffers: a resume replays them.
        pooled_b, pooled_a = self.fake_b_pool.query(fakes["b"]), self.fake_a_pool.query(fakes["a"])

        def discriminators_loss() -> Tensor:
            loss_b = discriminator_loss(self.gan_mode, self.discriminators["b"](real_b), self.discriminators["b"](pooled_b))
            loss_a = discriminator_loss(self.gan_mode, self.discriminators["a"](real_a), self.discriminators["a"](pooled_a))
            logged["loss_d_b"], logged["loss_d_a"] = loss_b.detach(), loss_a.detach()
            return loss_b + loss_a

        self.step_network("discriminators", discriminators_loss)
        self.log_losses("train", logged, len(real_a))
        return logged

    def held_out_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Cycle errors (unweighted L1) both ways on held-out images, in eval mode."""
        real_a, real_b = batch["source"], batch["image"]
        if "domain" in batch and bool((batch["domain"] == 1).all()):  # evaluation items B -> A: the roles swap
            real_a, real_b = real_b, real_a
        to_a, to_b = torch.zeros(len(real_a), dtype=torch.long), torch.ones(len(real_a), dtype=torch.long)  # one batch: one length
        cycle_a = self.translate(self.translate(real_a, to_b), to_a)
        cycle_b = self.translate(self.translate(real_b, to_a), to_b)
        return {"cycle_a": (cycle_a - real_a).abs().mean(), "cycle_b": (cycle_b - real_b).abs().mean()}


__all__ = ["CycleGAN"]
