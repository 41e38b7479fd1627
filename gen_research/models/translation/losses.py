"""The image-to-image losses, as the reference implementations compute them (pure functions of tensors).

==========================  ===============================================  =========================================
function                    what                                             reference
==========================  ===============================================  =========================================
:func:`gan_loss`            the reference's ``GANLoss(gan_mode)(pred,        junyanz/pytorch-CycleGAN-and-pix2pix
                            target_is_real)``: ``vanilla`` BCE with logits    models/networks.py ``GANLoss``
                            against all-ones / all-zeros maps, ``lsgan`` the
                            mean squared error to them (no 0.5)
:func:`discriminator_loss`  (real term + fake term) * 0.5: "we divide the     models/pix2pix_model.py ``backward_D``,
                            objective by 2 while optimizing D, which slows    cycle_gan_model.py ``backward_D_basic``
                            down the rate at which D learns" (pix2pix paper)
:func:`domain_loss`         StarGAN's classification loss: cross-entropy     yunjey/stargan solver.py
                            (one domain per image), or BCE with logits        ``classification_loss``
                            summed over attributes / batch (multi-label)
==========================  ===============================================  =========================================

gen_research/models/gan/losses.py has the same adversarial losses in the GAN papers' form (its ``least_squares`` carries
the LSGAN paper's 0.5 on the generator term); this module keeps the translation references' arithmetic, because the
relative weight of the adversarial term against lambda_L1 = 100 or the cycle lambda = 10 depends on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gen_research.errors import GenResearchError

#: The reference's gan_mode names (``wgangp`` is StarGAN's own loss here: see stargan.py).
GAN_MODES = ("vanilla", "lsgan")


def check_gan_mode(mode: str, where: str = "model.init_args.gan_mode") -> None:
    if mode not in GAN_MODES:
        raise GenResearchError(f"{where}={mode!r} must be one of {', '.join(GAN_MODES)} (pix2pix: vanilla, CycleGAN: lsgan)")


def gan_loss(mode: str, logits: Tensor, target_is_real: bool) -> Tensor:
    """The mean over every element of a discriminator's output map of the loss against the label real/fake."""
    check_gan_mode(mode)
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.mse_loss(logits, target)


def discriminator_loss(mode: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """D's loss on a real and a generated batch, halved as in both references."""
    return 0.5 * (gan_loss(mode, real_logits, True) + gan_loss(mode, fake_logits, False))


def domain_loss(logits: Tensor, domains: Tensor, multi_label: bool) -> Tensor:
    """StarGAN's domain classification loss of logits [B, K] against domain ids [B] (cross-entropy) or 0/1
    attribute vectors [B, K] (binary cross-entropy summed over attributes, averaged over the batch)."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, domains.float(), reduction="sum") / logits.shape[0]
    return F.cross_entropy(logits, domains.long())


__all__ = ["GAN_MODES", "check_gan_mode", "discriminator_loss", "domain_loss", "gan_loss"]
