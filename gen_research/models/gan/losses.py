"""The adversarial losses every GAN family picks from with ``model.init_args.loss``, as pure functions of logits.

Both functions take the discriminator's raw outputs (logits, any shape: one per image, or a PatchGAN map) and
return a scalar: the mean over all elements, so real and fake batches may differ in size. Each term is averaged
on its own (``mean(real term) + mean(fake term)``), as the reference implementations do.

=================  ==========================================  ==============================  =========================
loss               discriminator                                generator                       reference
=================  ==========================================  ==============================  =========================
``non_saturating`` softplus(-D(x)) + softplus(D(G(z)))          softplus(-D(G(z)))              Goodfellow et al. 2014,
                   (= -log sigmoid(D(x)) - log(1 - sigmoid      (= -log sigmoid(D(G(z))))        section 3; NVlabs
                   (D(G(z)))), binary cross-entropy)                                            stylegan2-ada loss.py
``minimax``        the same as ``non_saturating``               -softplus(D(G(z)))              Goodfellow et al. 2014,
                                                                (= log(1 - sigmoid(D(G(z))))),   eq. 1: saturates when D
                                                                the game's own G objective       is confident (below)
``hinge``          relu(1 - D(x)) + relu(1 + D(G(z)))           -D(G(z))                        Lim & Ye 2017; Miyato
                                                                                                et al. 2018 (SNGAN);
                                                                                                StudioGAN ``hinge``
``least_squares``  0.5 (D(x) - 1)^2 + 0.5 D(G(z))^2             0.5 (D(G(z)) - 1)^2             Mao et al. 2017 (LSGAN),
                                                                                                eq. 2, a=0, b=c=1;
                                                                                                CycleGAN's ``lsgan``
``wasserstein``    D(G(z)) - D(x) (means)                       -D(G(z))                        Arjovsky et al. 2017;
                                                                                                with the gradient
                                                                                                penalty of Gulrajani
                                                                                                et al. 2017 (WGAN-GP)
=================  ==========================================  ==============================  =========================

Why ``minimax`` is here at all: its generator gradient d/dl [-softplus(l)] = -sigmoid(l) goes to 0 as the fake
logit l goes to -inf, i.e. exactly when the discriminator confidently rejects the samples (early in training),
while ``non_saturating``'s -sigmoid(-l) goes to -1 there. ``gan`` offers it to show that vanishing gradient.
``wasserstein`` without a Lipschitz constraint (the caller adds :func:`~gen_research.models.gan.regularizers.
gradient_penalty` times lambda, 10 in WGAN-GP) is unbounded; the loss itself carries no penalty.
LSGAN's 0.5 factors follow the paper; CycleGAN's generator term uses the plain mean squared error (no 0.5),
which only rescales the generator's learning rate.
"""

from __future__ import annotations

import difflib

import torch.nn.functional as F
from torch import Tensor

from gen_research.errors import GenResearchError

#: The loss names ``model.init_args.loss`` accepts.
LOSSES: tuple[str, ...] = ("non_saturating", "minimax", "hinge", "least_squares", "wasserstein")


def check_loss(name: str) -> None:
    """A one-line error naming ``model.init_args.loss`` if ``name`` is not one of :data:`LOSSES`."""
    if name in LOSSES:
        return
    close = difflib.get_close_matches(str(name), list(LOSSES), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}? " if close else ""
    raise GenResearchError(
        f"model.init_args.loss={name!r} is unknown; {hint}set model.init_args.loss to one of {', '.join(LOSSES)}"
    )


def discriminator_loss(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's (critic's) loss to minimise, a scalar; see the module table for each ``kind``."""
    check_loss(kind)
    if kind in ("non_saturating", "minimax"):
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    if kind == "least_squares":
        return 0.5 * (real_logits - 1.0).square().mean() + 0.5 * fake_logits.square().mean()
    return fake_logits.mean() - real_logits.mean()  # wasserstein


def generator_loss(kind: str, fake_logits: Tensor) -> Tensor:
    """The generator's loss to minimise, a scalar; see the module table for each ``kind``."""
    check_loss(kind)
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()  # log(1 - sigmoid(l)) = -softplus(l)
    if kind == "least_squares":
        return 0.5 * (fake_logits - 1.0).square().mean()
    return -fake_logits.mean()  # hinge and wasserstein
