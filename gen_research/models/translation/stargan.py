"""``stargan`` (Choi et al. 2018): one generator translating among several domains, conditioned on the target domain;
a discriminator that also classifies the domain.

Defaults are yunjey/stargan's ``main.py``/``solver.py``: G with conv_dim 64 and 6 residual blocks (target labels tiled
as input channels), D with conv_dim 64 and repeat_num 6 at 128 px (here from the image size: floor(log2 side) - 1),
WGAN-GP adversarial loss with lambda_gp 10, domain classification (lambda_cls 1: cross-entropy for one domain per
image as RaFD, BCE over attributes for CelebA's multi-label domains), reconstruction G(G(x, c_trg), c_org) ~ x
(lambda_rec 10), n_critic 5 (one G step every 5 D steps), Adam(1e-4, 0.5/0.999) for both, decayed linearly over the
last half (num_iters 200k, num_iters_decay 100k). Target domains in training are the batch's own domains shuffled
(the reference's ``label_org[randperm]``), from the global RNG the framework checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.models.common import check_number
from gen_research.models.gan.regularizers import gradient_penalty
from gen_research.models.translation.family import TranslationBase, match_channels
from gen_research.models.translation.losses import domain_loss
from gen_research.models.translation.networks import StarGANDiscriminator, StarGANGenerator, stargan_depth
from gen_research.registry import MODELS
from gen_research.training.optimizers import optimizer_specs

#: yunjey/stargan's --g_lr/--d_lr 0.0001, --beta1 0.5 --beta2 0.999, decay over num_iters_decay = half of num_iters.
STARGAN_OPTIMIZER = {"lr": 1e-4, "betas": [0.5, 0.999], "lr_schedule": "linear", "decay_fraction": 0.5}


@MODELS.register("stargan", "StarGAN (Choi et al. 2018): one G for many domains, D with a domain classifier, WGAN-GP, n_critic 5")
class StarGAN(TranslationBase):
    """Multi-domain translation: ``translate(images, target)`` with domain ids [B] (or 0/1 attribute vectors [B, K]
    for a multi-label model; ids are then one attribute on, the rest off).

    Args:
        image_shape: (C, H, W) of the images (linked from the data module).
        num_classes: unused (linked from the data module like for every model).
        domains: the domain names, in id order (the data's ``domain_names``; checked against the data).
        multi_label: domains are attributes that combine (CelebA's hair colour, gender, age), not one per image.
        conv_dim: base width of both networks.
        g_repeat_num: residual blocks in G (6).
        d_repeat_num: stride-2 convolutions in D (None: floor(log2 side) - 1, 6 at 128 px as the paper).
        lambda_cls: weight of the domain classification losses (1).
        lambda_rec: weight of the reconstruction loss (10).
        lambda_gp: weight of the gradient penalty (10).
        n_critic: D steps per G step (5).
        optimizers: settings of ``generator`` and ``discriminator``.
    """

    NETWORKS = ("discriminator", "generator")
    BATCH_FIELDS = ("image", "domain")

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 128, 128),
        num_classes: int | None = None,
        domains: list[str] | None = None,
        multi_label: bool = False,
        conv_dim: int = 64,
        g_repeat_num: int = 6,
        d_repeat_num: int | None = None,
        lambda_cls: float = 1.0,
        lambda_rec: float = 10.0,
        lambda_gp: float = 10.0,
        n_critic: int = 5,
        optimizers: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if not domains or len(domains) < 2 or len(set(domains)) != len(domains) or not all(isinstance(d, str) and d for d in domains):
            raise GenResearchError("stargan: model.init_args.domains must list at least 2 distinct domain names, in the data's order "
                                   "(python -m gen_research fit ... prints the data's names if they differ)")
        for name, value in (("conv_dim", conv_dim), ("g_repeat_num", g_repeat_num), ("n_critic", n_critic)):
            check_number("stargan", name, value, low=1, hint="a positive integer")
        for name, value in (("lambda_cls", lambda_cls), ("lambda_rec", lambda_rec), ("lambda_gp", lambda_gp)):
            check_number("stargan", name, value, low=0.0, hint="1 (lambda_cls) or 10 (lambda_rec, lambda_gp)")
        self.save_hyperparameters()
        self.hparams.domains = list(domains)
        channels, height, width = (int(s) for s in image_shape)
        self.image_shape = (channels, height, width)
        self.source_channels = channels
        self.size_multiple = 4
        self.domain_names, self.target_domains, self.multi_label = tuple(domains), len(domains), bool(multi_label)
        self.lambda_cls, self.lambda_rec, self.lambda_gp, self.n_critic = float(lambda_cls), float(lambda_rec), float(lambda_gp), int(n_critic)
        depth = d_repeat_num if d_repeat_num is not None else stargan_depth(min(height, width))
        self.generator = StarGANGenerator(channels, len(domains), conv_dim, g_repeat_num)
        self.discriminator = StarGANDiscriminator((height, width), channels, len(domains), conv_dim, depth)
        self.optimizer_specs = optimizer_specs(optimizers, self.NETWORKS, defaults={name: STARGAN_OPTIMIZER for name in self.NETWORKS})

    def check_data(self, datamodule: Any, data_name: str) -> None:
        if "source" in tuple(getattr(datamodule, "batch_fields", ())):  # its domain would be the source's, not the image's
            raise GenResearchError(f"stargan trains on images labelled with their own domain (multidomain_folder, digit_domains); "
                                   f"{data_name} pairs sources with images of another domain: use cyclegan for it")
        names = getattr(datamodule, "domain_names", None)
        if names is not None and tuple(names) != self.domain_names:
            raise GenResearchError(f"{data_name}'s domains are {list(names)} but model.init_args.domains={list(self.domain_names)}; "
                                   f"set model.init_args.domains: {list(names)}")
        multi = getattr(datamodule, "multi_label", None)
        if multi is not None and bool(multi) != self.multi_label:
            raise GenResearchError(f"{data_name} has {'multi-label' if multi else 'one domain per image'}; set model.init_args.multi_label: {str(bool(multi)).lower()}")

    # ---- contract: Translates ------------------------------------------------------------------------
    def conditioning(self, domains: Tensor) -> Tensor:
        """G's label input [B, K]: one-hot of ids, or the 0/1 attribute vectors as given."""
        if domains.is_floating_point():
            if domains.dim() != 2 or domains.shape[1] != self.target_domains:
                raise GenResearchError(f"attribute targets must be [B, {self.target_domains}] 0/1 vectors; got {tuple(domains.shape)}")
            return domains.float()
        return F.one_hot(domains.long(), self.target_domains).float()

    def _translate(self, images: Tensor, target: Tensor | None) -> Tensor:
        assert target is not None  # check_target refused None
        return self.generator(match_channels(images, self.source_channels), self.conditioning(target))

    # ---- training ------------------------------------------------------------------------------------
    def training_iteration(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        real, domain = batch["image"], batch["domain"]
        target = domain[torch.randperm(len(domain)).to(domain.device)]  # the reference: label_org[rand_idx]
        c_org, c_trg = self.conditioning(domain), self.conditioning(target)
        logged: dict[str, Tensor] = {}

        def discriminator_loss() -> Tensor:
            out_src, out_cls = self.discriminator(real)
            fake = self.padded(lambda x: self.generator(x, c_trg), real).detach()
            fake_src, _ = self.discriminator(fake)
            terms = {"d_real": -out_src.mean(), "d_fake": fake_src.mean(), "d_cls": domain_loss(out_cls, domain, self.multi_label),
                     "d_gp": gradient_penalty(lambda x: self.discriminator(x)[0], real, fake)}
            logged.update({k: v.detach() for k, v in terms.items()})
            return terms["d_real"] + terms["d_fake"] + self.lambda_cls * terms["d_cls"] + self.lambda_gp * terms["d_gp"]

        logged["loss_d"] = self.step_network("discriminator", discriminator_loss)
        if (self.global_step + 1) % self.n_critic == 0:  # the reference's (i + 1) % n_critic

            def generator_loss() -> Tensor:
                fake = self.padded(lambda x: self.generator(x, c_trg), real)
                fake_src, fake_cls = self.discriminator(fake)
                terms = {"g_fake": -fake_src.mean(), "g_cls": domain_loss(fake_cls, target, self.multi_label),
                         "g_rec": (real - self.padded(lambda x: self.generator(x, c_org), fake)).abs().mean()}
                logged.update({k: v.detach() for k, v in terms.items()})
                return terms["g_fake"] + self.lambda_rec * terms["g_rec"] + self.lambda_cls * terms["g_cls"]

            logged["loss_g"] = self.step_network("generator", generator_loss)
        self.log_losses("train", logged, len(real))
        return logged

    def held_out_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Reconstruction error and D's domain accuracy on translations into each item's ``target_domain``."""
        real, domain = batch["image"], batch["domain"]
        target = batch.get("target_domain")
        if target is None:  # data without evaluation targets: every other domain in turn
            target = (domain + 1) % self.target_domains if not domain.is_floating_point() else 1.0 - domain
        fake = self.translate(real, target)
        losses = {"rec": (self.translate(fake, domain) - real).abs().mean()}
        _, logits = self.discriminator(fake)
        if self.multi_label:
            losses["d_cls_acc"] = ((logits > 0).float() == target.float()).float().mean()
        else:
            losses["d_cls_acc"] = (logits.argmax(dim=1) == target).float().mean()
        return losses


__all__ = ["STARGAN_OPTIMIZER", "StarGAN"]
